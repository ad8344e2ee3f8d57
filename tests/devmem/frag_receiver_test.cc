// The emulated frag source behaves like the kernel: page-sized (and split) frags in a region,
// linear bytes in host memory, unique per-socket tokens, unknown tokens skipped on release,
// out-of-order release, and a limited pool that stalls receive until tokens come back; at the
// kernel's 4 KiB pages and at the large RX pages bind-rx's rx-page-size gives (16 KiB in the
// kernel selftests, up to the 2 MiB config allows). The devmem receiver's token accounting and
// its control buffer run against a fake NIC and a fake SO_DEVMEM_DONTNEED.
#include "plugin/devmem/frag_receiver.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "plugin/core/unique_fd.h"
#include "plugin/devmem/uapi.h"

namespace devmem {
namespace {

// A devmem NIC this machine does not have: recvmsg() on the one fd a test arms answers with
// SCM_DEVMEM_DMABUF cmsgs for `frags`, as the kernel does for a flow on a bound queue. Every
// other fd goes to the real syscall. (Linked into this test binary only; it replaces libc's
// recvmsg for the plugin code linked in with it.)
struct FakeDevmemNic {
  static inline int fd = -1;
  static inline std::vector<uapi::DmabufCmsg> frags;
};

// The kernel's answers to SO_DEVMEM_DONTNEED: fail the next `failures` calls with ENOMEM,
// then free every token given.
struct FakeDontneed {
  static inline int failures = 0;
  static inline uint64_t freed = 0;
  static int Release(int /*fd*/, const uapi::DmabufToken* entries, size_t count) {
    if (failures > 0) {
      --failures;
      errno = ENOMEM;
      return -1;
    }
    int frags = 0;
    for (size_t i = 0; i < count; ++i) frags += static_cast<int>(entries[i].token_count);
    freed += static_cast<uint64_t>(frags);
    return frags;
  }
};

}  // namespace
}  // namespace devmem

extern "C" ssize_t recvmsg(int fd, msghdr* msg, int flags) {
  using devmem::FakeDevmemNic;
  if (fd != FakeDevmemNic::fd) return syscall(SYS_recvmsg, fd, msg, flags);
  auto* control = static_cast<unsigned char*>(msg->msg_control);
  size_t used = 0;
  ssize_t bytes = 0;
  for (const devmem::uapi::DmabufCmsg& frag : FakeDevmemNic::frags) {
    if (used + CMSG_SPACE(sizeof(frag)) > msg->msg_controllen) break;
    cmsghdr header{};
    header.cmsg_len = CMSG_LEN(sizeof(frag));
    header.cmsg_level = SOL_SOCKET;
    header.cmsg_type = devmem::uapi::kScmDevmemDmabuf;
    memcpy(control + used, &header, sizeof(header));
    memcpy(control + used + CMSG_LEN(0), &frag, sizeof(frag));
    used += CMSG_SPACE(sizeof(frag));
    bytes += frag.frag_size;
  }
  FakeDevmemNic::frags.clear();
  msg->msg_controllen = used;
  msg->msg_flags = 0;
  if (bytes == 0) {
    errno = EAGAIN;
    return -1;
  }
  return bytes;
}

namespace devmem {
namespace {

class EmulatedReceiverTest : public ::testing::TestWithParam<uint32_t> {
 protected:
  const uint32_t page_ = GetParam();

