// NCCL_DEVMEM_METRICS_FILE through the ABI (dlopen, loopback sockets): real traffic, then the
// file the plugin wrote is read back with a reader written from the Prometheus text format
// (tests/common/prometheus_text.h) and its counts compared with what was sent. Run by CTest
// with the variable set: a writable directory (counts; plain and emulated devmem RX), and a
// directory that does not exist (one WARN, traffic unharmed).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "plugin/abi/net_abi.h"
#include "plugin/core/config.h"
#include "tests/common/captured_log.h"
#include "tests/common/plugin_fixture.h"
#include "tests/common/prometheus_text.h"

namespace devmem {
namespace {

using Clock = std::chrono::steady_clock;
using testing::Exposition;
using testing::ParseExposition;
using testing::RandomBytes;

constexpr auto kDeadline = std::chrono::seconds(120);

const char* Env(const char* name) { return getenv(name); }  // NOLINT(concurrency-mt-unsafe)

// The variable's path with %p and %h replaced, as docs/metrics.md promises.
std::string ExpectedPath() {
  const std::string pattern = Env("NCCL_DEVMEM_METRICS_FILE");
  char host[HOST_NAME_MAX + 1] = {};
  gethostname(host, sizeof(host) - 1);
  std::string out;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '%' && i + 1 < pattern.size() && pattern[i + 1] == 'p') {
      out += std::to_string(getpid());
      ++i;
    } else if (pattern[i] == '%' && i + 1 < pattern.size() && pattern[i + 1] == 'h') {
      out += host;
      ++i;
    } else {
      out += pattern[i];
    }
  }
  return out;
}

