// Two processes in two network namespaces joined by a veth pair that the test creates and
// removes: the benchmark binary (which drives the plugin's exported ABI) runs its receiver in
// one namespace and its sender in the other, checking every payload byte.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/common/shell.h"
#include "tests/common/veth_pair.h"

namespace {

using devmem::testing::RunCommand;
using devmem::testing::VethPair;

class NetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to create network namespaces";
    if (RunCommand("ip -V") != 0) GTEST_SKIP() << "iproute2 (ip) is not installed";
    pair_ = std::make_unique<VethPair>();
    ASSERT_TRUE(pair_->error().empty()) << pair_->error();
  }

  // Runs the benchmark across the pair with byte checks; returns the JSON lines it printed.
  std::vector<std::string> RunBench(const std::string& env, const std::string& args) {
    std::string output;
    const std::string command = "env NCCL_SOCKET_IFNAME=dmv " + env + " " DEVMEM_BENCH_PATH +
                                " --plugin " DEVMEM_PLUGIN_PATH " --json --check --netns-recv " +
                                pair_->ns_a() + " --netns-send " + pair_->ns_b() + " " + args;
    int status = RunCommand(command, &output);
    EXPECT_EQ(status, 0) << command << "\n" << output;
    std::vector<std::string> lines;
    size_t pos = 0;
    while ((pos = output.find("{\"size\"", pos)) != std::string::npos) {
      size_t end = output.find('\n', pos);
      lines.push_back(output.substr(pos, end - pos));
      pos = end;
    }
    return lines;
  }

  std::unique_ptr<VethPair> pair_;
};

TEST_F(NetnsTest, Ipv4AcrossVethIsByteExactFrom1BTo64MiB) {
  std::vector<std::string> lines = RunBench("", "-b 1 -e 64M -f 8 -n 6 -w 1");
  ASSERT_EQ(lines.size(), 9u);  // 1 B, 8 B, 64 B, ..., 2 MiB, 16 MiB
  EXPECT_NE(lines.back().find("\"size\": 16777216"), std::string::npos) << lines.back();
}

TEST_F(NetnsTest, Ipv6AcrossVethIsByteExact) {
  std::vector<std::string> lines =
      RunBench("NCCL_SOCKET_FAMILY=AF_INET6", "-b 1K -e 16M -f 16 -n 4 -w 1");
  EXPECT_EQ(lines.size(), 4u);
}

TEST_F(NetnsTest, EmulatedDevmemAcrossVethIsByteExact) {
  std::vector<std::string> lines =
      RunBench("NCCL_DEVMEM_EMULATE_SPLIT_PERCENT=25 NCCL_DEVMEM_EMULATE_LINEAR_PERCENT=25",
               "--mode emulated-devmem -b 1 -e 16M -f 16 -n 4 -w 1");
  EXPECT_EQ(lines.size(), 7u);
  for (const std::string& line : lines) {
    EXPECT_NE(line.find("\"mode\": \"emulated-devmem\""), std::string::npos) << line;
  }
}

// Installs an nftables rule in `netns` (table inet devmem_fault, created on first use).
void AddFaultRule(const std::string& netns, const std::string& hook, const std::string& rule) {
  const std::string nft = "ip netns exec " + netns + " nft ";
  std::string output;
  RunCommand(nft + "add table inet devmem_fault", &output);
  RunCommand(nft + "add chain inet devmem_fault " + hook + " '{ type filter hook " + hook +
                 " priority 0; }'",
             &output);
  ASSERT_EQ(RunCommand(nft + "add rule inet devmem_fault " + hook + " '" + rule + "'", &output), 0)
      << output;
}

TEST_F(NetnsTest, PacketLossOnTheLinkStillDeliversEveryByte) {
  if (RunCommand("nft --version") != 0) GTEST_SKIP() << "nftables (nft) is not installed";
  // Drop 2% of the sender's TCP segments: retransmissions must hide it completely.
  AddFaultRule(pair_->ns_b(), "output", "meta l4proto tcp numgen random mod 100 < 2 drop");
  std::vector<std::string> lines = RunBench("NCCL_DEVMEM_NSOCKS=4", "-b 4K -e 4M -f 32 -n 4 -w 1");
  EXPECT_EQ(lines.size(), 3u);
}

