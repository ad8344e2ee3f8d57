// devmem-doctor --serve / --pair as an operator runs it: `--serve --peer` in one network namespace,
// `--pair` in another, joined by a veth pair (netns, root); and both on one host's loopback
// (kernel). Each side drives its own plugin; the tests read the JSON report each prints.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "tests/common/shell.h"
#include "tests/common/veth_pair.h"

namespace {

using devmem::testing::RunCommand;
using devmem::testing::VethPair;

struct Outcome {
  int status = -1;
  std::string output;  // stdout (the JSON report) and stderr
};

size_t Count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// The number after `"key": ` at the first occurrence after `from`.
uint64_t NumberAfter(const std::string& text, const std::string& key, size_t from) {
  const size_t at = text.find("\"" + key + "\": ", from);
  if (at == std::string::npos) return 0;
  return strtoull(text.c_str() + at + key.size() + 4, nullptr, 10);
}

// Both sides at once: the server in a thread, the client here; `timeout` guards against a hang
// (exit 124), which the tests check for.
void RunPair(const std::string& serve_command, const std::string& pair_command, Outcome* serve,
             Outcome* pair) {
  std::thread server([&] { serve->status = RunCommand(serve_command, &serve->output); });
  pair->status = RunCommand(pair_command, &pair->output);
  server.join();
}

class DoctorPairNetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to create network namespaces";
    if (RunCommand("ip -V") != 0) GTEST_SKIP() << "iproute2 (ip) is not installed";
    pair_ = std::make_unique<VethPair>();
    ASSERT_TRUE(pair_->error().empty()) << pair_->error();
  }

  // The doctor in namespace `ns`, the plugin on the veth, under timeout(1).
  std::string Doctor(const std::string& ns, const std::string& env, const std::string& args) {
    return "timeout 120 ip netns exec " + ns + " env NCCL_SOCKET_IFNAME=dmv " + env +
           " " DEVMEM_DOCTOR_PATH " " + args;
  }
  std::string Serve(const std::string& env, const std::string& args) {
    return Doctor(pair_->ns_a(), env, "--serve " + args);
  }
  std::string Pair(const std::string& env, const std::string& args) {
    return Doctor(pair_->ns_b(), env, "--pair 198.18.0.1 " + args);
  }

  std::unique_ptr<VethPair> pair_;
};

TEST_F(DoctorPairNetnsTest, BothDirectionsAreByteExactFrom4KiBTo64MiBOnThePlainPath) {
  Outcome serve;
  Outcome pair;
  RunPair(Serve("", "--peer 198.18.0.2 --timeout 100 --json"), Pair("", "--timeout 100 --json"),
          &serve, &pair);
  ASSERT_EQ(pair.status, 0) << pair.output << "\n--- serve:\n" << serve.output;
  ASSERT_EQ(serve.status, 0) << serve.output;
  for (const Outcome* side : {&pair, &serve}) {
    const std::string& json = side->output;
    EXPECT_EQ(Count(json, "\"ready\": true"), 1u) << json;
    // Eight sizes (4 KiB, 16 KiB, ... 64 MiB) in each of the two directions, every byte as sent.
    EXPECT_EQ(Count(json, "\"size\": 4096,"), 2u) << json;
    EXPECT_EQ(Count(json, "\"size\": 67108864,"), 2u) << json;
    EXPECT_EQ(Count(json, "\"bad_messages\": 0"), 16u) << json;
    EXPECT_EQ(Count(json, "\"from\": \"pair\", \"to\": \"serve\""), 1u) << json;
    EXPECT_EQ(Count(json, "\"from\": \"serve\", \"to\": \"pair\""), 1u) << json;
    // A veth cannot run devmem RX: the plugin says why, and the report carries its reason.
    EXPECT_EQ(Count(json, "\"receive_path\": {\"mode\": \"plain\", \"detail\": \""), 2u) << json;
    EXPECT_EQ(Count(json, "\"receive_path\": {\"mode\": \"plain\", \"detail\": \"\""), 0u) << json;
    EXPECT_EQ(Count(json, "\"send_path\": {\"mode\": \"plain\""), 2u) << json;
  }
  EXPECT_NE(pair.output.find("\"address\": \"198.18.0.2\""), std::string::npos) << pair.output;
}

