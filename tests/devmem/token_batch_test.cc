#include "plugin/devmem/token_batch.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <vector>

namespace devmem {
namespace {

// Records every release call; frees `percent` of what it is given.
struct FakeKernel {
  static inline std::vector<std::vector<uapi::DmabufToken>> calls;
  static inline int percent = 100;
  static inline bool fail = false;
  static inline int fail_call = -1;  // index of the one call that fails, -1: none
  static int Release(int /*fd*/, const uapi::DmabufToken* entries, size_t count) {
    if (fail || fail_call-- == 0) {
      errno = ENOMEM;
      return -1;
    }
    calls.emplace_back(entries, entries + count);
    int frags = 0;
    for (size_t i = 0; i < count; ++i) frags += static_cast<int>(entries[i].token_count);
    return frags * percent / 100;
  }
  static void Reset() {
    calls.clear();
    percent = 100;
    fail = false;
    fail_call = -1;
  }
};

TEST(TokenBatchTest, ConsecutiveTokensCoalesce) {
  FakeKernel::Reset();
  TokenBatch batch;
  for (uint32_t t : {1u, 2u, 3u, 7u, 8u, 20u}) batch.Add(t);
  EXPECT_EQ(batch.tokens(), 6u);
  TokenReleaseStats stats;
  ASSERT_TRUE(batch.Release(3, &stats, FakeKernel::Release).ok());
  ASSERT_EQ(FakeKernel::calls.size(), 1u);
  const auto& call = FakeKernel::calls[0];
  ASSERT_EQ(call.size(), 3u);
  EXPECT_EQ(call[0].token_start, 1u);
  EXPECT_EQ(call[0].token_count, 3u);
  EXPECT_EQ(call[1].token_start, 7u);
  EXPECT_EQ(call[2].token_count, 1u);
  EXPECT_TRUE(batch.empty());
  EXPECT_EQ(stats.tokens_returned, 6u);
}

TEST(TokenBatchTest, NeverExceeds128EntriesPerCall) {
  FakeKernel::Reset();
  TokenBatch batch;
  for (uint32_t t = 0; t < 1000; ++t) batch.Add(2 * t);  // no two consecutive
  TokenReleaseStats stats;
  ASSERT_TRUE(batch.Release(3, &stats, FakeKernel::Release).ok());
  size_t total = 0;
  for (const auto& call : FakeKernel::calls) {
    EXPECT_LE(call.size(), 128u);
    total += call.size();
  }
  EXPECT_EQ(total, 1000u);
  EXPECT_EQ(FakeKernel::calls.size(), 8u);  // ceil(1000 / 128)
  EXPECT_EQ(stats.calls, 8u);
}

TEST(TokenBatchTest, NeverExceeds1024FragsPerCallAndSplitsLongRuns) {
  FakeKernel::Reset();
  TokenBatch batch;
  for (uint32_t t = 0; t < 3000; ++t) batch.Add(t);  // one run of 3000
  TokenReleaseStats stats;
  ASSERT_TRUE(batch.Release(3, &stats, FakeKernel::Release).ok());
  ASSERT_EQ(FakeKernel::calls.size(), 3u);
  uint32_t expect_start = 0;
  for (const auto& call : FakeKernel::calls) {
    ASSERT_EQ(call.size(), 1u);
    EXPECT_EQ(call[0].token_start, expect_start);
    EXPECT_LE(call[0].token_count, 1024u);
    expect_start += call[0].token_count;
  }
  EXPECT_EQ(expect_start, 3000u);
}

TEST(TokenBatchTest, PartialReleaseIsCounted) {
  FakeKernel::Reset();
  FakeKernel::percent = 50;
  TokenBatch batch;
  for (uint32_t t = 0; t < 100; ++t) batch.Add(t);
  TokenReleaseStats stats;
  ASSERT_TRUE(batch.Release(3, &stats, FakeKernel::Release).ok());
  EXPECT_EQ(stats.tokens_returned, 100u);
  EXPECT_EQ(stats.tokens_not_freed, 50u);
}

TEST(TokenBatchTest, ErrorKeepsTokensPending) {
  FakeKernel::Reset();
  FakeKernel::fail = true;
  TokenBatch batch;
  for (uint32_t t = 0; t < 10; ++t) batch.Add(t * 3);
  TokenReleaseStats stats;
  Status status = batch.Release(3, &stats, FakeKernel::Release);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("Cannot allocate memory"), std::string::npos);
  EXPECT_EQ(batch.tokens(), 10u);
  FakeKernel::fail = false;
  ASSERT_TRUE(batch.Release(3, &stats, FakeKernel::Release).ok());
  EXPECT_TRUE(batch.empty());
}

TEST(TokenBatchTest, FailedCallKeepsItsTokensAndLaterOnesButNotEarlierOnes) {
  // The kernel frees nothing of a call it fails, and everything of the calls before it: the
  // batch keeps exactly the tokens still pinned, so the receiver can count what left it.
  FakeKernel::Reset();
  FakeKernel::fail_call = 1;
  TokenBatch batch;
  for (uint32_t t = 0; t < 300; ++t) batch.Add(2 * t);  // 3 calls: 128 + 128 + 44 entries
  TokenReleaseStats stats;
  ASSERT_FALSE(batch.Release(3, &stats, FakeKernel::Release).ok());
  EXPECT_EQ(stats.calls, 1u);
  EXPECT_EQ(stats.tokens_returned, 128u);
  EXPECT_EQ(batch.tokens(), 172u);
  ASSERT_TRUE(batch.Release(3, &stats, FakeKernel::Release).ok());
  EXPECT_TRUE(batch.empty());
  EXPECT_EQ(stats.tokens_returned, 300u);
  ASSERT_EQ(FakeKernel::calls.size(), 3u);
  EXPECT_EQ(FakeKernel::calls[1].front().token_start, 256u);  // the refused call, retried
}

}  // namespace
}  // namespace devmem
