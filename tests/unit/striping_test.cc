#include "plugin/transport/striping.h"

#include <gtest/gtest.h>

#include <vector>

namespace devmem {
namespace {

// Every byte of the message is covered exactly once by the chunks the sockets carry.
void ExpectExactCover(uint64_t size, uint64_t limit, uint32_t sockets, uint32_t first) {
  StripePlan plan = PlanStripes(size, limit, sockets, first);
  std::vector<int> covered(size, 0);
  for (uint32_t s = 0; s < sockets; ++s) {
    for (uint64_t c = plan.FirstChunkOn(s); c < plan.chunk_count; c += sockets) {
      EXPECT_EQ((first + c) % sockets, s);
      uint64_t begin = c * plan.chunk_bytes;
      uint64_t end = std::min(size, begin + plan.chunk_bytes);
      for (uint64_t i = begin; i < end; ++i) ++covered[i];
    }
  }
  for (uint64_t i = 0; i < size; ++i) ASSERT_EQ(covered[i], 1) << "byte " << i;
  if (size > 0) {
    EXPECT_LE(plan.chunk_bytes, limit);
  }
}

TEST(StripingTest, CoversEveryByteOnce) {
  for (uint64_t size : {1ull, 4095ull, 4096ull, 65537ull, 1000003ull, 3ull << 20}) {
    for (uint32_t sockets : {1u, 2u, 3u, 8u}) {
      ExpectExactCover(size, 512 << 10, sockets, sockets - 1);
      ExpectExactCover(size, 4 << 10, sockets, 0);
    }
  }
}

TEST(StripingTest, MessagesUpToTheLimitUseOneChunkOnOneSocket) {
  StripePlan plan = PlanStripes(1000, 512 << 10, 4, 2);
  EXPECT_EQ(plan.chunk_count, 1u);
  EXPECT_EQ(plan.NextFirstSocket(), 3u);  // the next message starts on the next socket
}

TEST(StripingTest, LargeMessagesSpreadOverAllSocketsWithinTheLimit) {
  StripePlan plan = PlanStripes(64ull << 20, 512 << 10, 4, 0);
  EXPECT_EQ(plan.chunk_bytes, 512u << 10);
  EXPECT_EQ(plan.chunk_count, 128u);
  plan = PlanStripes(1 << 20, 512 << 10, 4, 0);  // 1 MiB: two 512 KiB chunks on two sockets
  EXPECT_EQ(plan.chunk_bytes, 512u << 10);
  EXPECT_EQ(plan.chunk_count, 2u);
  EXPECT_EQ(plan.NextFirstSocket(), 2u);
  plan = PlanStripes(512 << 10, 512 << 10, 4, 3);  // exactly the limit: one socket
  EXPECT_EQ(plan.chunk_count, 1u);
  EXPECT_EQ(plan.NextFirstSocket(), 0u);
}

TEST(StripingTest, ZeroBytesHaveNoChunks) {
  StripePlan plan = PlanStripes(0, 512 << 10, 4, 1);
  EXPECT_EQ(plan.chunk_count, 0u);
  EXPECT_EQ(plan.NextFirstSocket(), 1u);
}

}  // namespace
}  // namespace devmem
