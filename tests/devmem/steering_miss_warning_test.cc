// N8: plain data on a devmem connection (flow steering did not apply) is one WARN per comm, not
// one per data socket, and at most a few comms' worth per process; every plain read is still
// counted. Real DevmemFragReceivers read through their recvmsg seam (DevmemFragReceiver::
// ReceiveFn) from a flow that missed its rule, as the kernel answers it:
//   - Linux net/ipv4/tcp.c tcp_recvmsg_locked copies readable (non-devmem) skbs into the iov
//     even when MSG_SOCK_DEVMEM is set, and puts a devmem cmsg only for unreadable frags
//     (tcp_recvmsg_dmabuf), so the read carries bytes and no cmsg: net/socket.c ____sys_recvmsg
//     writes back msg_controllen as the control bytes used, 0;
//   - tools/testing/selftests/drivers/net/hw/ncdevmem.c do_server (torvalds/linux 243d47a5)
//     calls a devmem receive without any devmem cmsg a "flow steering error".
#include "plugin/devmem/steering_miss_warning.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "plugin/core/log.h"
#include "plugin/devmem/frag_receiver.h"
#include "tests/common/captured_log.h"

namespace devmem {
namespace {

constexpr char kPayload[] = "payload of a flow that reached an unbound RX queue";
// Every WARN of a steering miss starts with the receiver's description of the read.
constexpr char kMiss[] = "flow steering did not apply";
constexpr char kOnlyCounted[] = "nccl_devmem_steering_misses_total";

ssize_t UnsteeredReceive(int /*fd*/, msghdr* msg, int /*flags*/) {
  const size_t n = std::min(sizeof(kPayload), msg->msg_iov[0].iov_len);
  memcpy(msg->msg_iov[0].iov_base, kPayload, n);
  msg->msg_controllen = 0;  // no cmsg
  msg->msg_flags = 0;
  return static_cast<ssize_t>(n);
}

// The flow of data socket `socket` of comm `comm`, as a receiver names it.
std::string Flow(int comm, int socket) {
  std::string flow = "192.0.2.1:";
  flow.append(std::to_string(5000 + comm * 10 + socket));
  flow.append(" <- 192.0.2.2:6000");
  return flow;
}

// One comm's receive path as the RX setup builds it: a receiver per data socket, all sharing
// the comm's SteeringMissWarning.
struct CommReceivers {
  CommReceivers(int id, int data_sockets, SteeringMissWarning::ProcessLimit* limit,
                bool required = false)
      : warning(std::make_shared<SteeringMissWarning>(data_sockets, limit)) {
    for (int s = 0; s < data_sockets; ++s) {
      SteeringExpectation expected;
      expected.flow = Flow(id, s);
      expected.nic = "eth2";
      expected.queue = 14 + static_cast<uint32_t>(s);
      expected.required = required;
      expected.warning = warning;
      receivers.push_back(std::make_unique<DevmemFragReceiver>(
          RegionBinding{3, 1 << 20, 4096}, FragGeometry::ForNic(1500, 0, 4096),
          TokenBatch::KernelRelease, std::move(expected), UnsteeredReceive));
    }
  }

  // One read on data socket `s`: the payload arrives whole, through host memory.
  Result<FragReceiver::State> Read(int s) {
    std::vector<StreamSegment> segments;
    uint64_t consumed = 0;
    char dst[sizeof(kPayload)] = {};
    Result<FragReceiver::State> state =
        receivers[s]->Receive(100 + s, sizeof(dst), true, dst, &segments, &consumed);
    if (state.ok()) {
      EXPECT_EQ(consumed, sizeof(kPayload));
      EXPECT_EQ(memcmp(dst, kPayload, sizeof(kPayload)), 0);
    }
    return state;
  }

  uint64_t PlainReads() const {
    uint64_t reads = 0;
    for (const auto& r : receivers) reads += r->counters().plain_reads;
    return reads;
  }

  std::shared_ptr<SteeringMissWarning> warning;
  std::vector<std::unique_ptr<DevmemFragReceiver>> receivers;
};

class SteeringMissWarningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    log::SetLogger(testing::CapturedLog::Logger);
    testing::CapturedLog::Clear();
  }
  void TearDown() override { log::SetLogger(nullptr); }

  static std::vector<std::string> Warnings() { return testing::CapturedLog::WarningsWith(kMiss); }
};