  void Init(uint64_t pages, EmulationMix mix) {
    const uint64_t region_bytes = pages * page_;
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    writer_.reset(fds[0]);
    reader_.reset(fds[1]);
    // The test writes whole messages before reading them in the same thread: make room.
    int bytes = 64 << 20;
    if (setsockopt(writer_.get(), SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof(bytes)) != 0) {
      setsockopt(writer_.get(), SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
    }
    Result<std::unique_ptr<HostRegion>> region = HostRegion::Create(region_bytes);
    ASSERT_TRUE(region.ok()) << region.status().message();
    region_ = std::move(region).value();
    pool_ = std::make_unique<PagePool>(region_bytes, page_);
    receiver_ = std::make_unique<EmulatedFragReceiver>(region_.get(), pool_.get(), mix, 42);
  }

  std::vector<char> Write(size_t n, uint64_t seed) {
    std::vector<char> bytes(n);
    std::mt19937_64 rng(seed);
    for (char& b : bytes) b = static_cast<char>(rng());
    size_t sent = 0;
    while (sent < n) {
      ssize_t k = send(writer_.get(), bytes.data() + sent, n - sent, MSG_DONTWAIT);
      if (k <= 0) {
        ADD_FAILURE() << "socket buffer too small for the test message: " << sent << " of " << n;
        break;
      }
      sent += static_cast<size_t>(k);
    }
    return bytes;
  }

  // Receives `n` bytes as frags; reassembles them into `out` through the region and the
  // host bytes the receiver copied; returns the tokens.
  std::vector<uint32_t> ReceiveAll(size_t n, bool oldest, std::vector<char>* out,
                                   std::vector<StreamSegment>* all = nullptr) {
    out->assign(n, 0);
    std::vector<uint32_t> tokens;
    size_t at = 0;
    while (at < n) {
      std::vector<StreamSegment> segments;
      uint64_t consumed = 0;
      Result<FragReceiver::State> state =
          receiver_->Receive(reader_.get(), n - at, oldest, out->data() + at, &segments, &consumed);
      EXPECT_TRUE(state.ok()) << state.status().message();
      if (!state.ok() || state.value() != FragReceiver::State::kProgress) break;
      uint64_t local = at;
      for (const StreamSegment& s : segments) {
        if (s.kind == StreamSegment::Kind::kRegion) {
          // A frag lies in one page, like a kernel frag in one niov.
          EXPECT_LE(s.source_offset % page_ + s.length, page_);
          memcpy(out->data() + local, region_->data() + s.source_offset, s.length);
          tokens.push_back(s.token);
        }
        local += s.length;
        if (all != nullptr) all->push_back(s);
      }
      EXPECT_EQ(local - at, consumed);
      at += consumed;
    }
    return tokens;
  }

  UniqueFd writer_, reader_;
  std::unique_ptr<HostRegion> region_;
  std::unique_ptr<PagePool> pool_;
  std::unique_ptr<EmulatedFragReceiver> receiver_;
};

TEST_P(EmulatedReceiverTest, FragsReassembleTheStreamAndTokensAreUnique) {
  Init(1024, EmulationMix{30, 50});
  std::vector<char> sent = Write(50 * page_ + 1234, 1);
  std::vector<char> got;
  std::vector<StreamSegment> segments;
  std::vector<uint32_t> tokens = ReceiveAll(sent.size(), true, &got, &segments);
  EXPECT_EQ(got, sent);
  EXPECT_EQ(std::set<uint32_t>(tokens.begin(), tokens.end()).size(), tokens.size());
  EXPECT_EQ(receiver_->outstanding(), tokens.size());
  bool saw_split = false, saw_linear = false;
  for (const StreamSegment& s : segments) {
    saw_split |= s.kind == StreamSegment::Kind::kRegion && s.source_offset % page_ == page_ / 2;
    saw_linear |= s.kind == StreamSegment::Kind::kHost;
  }
  EXPECT_TRUE(saw_split);
  EXPECT_TRUE(saw_linear);
  ASSERT_TRUE(receiver_->Release(reader_.get(), tokens.data(), tokens.size()).ok());
  EXPECT_EQ(receiver_->outstanding(), 0u);
  EXPECT_EQ(pool_->free_pages(), pool_->total_pages());
}

TEST_P(EmulatedReceiverTest, UnknownAndRepeatedTokensAreSkippedLikeTheKernel) {
  Init(256, EmulationMix{0, 0});
  Write(2 * page_, 2);
  std::vector<char> got;
  std::vector<uint32_t> tokens = ReceiveAll(2 * page_, true, &got);
  ASSERT_EQ(tokens.size(), 2u);
  std::vector<uint32_t> release = {tokens[0], 9999, tokens[0], tokens[1]};
  ASSERT_TRUE(receiver_->Release(reader_.get(), release.data(), release.size()).ok());
  EXPECT_EQ(receiver_->counters().release.tokens_returned, 4u);
  EXPECT_EQ(receiver_->counters().release.tokens_not_freed, 2u);
  EXPECT_EQ(pool_->free_pages(), pool_->total_pages());
}

TEST_P(EmulatedReceiverTest, OutOfOrderReleaseRestoresThePoolAndReusesTokens) {
  Init(256, EmulationMix{0, 0});
  Write(100 * page_, 3);
  std::vector<char> got;
  std::vector<uint32_t> tokens = ReceiveAll(100 * page_, true, &got);
  ASSERT_EQ(tokens.size(), 100u);
  std::shuffle(tokens.begin(), tokens.end(), std::mt19937(5));
  for (size_t i = 0; i < tokens.size(); i += 7) {
    size_t n = std::min<size_t>(7, tokens.size() - i);
    ASSERT_TRUE(receiver_->Release(reader_.get(), tokens.data() + i, n).ok());
  }
  EXPECT_EQ(pool_->free_pages(), pool_->total_pages());
  // Freed token ids are handed out again rather than growing without bound.
  std::vector<char> sent = Write(page_, 4);
  std::vector<uint32_t> again = ReceiveAll(page_, true, &got);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_LT(again[0], 100u);
  EXPECT_EQ(got, sent);
}

TEST_P(EmulatedReceiverTest, ExhaustedPoolStallsUntilTokensReturn) {
  Init(16, EmulationMix{0, 0});  // 16 pages; a newer message may use only 8
  std::vector<char> sent = Write(16 * page_, 6);
  std::vector<StreamSegment> segments;
  uint64_t consumed = 0;
  std::vector<char> dst(16 * page_);
  // A newer message takes pages until only the reserve is left (one receive takes at most
  // 256 KiB of pages, so with large pages that is several receives), then stalls.
  std::vector<uint32_t> held;
  uint64_t newer = 0;
  Result<FragReceiver::State> state = FragReceiver::State::kProgress;
  for (int receives = 0; receives < 16; ++receives) {
    segments.clear();
    state = receiver_->Receive(reader_.get(), dst.size() - newer, false, dst.data() + newer,
                               &segments, &consumed);
    ASSERT_TRUE(state.ok());
    if (state.value() != FragReceiver::State::kProgress) break;
    for (const auto& s : segments) held.push_back(s.token);
    newer += consumed;
  }
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state.value(), FragReceiver::State::kStalled);
  EXPECT_EQ(newer, 8u * page_);  // the reserve stays free for the oldest message
  EXPECT_EQ(consumed, 0u);
  EXPECT_EQ(receiver_->counters().stalls, 1u);
  segments.clear();
  // The oldest message may dip into the reserve.
  state = receiver_->Receive(reader_.get(), dst.size(), true, dst.data(), &segments, &consumed);
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state.value(), FragReceiver::State::kProgress);
  for (const auto& s : segments) held.push_back(s.token);
  ASSERT_TRUE(receiver_->Release(reader_.get(), held.data(), held.size()).ok());
  EXPECT_EQ(pool_->free_pages(), 16u);
}

TEST_P(EmulatedReceiverTest, PeerCloseIsAnError) {
  Init(256, EmulationMix{0, 0});
  writer_.reset();
  std::vector<StreamSegment> segments;
  uint64_t consumed = 0;
  char dst[64];
  Result<FragReceiver::State> state =
      receiver_->Receive(reader_.get(), sizeof(dst), true, dst, &segments, &consumed);
  ASSERT_FALSE(state.ok());
  EXPECT_EQ(state.status().kind(), ErrorKind::kRemote);
  EXPECT_EQ(pool_->free_pages(), pool_->total_pages());
}

// 4 KiB: the kernel's PAGE_SIZE niovs; 16 KiB: the rx-page-size of the kernel selftests
// (devmem_lib.py); 64 KiB: an arm64 64K-page kernel or a larger rx-page-size.
INSTANTIATE_TEST_SUITE_P(PageSizes, EmulatedReceiverTest, ::testing::Values(4096u, 16384u, 65536u),
                         [](const ::testing::TestParamInfo<uint32_t>& info) {
                           return std::to_string(info.param / 1024) + "KiB";
                         });

TEST(DevmemReceiverTest, UnboundSocketDeliversPlainBytesThroughTheDevmemPath) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  UniqueFd writer(fds[0]), reader(fds[1]);
  const char payload[] = "bytes of a flow that landed on an unbound queue";
  ASSERT_EQ(send(writer.get(), payload, sizeof(payload), 0), static_cast<ssize_t>(sizeof(payload)));
  DevmemFragReceiver receiver(RegionBinding{3, 1 << 20}, FragGeometry::ForNic(1500, 0, 4096));
  std::vector<StreamSegment> segments;
  uint64_t consumed = 0;
  char dst[sizeof(payload)] = {};
  Result<FragReceiver::State> state =
      receiver.Receive(reader.get(), sizeof(dst), true, dst, &segments, &consumed);
  ASSERT_TRUE(state.ok()) << state.status().message();
  EXPECT_EQ(consumed, sizeof(payload));
  EXPECT_EQ(memcmp(dst, payload, sizeof(payload)), 0);
  EXPECT_EQ(receiver.counters().host_bytes, sizeof(payload));
  EXPECT_EQ(receiver.outstanding(), 0u);
}

