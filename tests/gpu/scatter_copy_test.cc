// The scatter kernel's copy (gpu/scatter_copy.h) on the CPU, lane by lane as a warp runs it:
// every (src % 16, dst % 16) pair, lengths from 1 B to a few MiB, random op tables through the
// kernel's own op loop, all byte-exact against memcpy, with guard bytes around every
// destination that must come back untouched. Built by the host compiler: runs without nvcc or
// a GPU. Lanes run one after another; they never read what another lane writes (sources and
// destinations are disjoint), so any order of lanes gives what the warp gives, and the test
// that every byte has exactly one writing lane shows the warp's lanes never race.
#include "gpu/scatter_copy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace devmem::gpu {
namespace {

constexpr uint32_t kWarp = 32;
constexpr char kGuard = '\x5a';
// Guard bytes on each side of a destination; a multiple of 16 so offsets keep their alignment.
constexpr size_t kGuardBytes = 64;

// Bytes placed at known offsets from a 64-byte boundary.
class AlignedBuffer {
 public:
  explicit AlignedBuffer(size_t bytes, char fill = 0) : storage_(bytes + 64, fill) {}
  char* base() {
    const uintptr_t raw = reinterpret_cast<uintptr_t>(storage_.data());
    return storage_.data() + (64 - raw % 64) % 64;
  }