bool DirectoryOfExists(const std::string& path) {
  struct stat st {};
  const std::string dir = path.substr(0, path.rfind('/'));
  return stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

Exposition ReadMetrics() {
  std::ifstream in(ExpectedPath());
  std::stringstream text;
  text << in.rdbuf();
  Exposition parsed = ParseExposition(text.str());
  for (const std::string& error : parsed.errors) ADD_FAILURE() << error;
  return parsed;
}

class MetricsAbiTest : public testing::PluginSuite {
 protected:
  void SetUp() override {
    ASSERT_NE(Env("NCCL_DEVMEM_METRICS_FILE"), nullptr) << "CTest sets the variable";
    ASSERT_EQ(net_->init(&ctx_, 1, nullptr, testing::CapturedLog::Logger, nullptr), abi::kSuccess);
  }
  void TearDown() override { EXPECT_EQ(net_->finalize(ctx_), abi::kSuccess); }

  // A connected pair, `count` messages of each size each way checked byte for byte, closed.
  void Traffic(const std::vector<size_t>& sizes) {
    uint8_t handle[abi::kNetHandleMaxSize];
    void* listen_comm = nullptr;
    void* send_comm = nullptr;
    void* recv_comm = nullptr;
    ASSERT_EQ(net_->listen(ctx_, 0, handle, &listen_comm), abi::kSuccess);
    abi::DeviceHandleV7* no_device = nullptr;
    auto deadline = Clock::now() + kDeadline;
    while (send_comm == nullptr || recv_comm == nullptr) {
      if (send_comm == nullptr) {
        ASSERT_EQ(net_->connect(ctx_, 0, handle, &send_comm, &no_device), abi::kSuccess);
      }
      if (recv_comm == nullptr) {
        ASSERT_EQ(net_->accept(listen_comm, &recv_comm, &no_device), abi::kSuccess);
      }
      ASSERT_LT(Clock::now(), deadline);
    }
    ASSERT_EQ(net_->closeListen(listen_comm), abi::kSuccess);
    for (size_t size : sizes) {
      std::vector<char> source = RandomBytes(size, size);
      std::vector<char> sink(size, 0);
      void* smh = nullptr;
      void* rmh = nullptr;
      ASSERT_EQ(net_->regMr(send_comm, source.data(), size, abi::kPtrHost, &smh), abi::kSuccess);
      ASSERT_EQ(net_->regMr(recv_comm, sink.data(), size, abi::kPtrHost, &rmh), abi::kSuccess);
      void* dst = sink.data();
      size_t capacity = size;
      int tag = 1;
      void* recv = nullptr;
      ASSERT_EQ(net_->irecv(recv_comm, 1, &dst, &capacity, &tag, &rmh, nullptr, &recv),
                abi::kSuccess);
      void* send = nullptr;
      deadline = Clock::now() + kDeadline;
      while (send == nullptr) {
        ASSERT_EQ(net_->isend(send_comm, source.data(), size, 1, smh, nullptr, &send),
                  abi::kSuccess);
        ASSERT_LT(Clock::now(), deadline);
      }
      int send_done = 0, recv_done = 0;
      while (!send_done || !recv_done) {
        if (!send_done) {
          ASSERT_EQ(net_->test(send, &send_done, nullptr), abi::kSuccess);
        }
        if (!recv_done) {
          ASSERT_EQ(net_->test(recv, &recv_done, nullptr), abi::kSuccess);
        }
        ASSERT_LT(Clock::now(), deadline);
      }
      ASSERT_EQ(sink, source);
      ASSERT_EQ(net_->deregMr(send_comm, smh), abi::kSuccess);
      ASSERT_EQ(net_->deregMr(recv_comm, rmh), abi::kSuccess);
    }
    ASSERT_EQ(net_->closeSend(send_comm), abi::kSuccess);
    ASSERT_EQ(net_->closeRecv(recv_comm), abi::kSuccess);  // the last comm: the file is written
  }

  // Writes the file now, through a second context's finalize.
  void WriteThroughFinalize() {
    void* other = nullptr;
    ASSERT_EQ(net_->init(&other, 2, nullptr, testing::CapturedLog::Logger, nullptr), abi::kSuccess);
    ASSERT_EQ(net_->finalize(other), abi::kSuccess);
  }

  void* ctx_ = nullptr;
};

double Delta(const Exposition& after, const Exposition& before, const std::string& key) {
  const double b = before.Has(key) ? before.Value(key) : 0;
  EXPECT_TRUE(after.Has(key)) << key;
  return after.Value(key) - b;
}

TEST_F(MetricsAbiTest, TheFileCountsTheTrafficThatRan) {
  if (!DirectoryOfExists(ExpectedPath())) GTEST_SKIP() << "run with an unwritable directory";
  WriteThroughFinalize();
  const Exposition before = ReadMetrics();
  // On the data sockets: above every inline limit (1M at most; a devmem receiver takes 32K).
  // Above every default inline limit: the data sockets carry it (their syscalls are counted).
  constexpr size_t kLarge = 2 * size_t{devmem::kMaxDefaultInlineBytes};
  const std::vector<size_t> sizes = {kLarge, 100, kLarge, 100, kLarge};
  Traffic(sizes);
  const Exposition after = ReadMetrics();
  const bool emulated = Env("NCCL_DEVMEM_EMULATE") != nullptr;
  const std::string recv_path = emulated ? "emulated" : "plain";
  const double total = 3.0 * kLarge + 200;
  EXPECT_EQ(Delta(after, before, "nccl_devmem_bytes_total{direction=\"send\",path=\"plain\"}"),
            total);
  EXPECT_EQ(Delta(after, before,
                  "nccl_devmem_bytes_total{direction=\"recv\",path=\"" + recv_path + "\"}"),
            total);
  EXPECT_EQ(Delta(after, before, "nccl_devmem_messages_total{direction=\"send\"}"), 5);
  EXPECT_EQ(Delta(after, before, "nccl_devmem_messages_total{direction=\"recv\"}"), 5);
  EXPECT_EQ(
      Delta(after, before, "nccl_devmem_comms_opened_total{direction=\"send\",path=\"plain\"}"), 1);
  EXPECT_EQ(Delta(after, before,
                  "nccl_devmem_comms_opened_total{direction=\"recv\",path=\"" + recv_path + "\"}"),
            1);
  // Closed comms are folded into the totals; nothing is open or held any more.
  EXPECT_EQ(after.Value("nccl_devmem_comms_open{direction=\"recv\",path=\"" + recv_path + "\"}"),
            0);
  EXPECT_EQ(after.Value("nccl_devmem_tokens_held"), 0);
  EXPECT_EQ(Delta(after, before, "nccl_devmem_fallbacks_total{reason=\"rx_unavailable\"}"),
            emulated ? 0 : 1);
  if (emulated) {
    const double frags = Delta(after, before, "nccl_devmem_frags_total{path=\"emulated\"}");
    EXPECT_GT(frags, 0);
    EXPECT_EQ(Delta(after, before, "nccl_devmem_tokens_returned_total"), frags);
    // Every byte of the large messages came in as a frag or as linear bytes.
    EXPECT_EQ(Delta(after, before, "nccl_devmem_region_bytes_total{path=\"emulated\"}") +
                  Delta(after, before, "nccl_devmem_linear_bytes_total{path=\"emulated\"}"),
              3.0 * kLarge);
    // Each receive ran its (host scatter) consumer once.
    EXPECT_EQ(Delta(after, before, "nccl_devmem_consumer_latency_seconds_count"), 5);
  } else {
    EXPECT_EQ(Delta(after, before, "nccl_devmem_frags_total{path=\"emulated\"}"), 0);
    EXPECT_EQ(Delta(after, before, "nccl_devmem_consumer_latency_seconds_count"), 0);
  }
  EXPECT_GT(Delta(after, before, "nccl_devmem_data_syscalls_total{direction=\"recv\"}"), 0);
  for (const std::string& warn : testing::CapturedLog::Warnings()) {
    EXPECT_EQ(warn.find("NCCL_DEVMEM_METRICS_FILE"), std::string::npos) << warn;
  }
}

TEST_F(MetricsAbiTest, AnUnwritableDirectoryCostsOneWarnAndNothingElse) {
  if (DirectoryOfExists(ExpectedPath())) GTEST_SKIP() << "run with a writable directory";
  Traffic({1 << 20, 100});
  WriteThroughFinalize();
  WriteThroughFinalize();
  int metrics_warns = 0;
  for (const std::string& warn : testing::CapturedLog::Warnings()) {
    if (warn.find("NCCL_DEVMEM_METRICS_FILE: cannot write") != std::string::npos) {
      ++metrics_warns;
      EXPECT_NE(warn.find(ExpectedPath()), std::string::npos) << warn;
    }
  }
  EXPECT_EQ(metrics_warns, 1);
}

}  // namespace
}  // namespace devmem
