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

// OrderSockets with every socket allowed is PlanStripes' own rotation: chunk c on socket
// (first + c) % sockets, and the next message starts where the rotation left off.
TEST(StripingTest, OrderingEverySocketIsTheRoundRobinRotation) {
  for (uint32_t sockets : {1u, 3u, 4u}) {
    for (uint32_t first = 0; first < sockets; ++first) {
      for (uint64_t chunks : {0ull, 1ull, 2ull, 5ull, 9ull}) {
        uint32_t order[64];
        uint32_t next = 99;
        const uint32_t n = OrderSockets(0, sockets, first, chunks, order, &next);
        ASSERT_EQ(n, sockets);
        for (uint64_t c = 0; c < chunks; ++c) EXPECT_EQ(order[c % n], (first + c) % sockets);
        StripePlan plan;
        plan.socket_count = sockets;
        plan.first_socket = first;
        plan.chunk_count = chunks;
        EXPECT_EQ(next, chunks == 0 ? first : plan.NextFirstSocket());
      }
    }
  }
}

TEST(StripingTest, OrderingASocketSetStartsAtOrAfterTheFirstSocket) {
  uint32_t order[64];
  uint32_t next = 0;
  // Sockets 1 and 3 of 4, starting at 2: 3 first, then 1.
  ASSERT_EQ(OrderSockets(0xa, 4, 2, 3, order, &next), 2u);
  EXPECT_EQ(order[0], 3u);
  EXPECT_EQ(order[1], 1u);
  EXPECT_EQ(next, 0u);  // chunk 2 went to socket 3; the next message starts after it
  ASSERT_EQ(OrderSockets(0x4, 4, 0, 1, order, &next), 1u);
  EXPECT_EQ(order[0], 2u);
  EXPECT_EQ(next, 3u);
  // A set naming no socket below the count orders nothing.
  EXPECT_EQ(OrderSockets(0x10, 4, 0, 1, order, &next), 0u);
}

}  // namespace
}  // namespace devmem
