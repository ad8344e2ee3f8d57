#include "plugin/devmem/offset_table.h"

#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <vector>

namespace devmem {
namespace {

StreamSegment Region(uint64_t offset, uint32_t length, uint32_t token = 0) {
  return {StreamSegment::Kind::kRegion, offset, length, token};
}
StreamSegment Host(uint64_t offset, uint32_t length) {
  return {StreamSegment::Kind::kHost, offset, length, 0};
}

TEST(OffsetTableTest, AdjacentFragsMergeAndHostBytesAdvanceTheDestination) {
  OffsetTable table;
  std::vector<StreamSegment> segments = {Region(0, 4096), Region(4096, 4096), Host(0, 10),
                                         Region(12288, 100), Region(20000, 50)};
  EXPECT_EQ(table.Append(segments.data(), segments.size(), 1000), 1000u + 8192 + 10 + 150);
  const auto& e = table.entries();
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[0].region_offset, 0u);
  EXPECT_EQ(e[0].length, 8192u);
  EXPECT_EQ(e[0].dst_offset, 1000u);
  EXPECT_EQ(e[1].dst_offset, 1000u + 8192 + 10);
  EXPECT_EQ(e[2].region_offset, 20000u);
  EXPECT_EQ(table.bytes(), 8192u + 150);
}

// Large RX pages: frags of whole 2 MiB niovs (the largest NCCL_DEVMEM_RX_PAGE_SIZE) merge like
// 4 KiB ones while region and destination both continue; a merged entry stays below 4 GiB.
TEST(OffsetTableTest, TwoMiBFragsMergeAndEntriesStayBelowFourGiB) {
  OffsetTable table;
  constexpr uint32_t kPage = 2u << 20;
  std::vector<StreamSegment> segments;
  for (uint64_t i = 0; i < 2050; ++i) segments.push_back(Region(i * kPage, kPage));
  table.Append(segments.data(), segments.size(), 0);
  ASSERT_EQ(table.entries().size(), 2u);
  EXPECT_EQ(table.entries()[0].length, 2047u * kPage);  // 2048 would overflow 32 bits
  EXPECT_EQ(table.entries()[1].region_offset, 2047ull * kPage);
  EXPECT_EQ(table.entries()[1].dst_offset, 2047ull * kPage);
  EXPECT_EQ(table.bytes(), 2050ull * kPage);
}

TEST(OffsetTableTest, HostSegmentsBecomeMergedHostRanges) {
  OffsetTable table;
  std::vector<StreamSegment> first = {Host(0, 10), Host(10, 6), Region(0, 4096), Host(0, 3)};
  std::vector<StreamSegment> second = {Host(0, 5), Region(8192, 100)};
  uint64_t at = table.Append(first.data(), first.size(), 0);
  table.Append(second.data(), second.size(), at);
  const auto& h = table.host_ranges();
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[0].dst_offset, 0u);
  EXPECT_EQ(h[0].length, 16u);
  EXPECT_EQ(h[1].dst_offset, 16u + 4096);
  EXPECT_EQ(h[1].length, 8u);  // the 3 bytes and the next piece's 5 are contiguous
  table.Clear();
  EXPECT_TRUE(table.host_ranges().empty());
}

TEST(OffsetTableTest, HostScatterMatchesAReferenceCopyForShuffledFrags) {
  // A region whose pages were handed out in random order, like a NIC's page pool.
  constexpr size_t kPages = 256;
  std::vector<char> region(kPages * 4096);
  std::iota(region.begin(), region.end(), 0);
  std::vector<uint64_t> pages(kPages);
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), std::mt19937(1));
  std::vector<StreamSegment> segments;
  std::vector<char> expected;
  for (uint64_t page : pages) {
    uint32_t len = 1 + static_cast<uint32_t>((page * 977) % 4096);
    segments.push_back(Region(page * 4096, len));
    expected.insert(expected.end(), region.begin() + page * 4096,
                    region.begin() + page * 4096 + len);
  }
  OffsetTable table;
  table.Append(segments.data(), segments.size(), 0);
  std::vector<char> dst(expected.size());
  ASSERT_TRUE(HostScatter(table, region.data(), region.size(), dst.data(), dst.size()).ok());
  EXPECT_EQ(dst, expected);
}

TEST(OffsetTableTest, HostScatterRefusesEntriesOutsideEitherBuffer) {
  std::vector<char> region(8192), dst(4096, 'z');
  OffsetTable table;
  StreamSegment s = Region(4096, 4096);
  table.Append(&s, 1, 100);  // ends 100 bytes past dst
  Status status = HostScatter(table, region.data(), region.size(), dst.data(), dst.size());
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(std::count(dst.begin(), dst.end(), 'z'), 4096);  // nothing written
  table.Clear();
  s = Region(8000, 400);
  table.Append(&s, 1, 0);
  EXPECT_FALSE(HostScatter(table, region.data(), region.size(), dst.data(), dst.size()).ok());
}

}  // namespace
}  // namespace devmem
