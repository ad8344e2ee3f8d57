// The listener's pure rules: the cap on unidentified sockets derived from RLIMIT_NOFILE, the hello
// prefix check that drops junk on its first bytes, and the drop log's budget and summaries
// against a fake clock.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "plugin/transport/listener_admission.h"
#include "plugin/transport/listener_drop_log.h"
#include "plugin/transport/wire.h"

namespace devmem {
namespace {

using namespace std::chrono_literals;

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(ListenerRulesTest, UnidentifiedCapIsAQuarterOfTheFdLimitWithin16To1024) {
  EXPECT_EQ(Admission::MaxUnidentifiedFor(1024), 256u);
  EXPECT_EQ(Admission::MaxUnidentifiedFor(4096), 1024u);
  EXPECT_EQ(Admission::MaxUnidentifiedFor(1048576), 1024u);
  EXPECT_EQ(Admission::MaxUnidentifiedFor(RLIM_INFINITY), 1024u);
  EXPECT_EQ(Admission::MaxUnidentifiedFor(40), 16u);
  EXPECT_EQ(Admission::MaxUnidentifiedFor(0), 16u);
}

TEST(ListenerRulesTest, HelloPrefixFailsOnItsFirstImpossibleByte) {
  wire::Hello hello;
  hello.data_sockets = 2;
  hello.chunk_bytes = 512 << 10;
  hello.nonce = 0x0123456789abcdefull;
  uint8_t bytes[wire::Hello::kSize];
  hello.Encode(bytes);
  for (size_t n = 0; n < sizeof(bytes); ++n) {
    EXPECT_TRUE(wire::Hello::CheckPrefix(bytes, n).ok()) << n << " bytes of a valid hello";
  }
  const uint8_t http[] = {'G', 'E', 'T', ' '};
  Status status = wire::Hello::CheckPrefix(http, 1);
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(Contains(status.message(), "first bytes 47 do not start a hello"))
      << status.message();

  uint8_t bad_version[wire::Hello::kSize];
  memcpy(bad_version, bytes, sizeof(bytes));
  bad_version[4] = 9;
  EXPECT_TRUE(wire::Hello::CheckPrefix(bad_version, 5).ok());  // the version is not complete
  EXPECT_FALSE(wire::Hello::CheckPrefix(bad_version, 6).ok());

  uint8_t bad_role[wire::Hello::kSize];
  memcpy(bad_role, bytes, sizeof(bytes));
  bad_role[wire::Hello::kRoleOffset] = 7;
  EXPECT_TRUE(wire::Hello::CheckPrefix(bad_role, wire::Hello::kRoleOffset).ok());
  EXPECT_FALSE(wire::Hello::CheckPrefix(bad_role, wire::Hello::kRoleOffset + 1).ok());
}

TEST(ListenerRulesTest, ThousandsAreSeparated) {
  EXPECT_EQ(WithThousands(0), "0");
  EXPECT_EQ(WithThousands(999), "999");
  EXPECT_EQ(WithThousands(2995), "2,995");
  EXPECT_EQ(WithThousands(1234567), "1,234,567");
}

class DropLogTest : public ::testing::Test {
 protected:
  DropLog Log() {
    return DropLog("127.0.0.1:4242", [this](const std::string& line) { lines_.push_back(line); });
  }
  static SocketAddress Peer(const char* host) {
    return SocketAddress::FromString(host, 50000).value();
  }
  std::vector<std::string> lines_;
  const Clock::time_point t0_ = Clock::now();
};

TEST_F(DropLogTest, FloodGivesAFewLinesThenOneSummaryPerInterval) {
  DropLog log = Log();
  for (int i = 0; i < 2995; ++i) {
    log.Dropped(DropReason::kClosedEarly, Peer("127.0.0.1"), "closed after 0 of 40 hello bytes",
                t0_ + i * 3ms);
  }
  ASSERT_EQ(lines_.size(), 5u);
  EXPECT_TRUE(Contains(lines_[0], "dropped a connection from 127.0.0.1:50000: closed after 0"));
  EXPECT_TRUE(Contains(lines_[4], "counted and summarised every 10 s"));
  log.Tick(t0_ + 9s);
  EXPECT_EQ(lines_.size(), 5u);
  log.Tick(t0_ + 10s);
  ASSERT_EQ(lines_.size(), 6u);
  EXPECT_TRUE(Contains(lines_[5],
                       "dropped 2,995 unidentified connections in the last 10.0 s from "
                       "127.0.0.1 (2,995): 2,995 closed before a full hello; 2,990 not logged"))
      << lines_[5];
  // The next interval starts with a fresh budget; with nothing unlogged there is no summary.
  log.Dropped(DropReason::kWrongNonce, Peer("127.0.0.1"), "stale", t0_ + 11s);
  log.Flush(t0_ + 12s);
  EXPECT_EQ(lines_.size(), 7u);
}

TEST_F(DropLogTest, SummaryNamesTheBusiestHostsFirst) {
  DropLog log = Log();
  auto drop = [&](const char* host, int count, DropReason reason) {
    for (int i = 0; i < count; ++i) log.Dropped(reason, Peer(host), "x", t0_);
  };
  drop("10.0.0.2", 50, DropReason::kInvalidHello);
  drop("10.0.0.1", 100, DropReason::kEvicted);
  drop("::1", 30, DropReason::kTimedOut);
  drop("10.0.0.3", 5, DropReason::kShed);
  drop("10.0.0.4", 1, DropReason::kShed);
  log.Flush(t0_ + 2500ms);
  ASSERT_EQ(lines_.size(), 6u);
  EXPECT_TRUE(Contains(lines_[5],
                       "dropped 186 unidentified connections in the last 2.5 s from 10.0.0.1 "
                       "(100), 10.0.0.2 (50), ::1 (30) and other hosts (6): 50 sent an invalid "
                       "hello, 30 sent no full hello in time, 100 evicted at the cap on "
                       "unidentified sockets, 6 closed to free file descriptors"))
      << lines_[5];
}

TEST_F(DropLogTest, ListenerProblemsShareTheBudgetAndAreSummarised) {
  DropLog log = Log();
  for (int i = 0; i < 100; ++i) log.Problem("accept: Too many open files; closed 8", t0_ + 1ms * i);
  EXPECT_EQ(lines_.size(), 5u);
  log.Flush(t0_ + 1s);
  ASSERT_EQ(lines_.size(), 6u);
  EXPECT_TRUE(Contains(lines_[5],
                       "95 more listener problems in the last 1.0 s, the last: accept: "
                       "Too many open files"))
      << lines_[5];
}

TEST_F(DropLogTest, DropsAProblemExplainedAreCountedWithoutALineEach) {
  DropLog log = Log();
  log.Problem("accept: Too many open files; closed the 8 stalest", t0_);
  for (int i = 0; i < 8; ++i) log.Counted(DropReason::kShed, Peer("127.0.0.1"), t0_);
  EXPECT_EQ(lines_.size(), 1u);
  log.Flush(t0_ + 40ms);
  ASSERT_EQ(lines_.size(), 2u);
  EXPECT_TRUE(Contains(lines_[1],
                       "dropped 8 unidentified connections in the last 40 ms from "
                       "127.0.0.1 (8): 8 closed to free file descriptors"))
      << lines_[1];
}

}  // namespace
}  // namespace devmem
