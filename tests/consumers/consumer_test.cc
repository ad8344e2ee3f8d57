// The GPU-consumer contract of a receive comm, on the CPU: with a scatter engine whose "kernel"
// runs only when the test lets it, a receive is reported done only after the engine finished,
// and its devmem tokens stay outstanding until then (never returned before the consumer ran).
// Real sockets on loopback, the emulated frag source, the comm's own workers.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "gpu/scatter_plan.h"
#include "plugin/transport/comm.h"
#include "tests/common/comm_pair.h"

namespace devmem {
namespace {

using Clock = std::chrono::steady_clock;

// A scatter engine whose submissions complete only when RunAll() is called, like a kernel
// still running on a busy GPU. It executes the same plan the CUDA kernel would.
class GatedHostEngine final : public gpu::ScatterEngine {
 public:
  Result<std::optional<gpu::ScatterTicket>> Submit(const gpu::ScatterOp* ops, size_t count,
                                                   const void* region_dptr,
                                                   void* dst_dptr) override {
    if (pending() >= slots_) return std::optional<gpu::ScatterTicket>();  // busy, like CUDA's
    jobs_.push_back(Job{std::vector<gpu::ScatterOp>(ops, ops + count),
                        static_cast<const char*>(region_dptr), static_cast<char*>(dst_dptr),
                        false});
    return std::optional<gpu::ScatterTicket>(
        gpu::ScatterTicket{static_cast<uint32_t>(jobs_.size() - 1), 1});
  }
  void set_slots(size_t slots) { slots_ = slots; }
  Result<bool> Done(const gpu::ScatterTicket& ticket) override {
    ++done_queries_;
    return jobs_.at(ticket.slot).done;
  }
  Status Synchronize() override {
    RunAll();
    return Status::Ok();
  }
  // A GPU that never runs the kernel (queued behind NCCL's on a shared work queue): only
  // RunAll() completes anything, and Synchronize() would block forever, so the tests that
  // simulate it must never reach it.
  Result<bool> Idle() override { return pending() == 0; }
  void RunAll() {
    for (Job& job : jobs_) {
      if (job.done) continue;
      gpu::ExecuteScatterPlanOnHost(job.ops.data(), job.ops.size(), job.region, job.dst);
      job.done = true;
    }
  }
  size_t pending() const {
    size_t n = 0;
    for (const Job& job : jobs_) n += job.done ? 0 : 1;
    return n;
  }
  int done_queries() const { return done_queries_; }

 private:
  struct Job {
    std::vector<gpu::ScatterOp> ops;
    const char* region;
    char* dst;
    bool done;
  };
  std::vector<Job> jobs_;
  int done_queries_ = 0;
  size_t slots_ = 64;
};

using testing::CreateCommPair;

class ConsumerGatingTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(std::chrono::milliseconds(20000)); }

  void Open(std::chrono::milliseconds consumer_timeout) {
    recv_.reset();
    send_.reset();
    engine_ = nullptr;
    // Host region; linear bytes in every few receives exercise the host ranges.
    RxPath path = testing::EmulatedPath(16 << 20, /*gpu=*/-1);
    path.gpu_work_limit = consumer_timeout;
    path.engine_factory = [this](int, size_t,
                                 size_t) -> Result<std::unique_ptr<gpu::ScatterEngine>> {
      auto engine = std::make_unique<GatedHostEngine>();
      engine_ = engine.get();
      return std::unique_ptr<gpu::ScatterEngine>(std::move(engine));
    };
    auto comms = CreateCommPair(testing::TestParams(2, 1, 64 << 10), std::move(path));
    ASSERT_TRUE(comms.ok()) << comms.status().message();
    recv_ = std::move(comms->recv);
    send_ = std::move(comms->send);
    ASSERT_NE(engine_, nullptr);
  }

  // Posts a receive of `size` bytes into `sink`, then the send of `source`, with one tag.
  void Post(std::vector<char>& source, std::vector<char>& sink, size_t size, int tag,
            Result<Request*>* recv, Result<Request*>* send) {
    void* dst = sink.data();
    size_t capacity = size;
    *recv = recv_->PostRecv(1, &dst, &capacity, &tag, nullptr);
    ASSERT_TRUE(recv->ok() && recv->value() != nullptr);
    *send = send_->PostSend(source.data(), size, tag, nullptr);
    ASSERT_TRUE(send->ok() && send->value() != nullptr);
  }