TEST_F(DoctorPairNetnsTest, EmulatedDevmemReceiveAndZeroCopySendAreReportedAsThePluginRanThem) {
  const std::string env = "NCCL_DEVMEM_EMULATE=1 NCCL_DEVMEM_EMULATE_TX=1";
  Outcome serve;
  Outcome pair;
  RunPair(Serve(env, "--peer 198.18.0.2 --timeout 100 --json"),
          Pair(env, "--max-bytes 1M --timeout 100 --json"), &serve, &pair);
  ASSERT_EQ(pair.status, 0) << pair.output << "\n--- serve:\n" << serve.output;
  ASSERT_EQ(serve.status, 0) << serve.output;
  const std::string& json = pair.output;
  EXPECT_EQ(Count(json, "\"size\": 1048576,"), 2u) << json;
  EXPECT_EQ(Count(json, "\"receive_path\": {\"mode\": \"emulated\""), 2u) << json;
  EXPECT_EQ(Count(json, "\"send_path\": {\"mode\": \"emulated\""), 2u) << json;
  // The frag receivers' own counters: the payload came through the emulated RX region.
  for (size_t at = json.find("\"receive_path\""); at != std::string::npos;
       at = json.find("\"receive_path\"", at + 1)) {
    EXPECT_GT(NumberAfter(json, "frags", at), 0u) << json;
    EXPECT_GT(NumberAfter(json, "frag_bytes", at), 0u) << json;
  }
}

TEST_F(DoctorPairNetnsTest, AControlConnectionFromAnotherHostThanThePeerIsRefused) {
  Outcome serve;
  Outcome pair;
  // The server serves only 198.18.0.3; the caller is 198.18.0.2.
  RunPair(Serve("", "--peer 198.18.0.3 --timeout 8"), Pair("", "--timeout 30"), &serve, &pair);
  EXPECT_EQ(pair.status, 2) << pair.output;
  EXPECT_NE(pair.output.find("refused this control connection: this devmem-doctor --serve "
                             "serves only 198.18.0.3"),
            std::string::npos)
      << pair.output;
  EXPECT_EQ(serve.status, 2) << serve.output;
  EXPECT_NE(serve.output.find("refused a control connection from 198.18.0.2"), std::string::npos)
      << serve.output;
  EXPECT_NE(serve.output.find("no control connection from 198.18.0.3"), std::string::npos)
      << serve.output;
}

TEST_F(DoctorPairNetnsTest, JunkOnTheControlPortEndsTheServerWithExit2AtOnce) {
  Outcome serve;
  Outcome junk;
  // The named peer's host sends an HTTP request instead of a hello. The server must stop on the
  // bytes, not at its deadline: that is set beyond timeout(1)'s guard (exit 124 would show it).
  const std::string send_junk =
      "timeout 60 ip netns exec " + pair_->ns_b() +
      " bash -c 'for i in $(seq 100); do exec 3<>/dev/tcp/198.18.0.1/18515 && break; sleep 0.2; "
      "done; printf \"GET / HTTP/1.0\\r\\n\\r\\n\" >&3; sleep 2'";
  RunPair("timeout 30 ip netns exec " + pair_->ns_a() +
              " env NCCL_SOCKET_IFNAME=dmv " DEVMEM_DOCTOR_PATH
              " --serve --peer 198.18.0.2 --timeout 600 --json",
          send_junk, &serve, &junk);
  EXPECT_EQ(serve.status, 2) << serve.output;
  EXPECT_NE(serve.output.find("not a devmem-doctor control message"), std::string::npos)
      << serve.output;
  EXPECT_NE(serve.output.find("{\"ready\": false, \"role\": \"serve\", \"error\": "),
            std::string::npos)
      << serve.output;
}

// The same check on one host (kernel: no namespaces, no root): both sides on loopback.
TEST(DoctorPairLoopbackTest, ServeAndPairOnLoopbackAreByteExactBothWays) {
  // Below the kernel's ephemeral ports (32768 on), and apart for concurrent runs.
  const std::string port = std::to_string(10000 + getpid() % 20000);
  const std::string doctor = "timeout 120 env NCCL_SOCKET_IFNAME=lo " DEVMEM_DOCTOR_PATH
                             " --port " +
                             port + " --timeout 100 ";
  Outcome serve;
  Outcome pair;
  RunPair(doctor + "--serve --peer 127.0.0.1", doctor + "--pair 127.0.0.1 --max-bytes 4M", &serve,
          &pair);
  ASSERT_EQ(pair.status, 0) << pair.output << "\n--- serve:\n" << serve.output;
  ASSERT_EQ(serve.status, 0) << serve.output;
  EXPECT_NE(pair.output.find("pair check: PASS"), std::string::npos) << pair.output;
  EXPECT_EQ(Count(pair.output, "  4194304 "), 2u) << pair.output;  // a row per direction
  EXPECT_NE(serve.output.find("pair check: PASS"), std::string::npos) << serve.output;
}

}  // namespace
