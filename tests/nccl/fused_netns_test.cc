// A virtual NIC of several veth pairs between two network namespaces (the test creates and
// removes them): the benchmark fuses its first N devices with makeVDevice on both sides (as
// NCCL_NET_FORCE_MERGE makes NCCL do) and streams through the virtual NIC, checking every
// byte; the kernel's per-interface counters show which members carried the payload.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "tests/common/shell.h"

namespace {

using devmem::testing::RunCommand;

// Namespaces A (receiver) and B (sender) joined by `pairs` veth pairs, one subnet per pair
// ("one subnet per rail"): member k is 198.18.(20+k).1 in A and .2 in B. Created in order, so
// both sides list the members in the same order.
class FusedVeths {
 public:
  explicit FusedVeths(int pairs) {
    const std::string id = std::to_string(getpid() % 100000);
    ns_a_ = "dmfA" + id;
    ns_b_ = "dmfB" + id;
    std::vector<std::string> steps = {"ip netns add " + ns_a_, "ip netns add " + ns_b_,
                                      "ip -n " + ns_a_ + " link set lo up",
                                      "ip -n " + ns_b_ + " link set lo up"};
    for (int k = 0; k < pairs; ++k) {
      const std::string a = "dmfa" + id + "x" + std::to_string(k);
      const std::string b = "dmfb" + id + "x" + std::to_string(k);
      const std::string net = "198.18." + std::to_string(20 + k) + ".";
      for (const std::string& step :
           {"ip link add " + a + " type veth peer name " + b,
            "ip link set " + a + " netns " + ns_a_, "ip link set " + b + " netns " + ns_b_,
            "ip -n " + ns_a_ + " addr add " + net + "1/24 dev " + a,
            "ip -n " + ns_b_ + " addr add " + net + "2/24 dev " + b,
            "ip -n " + ns_a_ + " link set " + a + " up",
            "ip -n " + ns_b_ + " link set " + b + " up"}) {
        steps.push_back(step);
      }
      a_.push_back(a);
      b_.push_back(b);
    }
    for (const std::string& step : steps) {
      std::string output;
      if (RunCommand(step, &output) != 0) {
        error_ = step + ": " + output;
        return;
      }
    }
  }
  ~FusedVeths() {
    RunCommand("ip netns del " + ns_a_);
    RunCommand("ip netns del " + ns_b_);
  }
  const std::string& error() const { return error_; }
  const std::string& ns_a() const { return ns_a_; }
  const std::string& ns_b() const { return ns_b_; }
  const std::string& member_a(int k) const { return a_[static_cast<size_t>(k)]; }
  const std::string& member_b(int k) const { return b_[static_cast<size_t>(k)]; }

  // A counter of /sys/class/net/IF/statistics as the namespace sees it.
  uint64_t Counter(const std::string& ns, const std::string& ifname, const char* counter) const {
    std::string output;
    RunCommand("ip netns exec " + ns + " cat /sys/class/net/" + ifname + "/statistics/" + counter,
               &output);
    return strtoull(output.c_str(), nullptr, 10);
  }

 private:
  std::string ns_a_, ns_b_, error_;
  std::vector<std::string> a_, b_;
};

class FusedNetnsTest : public ::testing::Test {
 protected:
  void Build(int pairs) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to create network namespaces";
    if (RunCommand("ip -V") != 0) GTEST_SKIP() << "iproute2 (ip) is not installed";
    veths_ = std::make_unique<FusedVeths>(pairs);
    ASSERT_TRUE(veths_->error().empty()) << veths_->error();
  }

  // The bench across the namespaces through a virtual NIC of `fuse` members; its exit status,
  // and its output in *output.
  int Bench(const std::string& env, int fuse, const std::string& args, std::string* output) {
    const std::string command =
        "env NCCL_SOCKET_IFNAME=dmf " + env + " timeout 300 " +
        DEVMEM_BENCH_PATH " --plugin " DEVMEM_PLUGIN_PATH " --json --fuse " + std::to_string(fuse) +
        " --netns-recv " + veths_->ns_a() + " --netns-send " + veths_->ns_b() + " " + args;
    return RunCommand(command, output);
  }

  static size_t CountLines(const std::string& output) {
    size_t lines = 0;
    for (size_t pos = 0; (pos = output.find("{\"size\"", pos)) != std::string::npos; ++pos) {
      ++lines;
    }
    return lines;
  }

  std::unique_ptr<FusedVeths> veths_;
};

