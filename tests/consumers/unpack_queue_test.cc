// NCCL's device-unpack metadata: the exact layout NCCL's kernels read, the slot protocol, and
// the limits (2048 entries per step, 32-bit region offsets), with the CPU reference standing in
// for NCCL's kernel.
#include "plugin/consumers/unpack_queue.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <numeric>
#include <random>
#include <vector>

namespace devmem::unpack {
namespace {

StreamSegment Region(uint64_t offset, uint32_t length) {
  return {StreamSegment::Kind::kRegion, offset, length, 0};
}

TEST(UnpackLayoutTest, MatchesNcclsStructures) {
  EXPECT_EQ(offsetof(LoadMeta, src_off), 0u);
  EXPECT_EQ(offsetof(LoadMeta, len), 4u);
  EXPECT_EQ(offsetof(LoadMeta, dst_off), 8u);
  EXPECT_EQ(offsetof(NetUnpackMeta, mem), 0u);
  EXPECT_EQ(offsetof(NetUnpackMeta, cnt), 16u * 2048u * 16u);
  EXPECT_EQ(offsetof(UnpackDeviceHandle, meta), 0u);
  EXPECT_EQ(offsetof(UnpackDeviceHandle, bounce_buf), 8u);
  EXPECT_EQ(offsetof(UnpackDeviceHandle, head), 16u);
  EXPECT_EQ(kDeviceVersion, 0x7);
}

TEST(UnpackQueueTest, PublishedStepsUnpackToTheReferenceScatter) {
  constexpr size_t kPages = 512;
  std::vector<char> region(kPages * 4096);
  std::mt19937_64 rng(7);
  for (char& c : region) c = static_cast<char>(rng());
  Result<std::unique_ptr<UnpackQueue>> queue =
      UnpackQueue::Create(reinterpret_cast<uintptr_t>(region.data()), 0, region.size());
  ASSERT_TRUE(queue.ok()) << queue.status().message();
  auto* handle = static_cast<UnpackDeviceHandle*>(queue.value()->device_handle());
  EXPECT_EQ(handle->bounce_buf, region.data());
  EXPECT_EQ(handle->meta, &queue.value()->meta());
  // NVIDIA/nccl src/device/prims_simple.h waitPeer(): head is incremented before the step is
  // unpacked, so the plugin starts it one below slot 0 (TCPX unpack1.cu does the same).
  EXPECT_EQ(handle->head, UINT64_MAX);
  EXPECT_EQ((handle->head + 1) % kQueueDepth, 0u);
  EXPECT_EQ(queue.value()->device_handle_bytes(), sizeof(UnpackDeviceHandle));

  // 40 steps through the 16 slots, each from two "sockets" with shuffled, odd-sized frags.
  std::vector<uint64_t> pages(kPages);
  std::iota(pages.begin(), pages.end(), 0);
  for (int step = 0; step < 40; ++step) {
    std::shuffle(pages.begin(), pages.end(), rng);
    OffsetTable a, b;
    std::vector<char> expected(300 * 1024, 0), got(300 * 1024, 0);
    uint64_t at = 0;
    for (int f = 0; f < 60; ++f) {
      const uint32_t len = 1 + static_cast<uint32_t>(rng() % 4096);
      const uint64_t src = pages[f] * 4096 + (4096 - len) * (rng() % 2);
      StreamSegment s = Region(src, len);
      (f % 2 == 0 ? a : b).Append(&s, 1, at);
      memcpy(expected.data() + at, region.data() + src, len);
      at += len;
    }
    Result<uint32_t> slot = queue.value()->Claim();
    ASSERT_TRUE(slot.ok()) << slot.status().message();
    EXPECT_EQ(slot.value(), static_cast<uint32_t>(step % kQueueDepth));
    const OffsetTable* tables[] = {&a, nullptr, &b};
    ASSERT_TRUE(queue.value()->Publish(slot.value(), tables, 3).ok());
    EXPECT_EQ(queue.value()->meta().cnt[slot.value()], a.entries().size() + b.entries().size());
    ASSERT_TRUE(ExecuteOnHost(queue.value()->meta(), slot.value(), region.data(), region.size(),
                              got.data(), got.size())
                    .ok());
    EXPECT_EQ(got, expected) << "step " << step;
    queue.value()->Consumed(slot.value());
  }
}

// Large RX pages (rx-page-size 16 KiB, 64 KiB niovs): an entry is a whole frag of up to a page,
// not 4 KiB. NCCL's unpack kernel copies any entry length (NVIDIA/nccl v2.28.9-1
// src/device/network/unpack/unpack.h: bulkLoad loops `data_s < len`, the tail by thread), so a
// full 4 MiB step of 16 KiB frags is 256 entries, far below the 2048 of one slot.
TEST(UnpackQueueTest, LargeFragsOfA4MiBStepUnpackWhole) {
  for (const uint32_t page : {16384u, 65536u}) {
    const size_t pages = (4u << 20) / page;
    std::vector<char> region(pages * 2 * page);
    std::mt19937_64 rng(page);
    for (char& c : region) c = static_cast<char>(rng());
    Result<std::unique_ptr<UnpackQueue>> queue =
        UnpackQueue::Create(reinterpret_cast<uintptr_t>(region.data()), 0, region.size());
    ASSERT_TRUE(queue.ok()) << queue.status().message();
    // Every other page, so that no two frags merge: one entry per frag.
    OffsetTable table;
    std::vector<char> expected(4u << 20), got(4u << 20);
    for (size_t f = 0; f < pages; ++f) {
      StreamSegment s = Region(f * 2 * page, page);
      table.Append(&s, 1, f * page);
      memcpy(expected.data() + f * page, region.data() + f * 2 * page, page);
    }
    Result<uint32_t> slot = queue.value()->Claim();
    ASSERT_TRUE(slot.ok());
    const OffsetTable* tables[] = {&table};
    ASSERT_TRUE(queue.value()->Publish(slot.value(), tables, 1).ok());
    EXPECT_EQ(queue.value()->meta().cnt[slot.value()], pages);
    EXPECT_EQ(queue.value()->meta().mem[slot.value()][1].len, page);
    ASSERT_TRUE(ExecuteOnHost(queue.value()->meta(), slot.value(), region.data(), region.size(),
                              got.data(), got.size())
                    .ok());
    EXPECT_EQ(got, expected) << page;
  }
}

TEST(UnpackQueueTest, ASlotIsNotReusedBeforeItsStepWasConsumed) {
  std::vector<char> region(1 << 20);
  auto queue = UnpackQueue::Create(reinterpret_cast<uintptr_t>(region.data()), 0, region.size());
  ASSERT_TRUE(queue.ok());
  for (uint32_t i = 0; i < kQueueDepth; ++i) ASSERT_TRUE(queue.value()->Claim().ok());
  Result<uint32_t> overflow = queue.value()->Claim();
  ASSERT_FALSE(overflow.ok());
  EXPECT_NE(overflow.status().message().find("not consumed"), std::string::npos);
  queue.value()->Consumed(0);
  Result<uint32_t> reused = queue.value()->Claim();
  ASSERT_TRUE(reused.ok());
  EXPECT_EQ(reused.value(), 0u);
}

TEST(UnpackQueueTest, MoreEntriesThanNcclReadsPerStepIsAnError) {
  std::vector<char> region(16 << 20);
  auto queue = UnpackQueue::Create(reinterpret_cast<uintptr_t>(region.data()), 0, region.size());
  ASSERT_TRUE(queue.ok());
  OffsetTable table;
  for (uint32_t i = 0; i <= kMaxMetasPerSlot; ++i) {
    StreamSegment s = Region(uint64_t{i} * 4096 + 1, 100);  // never contiguous: no merging
    table.Append(&s, 1, uint64_t{i} * 100);
  }
  ASSERT_EQ(table.entries().size(), kMaxMetasPerSlot + 1);
  Result<uint32_t> slot = queue.value()->Claim();
  const OffsetTable* tables[] = {&table};
  Status published = queue.value()->Publish(slot.value(), tables, 1);
  ASSERT_FALSE(published.ok());
  EXPECT_NE(published.message().find("2048"), std::string::npos) << published.message();
}

TEST(UnpackQueueTest, FragsOutsideTheRegionAreRefused) {
  std::vector<char> region(1 << 20);
  auto queue = UnpackQueue::Create(reinterpret_cast<uintptr_t>(region.data()), 0, region.size());
  ASSERT_TRUE(queue.ok());
  OffsetTable table;
  StreamSegment s = Region(region.size() - 10, 100);
  table.Append(&s, 1, 0);
  Result<uint32_t> slot = queue.value()->Claim();
  const OffsetTable* tables[] = {&table};
  EXPECT_FALSE(queue.value()->Publish(slot.value(), tables, 1).ok());
  // Publishing a slot nobody claimed is a bug, reported rather than written.
  EXPECT_FALSE(queue.value()->Publish(5, tables, 0).ok());
}

TEST(UnpackQueueTest, RegionsBeyondThirtyTwoBitOffsetsAreRefused) {
  Result<std::unique_ptr<UnpackQueue>> queue = UnpackQueue::Create(0x1000, 0, (4ull << 30) + 4096);
  ASSERT_FALSE(queue.ok());
  EXPECT_NE(queue.status().message().find("32-bit"), std::string::npos);
}

TEST(UnpackQueueTest, SrcOffIsRelativeToTheSharedArenaBase) {
  // NCCL keeps one bounce_buf per block (src/device/common.h) and the unpack setup of every
  // receive connection it loads overwrites it: src_off must be from the GPU's arena base, which
  // every comm hands NCCL, not from the comm's own region.
  std::vector<char> arena(1 << 20);
  std::mt19937_64 rng(11);
  for (char& c : arena) c = static_cast<char>(rng());
  constexpr uint64_t kRegionOffset = 256 << 10;
  auto queue =
      UnpackQueue::Create(reinterpret_cast<uintptr_t>(arena.data()), kRegionOffset, 128 << 10);
  ASSERT_TRUE(queue.ok()) << queue.status().message();
  auto* handle = static_cast<UnpackDeviceHandle*>(queue.value()->device_handle());
  EXPECT_EQ(handle->bounce_buf, arena.data());
  OffsetTable table;
  StreamSegment s = Region(4096, 3000);  // offset 4096 inside the comm's region
  table.Append(&s, 1, 0);
  Result<uint32_t> slot = queue.value()->Claim();
  const OffsetTable* tables[] = {&table};
  ASSERT_TRUE(queue.value()->Publish(slot.value(), tables, 1).ok());
  EXPECT_EQ(queue.value()->meta().mem[slot.value()][0].src_off, kRegionOffset + 4096);
  std::vector<char> dst(3000);
  ASSERT_TRUE(ExecuteOnHost(queue.value()->meta(), slot.value(), arena.data(), arena.size(),
                            dst.data(), dst.size())
                  .ok());
  EXPECT_TRUE(std::equal(dst.begin(), dst.end(), arena.begin() + kRegionOffset + 4096));
  // Beyond the comm's region is refused even where the arena goes on.
  StreamSegment outside = Region((128 << 10) - 100, 200);
  OffsetTable bad;
  bad.Append(&outside, 1, 0);
  const OffsetTable* bad_tables[] = {&bad};
  Result<uint32_t> next = queue.value()->Claim();
  EXPECT_FALSE(queue.value()->Publish(next.value(), bad_tables, 1).ok());
}

TEST(UnpackQueueTest, UnclaimGivesTheNextReceiveTheSameSlot) {
  std::vector<char> region(1 << 20);
  auto queue = UnpackQueue::Create(reinterpret_cast<uintptr_t>(region.data()), 0, region.size());
  ASSERT_TRUE(queue.ok());
  Result<uint32_t> first = queue.value()->Claim();
  ASSERT_EQ(first.value(), 0u);
  Result<uint32_t> second = queue.value()->Claim();
  ASSERT_EQ(second.value(), 1u);
  // The receive of slot 1 was never posted (e.g. its staging failed): NCCL's kernel will read
  // slot 1 for the next SIMPLE step, so that step must get it.
  ASSERT_TRUE(queue.value()->Unclaim(second.value()).ok());
  EXPECT_EQ(queue.value()->Claim().value(), 1u);
  // Only the latest claim can be taken back.
  EXPECT_FALSE(queue.value()->Unclaim(first.value()).ok());
}

TEST(UnpackQueueTest, TheHostReferenceRejectsCorruptMetadata) {
  NetUnpackMeta* meta = new NetUnpackMeta{};
  std::vector<char> region(4096), dst(4096);
  meta->cnt[3] = kMaxMetasPerSlot + 1;
  EXPECT_FALSE(ExecuteOnHost(*meta, 3, region.data(), region.size(), dst.data(), dst.size()).ok());
  meta->cnt[3] = 1;
  meta->mem[3][0] = LoadMeta{4000, 200, 0};
  EXPECT_FALSE(ExecuteOnHost(*meta, 3, region.data(), region.size(), dst.data(), dst.size()).ok());
  delete meta;
}

}  // namespace
}  // namespace devmem::unpack