// Emulated devmem TX: every data-socket send with MSG_ZEROCOPY, done only on its completion.
// Retransmissions hold completions back (the skbs stay queued until acknowledged).
TEST_F(NetnsTest, ZeroCopySendsThroughPacketLossDeliverEveryByte) {
  if (RunCommand("nft --version") != 0) GTEST_SKIP() << "nftables (nft) is not installed";
  AddFaultRule(pair_->ns_b(), "output", "meta l4proto tcp numgen random mod 100 < 2 drop");
  std::vector<std::string> lines = RunBench("", "--mode emulated-tx -b 4K -e 4M -f 32 -n 4 -w 1");
  EXPECT_EQ(lines.size(), 3u);
}

// With the sender's optmem nearly gone, MSG_ZEROCOPY sends fail with ENOBUFS: the sender waits
// for completions (or copies when none is in flight) and never fails or spins.
TEST_F(NetnsTest, ZeroCopySendsWithExhaustedOptmemDeliverEveryByte) {
  std::string output;
  ASSERT_EQ(
      RunCommand("ip netns exec " + pair_->ns_b() + " sysctl -w net.core.optmem_max=512", &output),
      0)
      << output;
  std::vector<std::string> lines = RunBench("", "--mode emulated-tx -b 64K -e 16M -f 16 -n 4 -w 1");
  EXPECT_EQ(lines.size(), 3u);
}

// Emulated devmem TX with the peer resetting the data connections mid-stream: once a data
// flow carried 4 MB, the receiver's namespace answers its segments with a TCP reset. The
// sender must fail (ECONNRESET) with sends and zero-copy completions in flight, and both
// sides must exit instead of waiting for completions or bytes that never come.
TEST_F(NetnsTest, APeerResetMidSendFailsZeroCopySendsWithoutAHang) {
  if (RunCommand("nft --version") != 0) GTEST_SKIP() << "nftables (nft) is not installed";
  AddFaultRule(pair_->ns_a(), "input", "meta l4proto tcp ct bytes > 4000000 reject with tcp reset");
  std::string output;
  const std::string command =
      "env NCCL_SOCKET_IFNAME=dmv NCCL_DEVMEM_TCP_USER_TIMEOUT_MS=5000 "
      "timeout 120 " DEVMEM_BENCH_PATH " --plugin " DEVMEM_PLUGIN_PATH
      " --mode emulated-tx "
      "--netns-recv " +
      pair_->ns_a() + " --netns-send " + pair_->ns_b() + " -b 16M -e 16M -n 8 -w 0";
  const auto start = std::chrono::steady_clock::now();
  int status = RunCommand(command, &output);
  EXPECT_NE(status, 0) << output;
  EXPECT_NE(status, 124) << "hung until timeout(1) killed it:\n" << output;
  EXPECT_NE(output.find("reset"), std::string::npos) << output;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60));
}

TEST_F(NetnsTest, APartitionFailsBothSidesWithinTheUserTimeout) {
  if (RunCommand("nft --version") != 0) GTEST_SKIP() << "nftables (nft) is not installed";
  // Once a flow has carried 4 MB, every packet between the namespaces is dropped in both
  // directions: a partition. With a 1.5 s TCP_USER_TIMEOUT both processes must fail.
  for (const std::string& ns : {pair_->ns_a(), pair_->ns_b()}) {
    AddFaultRule(ns, "output", "meta l4proto tcp ct bytes > 4000000 drop");
  }
  std::string output;
  const std::string command =
      "env NCCL_SOCKET_IFNAME=dmv NCCL_DEVMEM_TCP_USER_TIMEOUT_MS=1500 "
      "timeout 120 " DEVMEM_BENCH_PATH " --plugin " DEVMEM_PLUGIN_PATH " --netns-recv " +
      pair_->ns_a() + " --netns-send " + pair_->ns_b() + " -b 16M -e 16M -n 8 -w 0";
  const auto start = std::chrono::steady_clock::now();
  int status = RunCommand(command, &output);
  EXPECT_NE(status, 0) << output;
  EXPECT_NE(status, 124) << "hung until timeout(1) killed it:\n" << output;
  EXPECT_NE(output.find("Connection timed out"), std::string::npos) << output;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60));
}

}  // namespace