TEST_F(FusedNetnsTest, ThreeFusedPairsCarryByteExactTrafficOverEveryMember) {
  Build(3);
  if (HasFatalFailure() || IsSkipped()) return;
  std::vector<uint64_t> before;
  for (int k = 0; k < 3; ++k)
    before.push_back(veths_->Counter(veths_->ns_a(), veths_->member_a(k), "rx_bytes"));
  std::string output;
  ASSERT_EQ(Bench("", 3, "--check -b 1 -e 16M -f 16 -n 4 -w 1", &output), 0) << output;
  EXPECT_EQ(CountLines(output), 7u) << output;  // 1 B .. 16 MiB by 16
  EXPECT_NE(output.find("\"fused\": 3"), std::string::npos) << output;
  // 4 x 16 MiB + 4 x 1 MiB + ... crossed; data sockets pair the members evenly, so each member
  // received well over a fifth of it.
  uint64_t total = 0;
  std::vector<uint64_t> grown;
  for (int k = 0; k < 3; ++k) {
    grown.push_back(veths_->Counter(veths_->ns_a(), veths_->member_a(k), "rx_bytes") -
                    before[static_cast<size_t>(k)]);
    total += grown.back();
  }
  ASSERT_GT(total, uint64_t{64} << 20);
  for (int k = 0; k < 3; ++k) {
    EXPECT_GT(grown[static_cast<size_t>(k)], total / 5)
        << veths_->member_a(k) << " carried " << grown[static_cast<size_t>(k)] << " of " << total
        << " bytes";
  }
}

TEST_F(FusedNetnsTest, EmulatedDevmemThroughAVirtualNicIsByteExact) {
  Build(2);
  if (HasFatalFailure() || IsSkipped()) return;
  std::string output;
  ASSERT_EQ(Bench("NCCL_DEVMEM_EMULATE_SPLIT_PERCENT=25 NCCL_DEVMEM_EMULATE_LINEAR_PERCENT=25", 2,
                  "--mode emulated-devmem --verbose --check -b 1 -e 16M -f 16 -n 4 -w 1", &output),
            0)
      << output;
  EXPECT_EQ(CountLines(output), 7u) << output;
  // makeVDevice logs the virtual NIC's receive path.
  EXPECT_NE(output.find("receive path: EMULATED devmem RX"), std::string::npos) << output;
}

TEST_F(FusedNetnsTest, MembersOfDifferentSpeedsStillDeliverEveryByte) {
  Build(2);
  if (HasFatalFailure() || IsSkipped()) return;
  if (RunCommand("tc -V") != 0) GTEST_SKIP() << "tc (iproute2) is not installed";
  // The sender's second member at a tenth of the first's rate.
  std::string output;
  ASSERT_EQ(RunCommand("ip netns exec " + veths_->ns_b() + " tc qdisc add dev " +
                           veths_->member_b(0) + " root tbf rate 1gbit burst 256kb latency 50ms",
                       &output),
            0)
      << output;
  ASSERT_EQ(RunCommand("ip netns exec " + veths_->ns_b() + " tc qdisc add dev " +
                           veths_->member_b(1) + " root tbf rate 100mbit burst 64kb latency 200ms",
                       &output),
            0)
      << output;
  output.clear();
  ASSERT_EQ(Bench("NCCL_DEVMEM_VNIC_STRIPING=adaptive", 2,
                  "--verbose --check -b 1K -e 4M -f 64 -n 16 -w 1", &output),
            0)
      << output;
  EXPECT_EQ(CountLines(output), 3u) << output;
  // The sender saw one member deliver ten times slower and steered messages off it (the
  // steering path, wire kStripedOver, byte-exact above).
  const size_t steered = output.find(" messages steered to the faster members' sockets");
  ASSERT_NE(steered, std::string::npos) << output;
  const size_t number = output.rfind(", ", steered);
  EXPECT_GT(strtoull(output.c_str() + number + 2, nullptr, 10), 0u) << output;
}

TEST_F(FusedNetnsTest, AMemberGoingDownFailsTheCommWithinTheUserTimeout) {
  Build(2);
  if (HasFatalFailure() || IsSkipped()) return;
  // The second member's link goes down while a long stream runs: its sockets stall, and with a
  // 1.5 s TCP_USER_TIMEOUT the comm must fail with the kernel's reason, not hang.
  const std::string down = "(sleep 2; ip -n " + veths_->ns_b() + " link set " +
                           veths_->member_b(1) +
                           " down) >/dev/null 2>&1 &";  // detached: RunCommand returns now
  std::string output;
  RunCommand(down);
  const auto start = std::chrono::steady_clock::now();
  const int status =
      Bench("NCCL_DEVMEM_TCP_USER_TIMEOUT_MS=1500", 2, "-b 16M -e 16M -n 2000 -w 0", &output);
  EXPECT_NE(status, 0) << output;
  EXPECT_NE(status, 124) << "hung until timeout(1) killed it:\n" << output;
  EXPECT_NE(output.find("Connection timed out"), std::string::npos) << output;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(90));
}

}  // namespace