// N8. Linux net/ipv4/tcp.c tcp_recvmsg_locked copies readable (non-devmem) skbs even when
// MSG_SOCK_DEVMEM is set, so a flow that missed its steering rule reads like a devmem flow
// without frags; tools/testing/selftests/drivers/net/hw/ncdevmem.c treats a devmem receive
// without a devmem cmsg as a flow steering error. Here a socketpair is such an unsteered flow.
TEST(DevmemReceiverTest, PlainBytesOnADevmemConnectionAreCountedAndRefusedWhenRequired) {
  const char payload[] = "payload that should have landed in GPU memory";
  SteeringExpectation expected;
  expected.flow = "192.0.2.1:5000 <- 192.0.2.2:6000";
  expected.nic = "eth2";
  expected.queue = 15;
  for (bool required : {false, true}) {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    UniqueFd writer(fds[0]), reader(fds[1]);
    expected.required = required;
    DevmemFragReceiver receiver(RegionBinding{3, 1 << 20}, FragGeometry::ForNic(1500, 0, 4096),
                                TokenBatch::KernelRelease, expected);
    for (int read = 0; read < 2; ++read) {
      ASSERT_EQ(send(writer.get(), payload, sizeof(payload), 0),
                static_cast<ssize_t>(sizeof(payload)));
      std::vector<StreamSegment> segments;
      uint64_t consumed = 0;
      char dst[sizeof(payload)] = {};
      Result<FragReceiver::State> state =
          receiver.Receive(reader.get(), sizeof(dst), true, dst, &segments, &consumed);
      if (required) {
        ASSERT_FALSE(state.ok());
        EXPECT_NE(state.status().message().find("flow steering did not apply"), std::string::npos);
        EXPECT_NE(state.status().message().find(expected.flow), std::string::npos);
        EXPECT_NE(state.status().message().find("RX queue 15 of eth2"), std::string::npos);
        EXPECT_NE(state.status().message().find("NCCL_DEVMEM_REQUIRE=1"), std::string::npos);
        break;
      }
      ASSERT_TRUE(state.ok()) << state.status().message();
      EXPECT_EQ(consumed, sizeof(payload));
      EXPECT_EQ(memcmp(dst, payload, sizeof(payload)), 0);  // still delivered, through the host
      EXPECT_EQ(receiver.counters().plain_reads, static_cast<uint64_t>(read + 1));
    }
  }
}

