// The GPU quarantine (plugin/cuda/gpu_quarantine.h): one wait for plugin GPU work, one limit,
// and past it one policy: keep what the work may touch, stop every free of the process, one
// WARN. The GPU is a fake: polls that finish, fail or never finish, and a scatter engine whose
// kernel never runs (what an H200 under MPS did, perf/RESULTS.md 2026-11-26). The consumer is
// the product's; each test has a quarantine of its own, so the process's frees are untouched.
#include "plugin/cuda/gpu_quarantine.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "gpu/scatter_engine.h"
#include "gpu/scatter_plan.h"
#include "plugin/consumers/kernel_scatter_consumer.h"
#include "plugin/core/log.h"
#include "plugin/devmem/frag_receiver.h"
#include "plugin/devmem/offset_table.h"

namespace devmem {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds kNoGiveUp = std::chrono::hours(1);  // far beyond any test's run

// Every WARN the plugin logs while a test runs.
class WarnLog {
 public:
  WarnLog() {
    Lines().clear();
    log::SetLogger(&WarnLog::Logger);
  }
  ~WarnLog() { log::SetLogger(nullptr); }
  std::vector<std::string> lines() const {
    std::lock_guard<std::mutex> lock(Mutex());
    return Lines();
  }

 private:
  __attribute__((format(printf, 5, 6))) static void Logger(nccl::LogLevel level, unsigned long,
                                                           const char*, int, const char* fmt,
                                                           ...) {
    if (level != nccl::kLogWarn) return;
    char text[4096];
    va_list args;
    va_start(args, fmt);
    vsnprintf(text, sizeof(text), fmt, args);
    va_end(args);
    std::lock_guard<std::mutex> lock(Mutex());
    Lines().emplace_back(text);
  }
  static std::mutex& Mutex() {
    static std::mutex mutex;
    return mutex;
  }
  static std::vector<std::string>& Lines() {
    static std::vector<std::string> lines;
    return lines;
  }
};

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// --- The wait -----------------------------------------------------------------------------------

TEST(GpuQuarantineTest, WorkThatFinishesWithinTheLimitEndsTheWaitAndGivesNothingUp) {
  GpuQuarantine quarantine;
  WarnLog warns;
  int polls = 0;
  bool gave_up = false;
  // More polls than the wait reads the clock and starts to sleep after (64, 4096).
  Status waited = quarantine.Wait(
      "a fake copy", "it was queued", kNoGiveUp,
      [&]() -> Result<bool> { return ++polls == 5000; }, &gave_up);
  ASSERT_TRUE(waited.ok()) << waited.message();
  EXPECT_EQ(polls, 5000);
  EXPECT_FALSE(gave_up);
  EXPECT_FALSE(quarantine.stopped_freeing());
  EXPECT_EQ(quarantine.give_ups(), 0u);
  EXPECT_TRUE(warns.lines().empty());
}

TEST(GpuQuarantineTest, WithoutALimitTheWaitNeverGivesUp) {
  // NCCL_DEVMEM_GPU_CONSUMER_TIMEOUT_MS=0: wait forever (here: until the fake finishes).
  GpuQuarantine quarantine;
  int polls = 0;
  bool gave_up = false;
  Status waited = quarantine.Wait(
      "a fake copy", "it was queued", milliseconds(0),
      [&]() -> Result<bool> { return ++polls == 5000; }, &gave_up);
  ASSERT_TRUE(waited.ok()) << waited.message();
  EXPECT_FALSE(gave_up);
  EXPECT_FALSE(quarantine.stopped_freeing());
}

TEST(GpuQuarantineTest, FailedWorkIsTheWaitsErrorNotAGiveUp) {
  // A kernel that faulted or a copy the driver refused: an error, nothing left to run, so
  // nothing to keep and no reason to stop freeing.
  GpuQuarantine quarantine;
  WarnLog warns;
  bool gave_up = false;
  Status waited = quarantine.Wait(
      "a fake copy", "it was queued", kNoGiveUp,
      []() -> Result<bool> {
        return Status::Error(ErrorKind::kSystem,
                             "cuStreamQuery (copy stream) failed: an illegal memory access was "
                             "encountered (CUresult 700)");
      },
      &gave_up);
  ASSERT_FALSE(waited.ok());
  EXPECT_EQ(waited.kind(), ErrorKind::kSystem);
  EXPECT_TRUE(Contains(waited.message(), "CUresult 700")) << waited.message();
  EXPECT_FALSE(gave_up);
  EXPECT_FALSE(quarantine.stopped_freeing());
  EXPECT_TRUE(warns.lines().empty());
}

TEST(GpuQuarantineTest, WorkPastTheLimitIsGivenUpOnWithOneWarnAndStopsEveryFree) {
  GpuQuarantine quarantine;
  WarnLog warns;
  bool gave_up = false;
  Status waited = quarantine.Wait(
      "a fake copy", "it was queued", milliseconds(1), []() -> Result<bool> { return false; },
      &gave_up);
  ASSERT_FALSE(waited.ok());
  EXPECT_TRUE(gave_up);
  EXPECT_EQ(waited.kind(), ErrorKind::kSystem);
  EXPECT_TRUE(Contains(waited.message(), "a fake copy has not finished 1 ms after it was queued"))
      << waited.message();
  EXPECT_TRUE(Contains(waited.message(), "NCCL_DEVMEM_GPU_CONSUMER_TIMEOUT_MS"))
      << waited.message();
  EXPECT_TRUE(quarantine.stopped_freeing());
  EXPECT_EQ(quarantine.give_ups(), 1u);
  const std::vector<std::string> lines = warns.lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], std::string("GPU work given up on: ").append(waited.message()));
}