TEST_F(SteeringMissWarningTest, TwoDataSocketsOfOneCommThatReadPlainDataWarnOnce) {
  SteeringMissWarning::ProcessLimit limit;
  CommReceivers comm(0, 2, &limit);
  for (int round = 0; round < 3; ++round) {
    for (int s = 0; s < 2; ++s) ASSERT_TRUE(comm.Read(s).ok());
  }
  const std::vector<std::string> warns = Warnings();
  ASSERT_EQ(warns.size(), 1u);
  // The first data socket to read plain data names the flow, its queue and NIC, and the comm's
  // socket count.
  EXPECT_NE(warns[0].find(Flow(0, 0)), std::string::npos) << warns[0];
  EXPECT_NE(warns[0].find("expected on RX queue 14 of eth2"), std::string::npos) << warns[0];
  EXPECT_NE(warns[0].find("whichever of its data sockets (2)"), std::string::npos) << warns[0];
  EXPECT_EQ(warns[0].find(kOnlyCounted), std::string::npos) << warns[0];
  // Each socket counts every plain read, warned or not (the comm's close line sums them).
  EXPECT_EQ(comm.receivers[0]->counters().plain_reads, 3u);
  EXPECT_EQ(comm.receivers[1]->counters().plain_reads, 3u);
  EXPECT_EQ(comm.receivers[1]->counters().host_bytes, 3 * sizeof(kPayload));
}

TEST_F(SteeringMissWarningTest, ASecondCommWarnsForItself) {
  SteeringMissWarning::ProcessLimit limit;
  CommReceivers first(0, 4, &limit);
  CommReceivers second(1, 4, &limit);
  // The second comm's misses start on its third data socket.
  for (int s : {0, 1, 2, 3}) ASSERT_TRUE(first.Read(s).ok());
  for (int s : {2, 0, 3, 1}) ASSERT_TRUE(second.Read(s).ok());
  const std::vector<std::string> warns = Warnings();
  ASSERT_EQ(warns.size(), 2u);
  EXPECT_NE(warns[0].find(Flow(0, 0)), std::string::npos) << warns[0];
  EXPECT_NE(warns[1].find(Flow(1, 2)), std::string::npos) << warns[1];
  EXPECT_NE(warns[1].find("expected on RX queue 16 of eth2"), std::string::npos) << warns[1];
  for (const std::string& warn : warns) {
    EXPECT_NE(warn.find("whichever of its data sockets (4)"), std::string::npos) << warn;
  }
  EXPECT_EQ(first.PlainReads(), 4u);
  EXPECT_EQ(second.PlainReads(), 4u);
}

TEST_F(SteeringMissWarningTest, PastTheProcessLimitOneWarnSaysFurtherCommsAreOnlyCounted) {
  constexpr int kWarned = 3;
  constexpr int kComms = kWarned + 4;
  SteeringMissWarning::ProcessLimit limit(kWarned);
  std::vector<std::unique_ptr<CommReceivers>> comms;
  for (int c = 0; c < kComms; ++c) {
    comms.push_back(std::make_unique<CommReceivers>(c, 2, &limit));
    for (int round = 0; round < 2; ++round) {
      for (int s = 0; s < 2; ++s) ASSERT_TRUE(comms.back()->Read(s).ok());
    }
  }
  const std::vector<std::string> warns = Warnings();
  ASSERT_EQ(warns.size(), static_cast<size_t>(kWarned + 1));
  for (int c = 0; c < kWarned; ++c) {
    EXPECT_NE(warns[c].find(Flow(c, 0)), std::string::npos) << warns[c];
    EXPECT_EQ(warns[c].find(kOnlyCounted), std::string::npos) << warns[c];
  }
  // The next comm's WARN is the last: it names its own flow, the limit, and where the later
  // comms are counted.
  const std::string& last = warns[kWarned];
  EXPECT_NE(last.find(Flow(kWarned, 0)), std::string::npos) << last;
  EXPECT_NE(last.find("missed on 3 comms of this process before this one"), std::string::npos)
      << last;
  EXPECT_NE(last.find(kOnlyCounted), std::string::npos) << last;
  EXPECT_NE(last.find("plain reads in each recv comm's close line"), std::string::npos) << last;
  for (const auto& comm : comms) EXPECT_EQ(comm->PlainReads(), 4u);
}

TEST_F(SteeringMissWarningTest, UnderRequireAPlainReadFailsTheCommAndLeavesTheWarnToItsCaller) {
  // NCCL_DEVMEM_REQUIRE=1: the read is an error, which the ABI edge logs once; the receiver
  // itself WARNs nothing and uses none of the process's WARNs.
  SteeringMissWarning::ProcessLimit limit(1);
  CommReceivers required(0, 2, &limit, /*required=*/true);
  for (int s = 0; s < 2; ++s) {
    Result<FragReceiver::State> state = required.Read(s);
    ASSERT_FALSE(state.ok());
    EXPECT_NE(state.status().message().find(kMiss), std::string::npos);
    EXPECT_NE(state.status().message().find(Flow(0, s)), std::string::npos);
    EXPECT_NE(state.status().message().find("NCCL_DEVMEM_REQUIRE=1 makes this an error"),
              std::string::npos);
  }
  EXPECT_TRUE(Warnings().empty());
  CommReceivers counted(1, 1, &limit);
  ASSERT_TRUE(counted.Read(0).ok());
  const std::vector<std::string> warns = Warnings();
  ASSERT_EQ(warns.size(), 1u);
  EXPECT_NE(warns[0].find(Flow(1, 0)), std::string::npos) << warns[0];
  EXPECT_EQ(warns[0].find(kOnlyCounted), std::string::npos) << warns[0];
}

}  // namespace
}  // namespace devmem