TEST(DevmemReceiverTest, OutstandingReturnsToZeroAfterAFailedDontneed) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  UniqueFd writer(fds[0]), reader(fds[1]);
  FakeDevmemNic::fd = reader.get();
  for (uint32_t i = 0; i < 8; ++i)
    FakeDevmemNic::frags.push_back({i * 4096ull, 4096, 100 + i, 3, 0});
  DevmemFragReceiver receiver(RegionBinding{3, 1 << 20, 4096}, FragGeometry::ForNic(1500, 0, 4096),
                              FakeDontneed::Release);
  std::vector<StreamSegment> segments;
  uint64_t consumed = 0;
  Result<FragReceiver::State> state =
      receiver.Receive(reader.get(), 1 << 20, true, nullptr, &segments, &consumed);
  FakeDevmemNic::fd = -1;
  ASSERT_TRUE(state.ok()) << state.status().message();
  ASSERT_EQ(segments.size(), 8u);
  ASSERT_EQ(receiver.outstanding(), 8u);
  std::vector<uint32_t> tokens;
  for (const StreamSegment& s : segments) tokens.push_back(s.token);

  // The kernel refuses the first release: it freed nothing, so all 8 are still outstanding.
  FakeDontneed::failures = 1;
  FakeDontneed::freed = 0;
  Status failed = receiver.Release(reader.get(), tokens.data(), 5);
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.message().find("SO_DEVMEM_DONTNEED"), std::string::npos) << failed.message();
  EXPECT_EQ(receiver.outstanding(), 8u);
  EXPECT_EQ(receiver.counters().release.tokens_returned, 0u);

  // The next release carries the refused tokens with its own: nothing is left outstanding.
  ASSERT_TRUE(receiver.Release(reader.get(), tokens.data() + 5, 3).ok());
  EXPECT_EQ(FakeDontneed::freed, 8u);
  EXPECT_EQ(receiver.counters().release.tokens_returned, 8u);
  EXPECT_EQ(receiver.counters().release.tokens_not_freed, 0u);
  EXPECT_EQ(receiver.outstanding(), 0u);
}