TEST(GpuQuarantineTest, OverdueOnlyPastANonZeroLimit) {
  const GpuQuarantine::Clock::time_point start{};
  EXPECT_FALSE(GpuQuarantine::Overdue(start, milliseconds(300), start + milliseconds(300)));
  EXPECT_TRUE(GpuQuarantine::Overdue(start, milliseconds(300), start + milliseconds(301)));
  EXPECT_FALSE(GpuQuarantine::Overdue(start, milliseconds(0), start + std::chrono::hours(24)));
}

TEST(GpuQuarantineTest, WhatIsKeptLivesAsLongAsTheQuarantine) {
  std::weak_ptr<int> watched;
  {
    GpuQuarantine quarantine;
    auto object = std::make_shared<int>(42);
    watched = object;
    quarantine.Keep(object);
    quarantine.Keep(nullptr);  // nothing to keep: not counted
    object.reset();
    EXPECT_FALSE(watched.expired()) << "kept, but freed";
    EXPECT_EQ(quarantine.kept(), 1u);
  }
  // Only a test's own quarantine ever goes; the process's lives until exit.
  EXPECT_TRUE(watched.expired());
}

// --- The scatter consumer closing over a kernel that never runs ---------------------------------

// A scatter engine whose submissions complete only when the test says so; it tells when it is
// destroyed (freeing a real one synchronizes with its kernels).
class FakeGpuEngine final : public gpu::ScatterEngine {
 public:
  FakeGpuEngine(bool* destroyed, const bool* runs) : destroyed_(destroyed), runs_(runs) {}
  ~FakeGpuEngine() override { *destroyed_ = true; }
  Result<std::optional<gpu::ScatterTicket>> Submit(const gpu::ScatterOp*, size_t, const void*,
                                                   void*) override {
    ++submitted_;
    return std::optional<gpu::ScatterTicket>(gpu::ScatterTicket{0, submitted_});
  }
  Result<bool> Done(const gpu::ScatterTicket&) override { return *runs_; }
  Status Synchronize() override {
    return Status::Error(ErrorKind::kInternal, "Synchronize would hang: the kernel never runs");
  }
  Result<bool> Idle() override { return submitted_ == 0 || *runs_; }

 private:
  bool* destroyed_;
  const bool* runs_;
  uint64_t submitted_ = 0;
};

class StuckKernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<std::unique_ptr<HostRegion>> region = HostRegion::Create(1 << 20);
    ASSERT_TRUE(region.ok()) << region.status().message();
    region_ = std::move(region).value();
    watched_region_ = region_;
  }

  // A consumer over the region with `limit`, one message submitted to its engine.
  std::unique_ptr<KernelScatterConsumer> ConsumerWithWorkInFlight(milliseconds limit) {
    ScatterEngineFactory factory = [this](int, size_t,
                                          size_t) -> Result<std::unique_ptr<gpu::ScatterEngine>> {
      return std::unique_ptr<gpu::ScatterEngine>(new FakeGpuEngine(&engine_destroyed_, &runs_));
    };
    Result<std::unique_ptr<KernelScatterConsumer>> consumer =
        KernelScatterConsumer::Create(region_, factory, 8, FragGeometry(), limit,
                                      NicWriteOrdering::Process(), quarantine_);
    EXPECT_TRUE(consumer.ok()) << consumer.status().message();
    if (!consumer.ok()) return nullptr;
    std::vector<StreamSegment> segments = {{StreamSegment::Kind::kRegion, 4096, 3000, 1}};
    table_.Append(segments.data(), segments.size(), 0);
    tables_[0] = &table_;
    dst_.assign(3000, 0);
    HeldMessage message{tables_, 1, dst_.size(), nullptr, dst_.data()};
    Result<bool> started = consumer.value()->Start(message, &job_);
    EXPECT_TRUE(started.ok() && started.value());
    return std::move(consumer).value();
  }

  std::shared_ptr<HostRegion> region_;
  std::weak_ptr<HostRegion> watched_region_;
  bool engine_destroyed_ = false;
  bool runs_ = false;
  OffsetTable table_;
  const OffsetTable* tables_[1] = {};
  std::vector<char> dst_;
  ConsumerJob job_;
  // Last, so that it goes first: what it kept reports into the members above.
  GpuQuarantine quarantine_;
};

TEST_F(StuckKernelTest, ClosingGivesUpAndKeepsTheEngineAndTheRegionAndStopsEveryFree) {
  WarnLog warns;
  std::unique_ptr<KernelScatterConsumer> consumer = ConsumerWithWorkInFlight(milliseconds(1));
  ASSERT_NE(consumer, nullptr);
  Status drained = consumer->Drain();
  ASSERT_FALSE(drained.ok());
  EXPECT_TRUE(Contains(drained.message(),
                       "the scatter kernel work of a closing receive comm has not finished 1 ms "
                       "after close began"))
      << drained.message();
  // The policy is the process's, not the comm's: no plugin memory is freed any more.
  EXPECT_TRUE(quarantine_.stopped_freeing());
  EXPECT_EQ(quarantine_.kept(), 2u);  // the engine and the region
  // The comm goes; what its kernel may still read does not.
  consumer.reset();
  region_.reset();
  EXPECT_FALSE(engine_destroyed_) << "the engine was freed under a kernel that may still run";
  EXPECT_FALSE(watched_region_.expired()) << "the region was freed under a kernel that may read it";
  // One give-up, one WARN: the consumer's own close says nothing more.
  EXPECT_EQ(quarantine_.give_ups(), 1u);
  EXPECT_EQ(warns.lines().size(), 1u);
}

TEST_F(StuckKernelTest, AKernelThatFinishesLetsTheEngineAndRegionGoAtClose) {
  WarnLog warns;
  std::unique_ptr<KernelScatterConsumer> consumer = ConsumerWithWorkInFlight(kNoGiveUp);
  ASSERT_NE(consumer, nullptr);
  runs_ = true;  // the GPU ran the kernel
  Result<bool> finished = consumer->Finished(&job_);
  ASSERT_TRUE(finished.ok() && finished.value());
  Status drained = consumer->Drain();
  ASSERT_TRUE(drained.ok()) << drained.message();
  consumer.reset();
  region_.reset();
  EXPECT_TRUE(engine_destroyed_);
  EXPECT_TRUE(watched_region_.expired());
  EXPECT_FALSE(quarantine_.stopped_freeing());
  EXPECT_EQ(quarantine_.kept(), 0u);
  EXPECT_TRUE(warns.lines().empty());
}

}  // namespace
}  // namespace devmem