  // Sends `size` bytes and returns when the receive is waiting for the engine (or done).
  void Transfer(size_t size, uint64_t seed, bool expect_engine) {
    std::vector<char> source(size), sink(size + 32, '\x5a');
    std::mt19937_64 rng(seed);
    for (char& c : source) c = static_cast<char>(rng());
    Result<Request*> recv = static_cast<Request*>(nullptr);
    Result<Request*> send = static_cast<Request*>(nullptr);
    ASSERT_NO_FATAL_FAILURE(Post(source, sink, size, 9, &recv, &send));
    bool send_done = false, recv_done = false;
    int send_size = 0, recv_size = -1;
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    // Until the engine holds the submission, or the receive finished without it.
    while (!send_done || (!recv_done && engine_->pending() == 0)) {
      if (!send_done) {
        ASSERT_TRUE(send_->Test(send.value(), &send_done, &send_size).ok());
      }
      if (!recv_done) {
        Status tested = recv_->Test(recv.value(), &recv_done, &recv_size);
        ASSERT_TRUE(tested.ok()) << static_cast<int>(tested.kind()) << ":" << tested.message();
      }
      ASSERT_LT(Clock::now(), deadline);
    }
    if (expect_engine) {
      ASSERT_FALSE(recv_done) << "reported done before the engine ran, size " << size;
      ASSERT_EQ(engine_->pending(), 1u);
      // The kernel has not run: the frags' tokens are all still held, and test() keeps saying
      // not done however often it is asked.
      const uint64_t held = recv_->DevmemCounters().tokens_outstanding;
      EXPECT_GT(held, 0u);
      for (int i = 0; i < 200; ++i) {
        ASSERT_TRUE(recv_->Test(recv.value(), &recv_done, &recv_size).ok());
        ASSERT_FALSE(recv_done);
      }
      EXPECT_EQ(recv_->DevmemCounters().tokens_outstanding, held);
      engine_->RunAll();
      ASSERT_TRUE(recv_->Test(recv.value(), &recv_done, &recv_size).ok());
      ASSERT_TRUE(recv_done);
    } else {
      ASSERT_TRUE(recv_done);
      EXPECT_EQ(engine_->pending(), 0u);
    }
    EXPECT_EQ(recv_size, static_cast<int>(size));
    // Released only now, all of them.
    EXPECT_EQ(recv_->DevmemCounters().tokens_outstanding, 0u);
    ASSERT_TRUE(std::equal(source.begin(), source.end(), sink.begin())) << "size " << size;
    for (size_t i = size; i < sink.size(); ++i) ASSERT_EQ(sink[i], '\x5a');
  }

  GatedHostEngine* engine_ = nullptr;
  std::unique_ptr<RecvComm> recv_;
  std::unique_ptr<SendComm> send_;
};

TEST_F(ConsumerGatingTest, InlineMessagesNeedNoEngine) {
  for (size_t size : {0, 1, 1000}) Transfer(size, size, false);
}

TEST_F(ConsumerGatingTest, DoneAndTokenReleaseWaitForTheEngine) {
  for (size_t size : {1025u, 4096u, 65537u, 1u << 20, (1u << 21) + 3u}) {
    Transfer(size, size, true);
  }
  EXPECT_GT(engine_->done_queries(), 200);
}

// The engine never runs the kernel, as a GPU whose only work queue is taken by NCCL's spinning
// kernel (H200 under MPS, perf/RESULTS.md 2026-11-26): test() fails the comm after the
// consumer timeout with a WARN-worthy error, instead of saying "not done" forever, and closing
// the comm returns (the engine and region are abandoned, not synchronized).
TEST_F(ConsumerGatingTest, AKernelThatNeverRunsFailsTheCommAfterTheConsumerTimeout) {
  Open(std::chrono::milliseconds(300));
  const size_t size = 1 << 20;
  std::vector<char> source(size, 'x'), sink(size);
  Result<Request*> recv = static_cast<Request*>(nullptr);
  Result<Request*> send = static_cast<Request*>(nullptr);
  ASSERT_NO_FATAL_FAILURE(Post(source, sink, size, 3, &recv, &send));
  bool send_done = false, recv_done = false;
  int send_size = 0, recv_size = -1;
  const auto start = Clock::now();
  Status failure;
  while (failure.ok()) {
    if (!send_done) {
      ASSERT_TRUE(send_->Test(send.value(), &send_done, &send_size).ok());
    }
    failure = recv_->Test(recv.value(), &recv_done, &recv_size);
    ASSERT_FALSE(recv_done) << "done although the kernel never ran";
    ASSERT_LT(Clock::now() - start, std::chrono::seconds(30)) << "no timeout: test() hangs";
  }
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(300));
  EXPECT_EQ(engine_->pending(), 1u);
  EXPECT_EQ(failure.kind(), ErrorKind::kSystem);
  EXPECT_NE(failure.message().find("NCCL_DEVMEM_GPU_CONSUMER_TIMEOUT_MS"), std::string::npos)
      << failure.message();
  // The comm stays failed: the next call says so at once.
  Status again = recv_->Test(recv.value(), &recv_done, &recv_size);
  EXPECT_FALSE(again.ok());
  // Closing polls the engine for the same limit, then abandons it: it returns.
  const auto close_start = Clock::now();
  recv_.reset();
  EXPECT_LT(Clock::now() - close_start, std::chrono::seconds(10));
  EXPECT_EQ(engine_->pending(), 1u) << "close ran the never-running kernel";
}

}  // namespace
}  // namespace devmem