// N11: tcp_recvmsg_dmabuf (net/ipv4/tcp.c, put_cmsg_notrunc since 6.14) ends a receive at the
// first cmsg that does not fit, so the control buffer decides how much one recvmsg takes. At
// MTU 1500 in gve's 2 KiB buffers (two per 4 KiB niov) 256 KiB is 181 frags of 1448 bytes;
// the old buffer of 72 cmsgs took 104256 bytes of it.
TEST(DevmemReceiverTest, OneReceiveTakes256KiBOfMtu1500Frags) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  UniqueFd writer(fds[0]), reader(fds[1]);
  FakeDevmemNic::fd = reader.get();
  constexpr uint32_t kFrags = 181;
  for (uint32_t i = 0; i < kFrags; ++i) {
    FakeDevmemNic::frags.push_back({i * 2048ull, 1448, i, 3, 0});
  }
  DevmemFragReceiver receiver(RegionBinding{3, 1 << 20, 4096},
                              FragGeometry::ForNic(1500, 2048, 4096), FakeDontneed::Release);
  std::vector<StreamSegment> segments;
  uint64_t consumed = 0;
  Result<FragReceiver::State> state =
      receiver.Receive(reader.get(), 256 << 10, true, nullptr, &segments, &consumed);
  FakeDevmemNic::fd = -1;
  ASSERT_TRUE(state.ok()) << state.status().message();
  EXPECT_EQ(segments.size(), kFrags);
  EXPECT_EQ(consumed, uint64_t{kFrags} * 1448);
}

// rx-page-size: with 16 KiB niovs (bind-rx NETDEV_A_DMABUF_RX_PAGE_SIZE = 16384, as the kernel
// selftests bind) a frag is up to 16 KiB and lies in one niov; the receiver takes them whole.
TEST(DevmemReceiverTest, SixteenKiBFragsOfA16KiBBindingAreTakenWhole) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  UniqueFd writer(fds[0]), reader(fds[1]);
  FakeDevmemNic::fd = reader.get();
  for (uint32_t i = 0; i < 16; ++i) {
    FakeDevmemNic::frags.push_back({i * 16384ull, 16384, 50 + i, 3, 0});
  }
  DevmemFragReceiver receiver(RegionBinding{3, 1 << 20, 16384},
                              FragGeometry::ForNic(9000, 0, 16384), FakeDontneed::Release);
  std::vector<StreamSegment> segments;
  uint64_t consumed = 0;
  Result<FragReceiver::State> state =
      receiver.Receive(reader.get(), 256 << 10, true, nullptr, &segments, &consumed);
  FakeDevmemNic::fd = -1;
  ASSERT_TRUE(state.ok()) << state.status().message();
  ASSERT_EQ(segments.size(), 16u);
  EXPECT_EQ(consumed, 256u << 10);
  for (uint32_t i = 0; i < 16; ++i) {
    EXPECT_EQ(segments[i].source_offset, i * 16384ull);
    EXPECT_EQ(segments[i].length, 16384u);
    EXPECT_EQ(segments[i].token, 50 + i);
  }
}

}  // namespace
}  // namespace devmem