 private:
  std::vector<char> storage_;
};

// Random source bytes, none of them 0 or the guard value: a stray write always shows.
constexpr size_t kPoolBytes = (4u << 20) + 64;
const char* SourcePool(size_t bytes) {
  static AlignedBuffer pool(kPoolBytes);
  static const bool filled = [] {
    std::mt19937_64 rng(0x5ca77e5);
    for (size_t i = 0; i < kPoolBytes; ++i) {
      char c = static_cast<char>(rng());
      if (c == 0 || c == kGuard) c = static_cast<char>(c + 1);
      pool.base()[i] = c;
    }
    return true;
  }();
  EXPECT_TRUE(filled);
  EXPECT_LE(bytes, kPoolBytes);
  return pool.base();
}

uint32_t WidestCongruentWidth(uint32_t src_mis, uint32_t dst_mis) {
  for (uint32_t width : {16u, 8u, 4u, 2u}) {
    if (src_mis % width == dst_mis % width) return width;
  }
  return 1;
}

// One op of `length` bytes from src_mis to dst_mis (mod 16), all `lanes` lanes, against memcpy.
void CheckCopy(uint32_t src_mis, uint32_t dst_mis, uint32_t length, uint32_t lanes) {
  SCOPED_TRACE(::testing::Message() << "src%16=" << src_mis << " dst%16=" << dst_mis
                                    << " length=" << length << " lanes=" << lanes);
  const char* src = SourcePool(length + 16) + src_mis;
  const size_t window = kGuardBytes + 16 + length + kGuardBytes;
  AlignedBuffer actual(window, kGuard);
  std::vector<char> expected(actual.base(), actual.base() + window);
  const size_t at = kGuardBytes + dst_mis;
  std::memcpy(expected.data() + at, src, length);
  for (uint32_t lane = 0; lane < lanes; ++lane) {
    CopyBytesLane(src, actual.base() + at, length, lane, lanes);
  }
  const auto mismatch = std::mismatch(expected.begin(), expected.end(), actual.base());
  if (mismatch.first != expected.end()) {
    const ptrdiff_t offset = mismatch.first - expected.begin() - static_cast<ptrdiff_t>(at);
    ADD_FAILURE() << "first wrong byte at destination offset " << offset
                  << (offset < 0 || offset >= static_cast<ptrdiff_t>(length)
                          ? " (a guard byte: written outside the destination)"
                          : "");
  }
}

TEST(ScatterCopyTest, WidthIsTheWidestBothPointersAlignToAndNeverNarrowerThanNccls) {
  for (uint32_t s = 0; s < 16; ++s) {
    for (uint32_t d = 0; d < 16; ++d) {
      const uint32_t width = CommonCopyWidth(4096 * 7 + s, 64 * 3 + d);
      EXPECT_EQ(width, WidestCongruentWidth(s, d)) << s << " " << d;
      // NCCL's unpack: the lowest set bit of (src | dst) % 16, 16 when none.
      const uint32_t either = (s | d) % 16;
      const uint32_t nccl = either == 0 ? 16 : (either & (0u - either));
      EXPECT_GE(width, nccl) << s << " " << d;
    }
  }
  EXPECT_EQ(CommonCopyWidth(0, 1448), 8u);  // a page-aligned frag to an MSS-multiple offset
  EXPECT_EQ(CommonCopyWidth(3, 19), 16u);   // a shared misalignment: 13 head bytes, then 16
  EXPECT_EQ(CommonCopyWidth(4, 12), 8u);
  EXPECT_EQ(CommonCopyWidth(2, 0), 2u);
  EXPECT_EQ(CommonCopyWidth(1, 0), 1u);
}

TEST(ScatterCopyTest, EveryAlignmentPairAndLengthMatchesMemcpy) {
  std::vector<uint32_t> lengths;
  for (uint32_t n = 1; n <= 48; ++n) lengths.push_back(n);
  for (uint32_t n : {63u,  64u,   65u,   127u,  128u,  129u,  255u,  256u,   257u,   511u,
                     513u, 1447u, 1448u, 1449u, 4095u, 4096u, 4097u, 65535u, 65536u, 65537u}) {
    lengths.push_back(n);
  }
  for (uint32_t s = 0; s < 16; ++s) {
    for (uint32_t d = 0; d < 16; ++d) {
      for (uint32_t length : lengths) CheckCopy(s, d, length, kWarp);
      if (HasFailure()) return;
    }
  }
}

TEST(ScatterCopyTest, MebibyteLengthsAtEverySourceAndDestinationAlignment) {
  for (uint32_t i = 0; i < 16; ++i) {
    CheckCopy(i, i, (1u << 20) + 3, kWarp);           // shared misalignment: 16-byte words
    CheckCopy(i, (i * 5 + 3) % 16, 3u << 20, kWarp);  // every d once, mixed widths
    CheckCopy((i * 7 + 8) % 16, i, (3u << 20) + 11, kWarp);
    if (HasFailure()) return;
  }
}

TEST(ScatterCopyTest, AnyNumberOfLanesCoversTheSameBytes) {
  for (uint32_t lanes : {1u, 2u, 3u, 7u, 16u, 31u, 33u, 64u}) {
    for (uint32_t s = 0; s < 16; ++s) {
      for (uint32_t d = 0; d < 16; ++d) {
        for (uint32_t length : {1u, 15u, 17u, 100u, 1000u, 4097u}) CheckCopy(s, d, length, lanes);
      }
    }
    if (HasFailure()) return;
  }
}

TEST(ScatterCopyTest, EveryByteIsWrittenByExactlyOneLane) {
  std::vector<uint32_t> lengths;
  for (uint32_t n = 1; n <= 40; ++n) lengths.push_back(n);
  for (uint32_t n : {100u, 1000u, 4097u}) lengths.push_back(n);
  for (uint32_t s = 0; s < 16; ++s) {
    for (uint32_t d = 0; d < 16; ++d) {
      for (uint32_t length : lengths) {
        const char* src = SourcePool(length + 16) + s;
        const size_t window = kGuardBytes + 16 + length + kGuardBytes;
        const size_t at = kGuardBytes + d;
        AlignedBuffer dst(window);
        std::vector<int> writers(window, 0);
        for (uint32_t lane = 0; lane < kWarp; ++lane) {
          // Sources hold no zero byte, so every byte this lane wrote is nonzero.
          std::fill_n(dst.base(), window, 0);
          CopyBytesLane(src, dst.base() + at, length, lane, kWarp);
          for (size_t i = 0; i < window; ++i) writers[i] += dst.base()[i] != 0;
        }
        for (size_t i = 0; i < window; ++i) {
          const bool inside = i >= at && i < at + length;
          ASSERT_EQ(writers[i], inside ? 1 : 0)
              << "byte " << static_cast<ptrdiff_t>(i - at) << " src%16=" << s << " dst%16=" << d
              << " length=" << length;
        }
      }
    }
  }
}

// Random tables through the kernel's op loop (ScatterOpsLane) on an emulated grid of 5 warps:
// ops cycle through all 256 alignment pairs, lengths log-uniform from 1 B to 3 MiB, each
// destination between guard gaps.
TEST(ScatterCopyTest, RandomTablesThroughTheKernelLoopMatchMemcpy) {
  constexpr size_t kRegionBytes = 4u << 20;
  constexpr uint32_t kWarps = 5;
  const char* region = SourcePool(kRegionBytes);
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    std::mt19937_64 rng(seed);
    std::vector<ScatterOp> ops;
    uint64_t cursor = kGuardBytes;
    for (uint32_t k = 0; k < 256; ++k) {
      const uint32_t src_mis = (k / 16) % 16;
      const uint32_t dst_mis = k % 16;
      // Log-uniform over [1, 3 MiB]: most ops small like frags, some huge.
      const double scale = std::uniform_real_distribution<double>(0.0, 21.6)(rng);
      const uint32_t length = std::max<uint32_t>(
          1, std::min<uint32_t>(3u << 20, static_cast<uint32_t>(std::exp2(scale))));
      const uint64_t src = (rng() % (kRegionBytes - length - 16)) / 16 * 16 + src_mis;
      const uint64_t dst = (cursor + 15) / 16 * 16 + dst_mis;
      ops.push_back({src, dst, length, 0});
      cursor = dst + length + 1 + rng() % kGuardBytes;  // a guard gap before the next op
    }
    const size_t window = cursor + kGuardBytes;
    AlignedBuffer actual(window, kGuard);
    std::vector<char> expected(actual.base(), actual.base() + window);
    for (const ScatterOp& op : ops) {
      std::memcpy(expected.data() + op.dst_offset, region + op.src_offset, op.length);
    }
    for (uint32_t warp = 0; warp < kWarps; ++warp) {
      for (uint32_t lane = 0; lane < kWarp; ++lane) {
        ScatterOpsLane(ops.data(), static_cast<uint32_t>(ops.size()), region, actual.base(), warp,
                       kWarps, lane, kWarp);
      }
    }
    const auto mismatch = std::mismatch(expected.begin(), expected.end(), actual.base());
    ASSERT_TRUE(mismatch.first == expected.end())
        << "seed " << seed << ": first wrong byte at " << (mismatch.first - expected.begin())
        << " of " << window << " (" << ops.size() << " ops)";
  }
}

}  // namespace
}  // namespace devmem::gpu
