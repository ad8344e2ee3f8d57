// The scatter kernel engine on a real GPU: the kernel against the host reference (random tables
// of 1 to 100k frags, unaligned offsets and lengths, receives from 1 B to 64 MiB); a busy
// result, not a failure, when every slot is in flight; an error, not a reallocation, past
// max_ops; and every call leaving the calling thread's CUDA context and stream capture mode as
// it found them (no context, an own context as under NCCL_CREATE_THREAD_CONTEXT=1, a global
// graph capture on another thread). Skips without a GPU.
#include <cuda.h>  // CU_STREAM_CAPTURE_MODE_* only: every driver call goes through CudaDriver
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gpu/scatter_engine.h"
#include "gpu/scatter_plan.h"
#include "plugin/cuda/cuda_driver.h"

namespace devmem::gpu {
namespace {

constexpr size_t kMaxOps = 1 << 17;
constexpr size_t kSlots = 4;

// Device memory owned by a test.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) {
    if (cudaMalloc(&ptr_, bytes) != cudaSuccess) ptr_ = nullptr;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) (void)cudaFree(ptr_);
  }
  char* get() const { return static_cast<char*>(ptr_); }

 private:
  void* ptr_ = nullptr;
};

// Submits, waiting out back-pressure: after Synchronize every slot is free.
Result<ScatterTicket> SubmitWaiting(ScatterEngine& engine, const ScatterOp* ops, size_t count,
                                    const void* region, void* dst) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    Result<std::optional<ScatterTicket>> ticket = engine.Submit(ops, count, region, dst);
    if (!ticket.ok()) return ticket.status();
    if (ticket.value().has_value()) return *ticket.value();
    DEVMEM_RETURN_IF_ERROR(engine.Synchronize());
  }
  return Status::Error(ErrorKind::kInternal, "busy right after Synchronize");
}

class ScatterKernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
      GTEST_SKIP() << "no CUDA device: " << (err != cudaSuccess ? cudaGetErrorString(err) : "0");
    }
    devices_ = count;
    Result<std::unique_ptr<ScatterEngine>> engine = CreateCudaScatterEngine(0, kMaxOps, kSlots);
    ASSERT_TRUE(engine.ok()) << engine.status().message();
    engine_ = std::move(engine).value();
  }

  // Builds a random table that fills `total` destination bytes from a region of frags.
  void RunRandom(uint64_t total, uint32_t max_frag, bool aligned, uint64_t seed) {
    std::mt19937_64 rng(seed);
    const uint64_t region_bytes = std::max<uint64_t>(total * 2, 1 << 20);
    std::vector<char> region(region_bytes);
    for (char& c : region) c = static_cast<char>(rng());
    std::vector<ScatterEntry> entries;
    uint64_t dst = 0;
    while (dst < total) {
      uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(1 + rng() % max_frag, total - dst));
      uint64_t src = rng() % (region_bytes - len);
      if (aligned) src &= ~uint64_t{15};
      entries.push_back({src, dst, len});
      dst += len;
    }
    std::vector<ScatterOp> ops;
    BuildScatterPlan(entries, &ops);
    std::vector<char> expected(total), actual(total);
    ExecuteScatterPlanOnHost(ops.data(), ops.size(), region.data(), expected.data());

    DeviceBuffer d_region(region_bytes);
    DeviceBuffer d_dst(total + 1);
    ASSERT_NE(d_region.get(), nullptr);
    ASSERT_NE(d_dst.get(), nullptr);
    ASSERT_EQ(cudaMemcpy(d_region.get(), region.data(), region_bytes, cudaMemcpyHostToDevice),
              cudaSuccess);
    ASSERT_EQ(cudaMemset(d_dst.get(), 0, total + 1), cudaSuccess);
    for (size_t first = 0; first < ops.size(); first += kMaxOps) {
      const size_t n = std::min(kMaxOps, ops.size() - first);
      Result<ScatterTicket> ticket =
          SubmitWaiting(*engine_, ops.data() + first, n, d_region.get(), d_dst.get());
      ASSERT_TRUE(ticket.ok()) << ticket.status().message();
    }
    ASSERT_TRUE(engine_->Synchronize().ok());
    ASSERT_EQ(cudaMemcpy(actual.data(), d_dst.get(), total, cudaMemcpyDeviceToHost), cudaSuccess);
    char guard = 1;
    ASSERT_EQ(cudaMemcpy(&guard, d_dst.get() + total, 1, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(guard, 0) << "wrote past the destination";
    EXPECT_TRUE(actual == expected) << "total " << total << " frags " << entries.size();
  }

  int devices_ = 0;
  std::unique_ptr<ScatterEngine> engine_;
};

TEST_F(ScatterKernelTest, OneByte) { RunRandom(1, 1, false, 1); }
TEST_F(ScatterKernelTest, UnalignedSmallFrags) { RunRandom(1 << 20, 100, false, 2); }
TEST_F(ScatterKernelTest, AlignedPageFrags) { RunRandom(8 << 20, 4096, true, 3); }
TEST_F(ScatterKernelTest, HundredThousandFrags) { RunRandom(100000ull * 20, 40, false, 4); }
TEST_F(ScatterKernelTest, SixtyFourMiBWithMegabyteFrags) { RunRandom(64 << 20, 3 << 20, false, 5); }

TEST_F(ScatterKernelTest, DoneTurnsTrueOnlyAfterTheKernel) {
  const size_t bytes = 256 << 20;
  DeviceBuffer d_region(bytes);
  DeviceBuffer d_dst(bytes);
  ASSERT_NE(d_region.get(), nullptr);
  ASSERT_NE(d_dst.get(), nullptr);
  std::vector<ScatterEntry> entries = {{0, 0, static_cast<uint32_t>(bytes - 1)}};
  std::vector<ScatterOp> ops;
  BuildScatterPlan(entries, &ops);
  Result<std::optional<ScatterTicket>> ticket =
      engine_->Submit(ops.data(), ops.size(), d_region.get(), d_dst.get());
  ASSERT_TRUE(ticket.ok()) << ticket.status().message();
  ASSERT_TRUE(ticket.value().has_value()) << "a fresh engine has free slots";
  // Wait through Done() only; once it says true the stream has passed the kernel.
  Result<bool> done = false;
  while ((done = engine_->Done(*ticket.value())).ok() && !done.value()) {
  }
  ASSERT_TRUE(done.ok()) << done.status().message();
  cudaStream_t probe;
  ASSERT_EQ(cudaStreamCreate(&probe), cudaSuccess);
  EXPECT_EQ(cudaStreamQuery(probe), cudaSuccess);
  cudaStreamDestroy(probe);
}

TEST_F(ScatterKernelTest, AllSlotsInFlightIsBusyNotAFailureAndClearsAsTheyFinish) {
  // Two slots, each submission a 256 MiB byte-wise copy (source odd, destination 16-aligned):
  // milliseconds of kernel against microseconds between submissions.
  constexpr size_t kBytes = 256 << 20;
  constexpr uint32_t kOpBytes = 64 << 10;
  Result<std::unique_ptr<ScatterEngine>> created = CreateCudaScatterEngine(0, 4096, 2);
  ASSERT_TRUE(created.ok()) << created.status().message();
  std::unique_ptr<ScatterEngine> engine = std::move(created).value();
  std::vector<char> region(kBytes + 16);
  std::mt19937_64 rng(7);
  for (char& c : region) c = static_cast<char>(rng());
  DeviceBuffer d_region(region.size());
  DeviceBuffer d_dst(kBytes);
  ASSERT_NE(d_region.get(), nullptr);
  ASSERT_NE(d_dst.get(), nullptr);
  ASSERT_EQ(cudaMemcpy(d_region.get(), region.data(), region.size(), cudaMemcpyHostToDevice),
            cudaSuccess);
  std::vector<ScatterOp> ops;
  for (uint64_t at = 0; at < kBytes; at += kOpBytes) ops.push_back({at + 1, at, kOpBytes, 0});

  std::vector<ScatterTicket> tickets;
  bool busy = false;
  for (int i = 0; i < 100 && !busy; ++i) {
    Result<std::optional<ScatterTicket>> ticket =
        engine->Submit(ops.data(), ops.size(), d_region.get(), d_dst.get());
    ASSERT_TRUE(ticket.ok()) << "busy must not be an error: " << ticket.status().message();
    if (ticket.value().has_value()) {
      tickets.push_back(*ticket.value());
    } else {
      ASSERT_GE(tickets.size(), 2u) << "busy with a free slot";
      busy = true;
    }
  }
  ASSERT_TRUE(busy) << "100 submissions never found both slots in flight";
  // The next slot holds the oldest submission still in flight; once Done says it finished,
  // Submit takes that slot again.
  const ScatterTicket oldest = tickets[tickets.size() - 2];
  Result<bool> done = false;
  while ((done = engine->Done(oldest)).ok() && !done.value()) {
  }
  ASSERT_TRUE(done.ok()) << done.status().message();
  Result<std::optional<ScatterTicket>> again =
      engine->Submit(ops.data(), ops.size(), d_region.get(), d_dst.get());
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_TRUE(again.value().has_value());
  ASSERT_TRUE(engine->Synchronize().ok());
  std::vector<char> actual(kBytes);
  ASSERT_EQ(cudaMemcpy(actual.data(), d_dst.get(), kBytes, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_TRUE(std::equal(actual.begin(), actual.end(), region.begin() + 1));
}

TEST_F(ScatterKernelTest, MoreOpsThanMaxOpsIsAnInvalidUsageError) {
  Result<std::unique_ptr<ScatterEngine>> created = CreateCudaScatterEngine(0, 16, 2);
  ASSERT_TRUE(created.ok()) << created.status().message();
  std::unique_ptr<ScatterEngine> engine = std::move(created).value();
  DeviceBuffer d_region(4096);
  DeviceBuffer d_dst(4096);
  ASSERT_NE(d_region.get(), nullptr);
  ASSERT_NE(d_dst.get(), nullptr);
  std::vector<ScatterOp> ops;
  for (uint64_t i = 0; i < 17; ++i) ops.push_back({i * 64, i * 64, 64, 0});
  Result<std::optional<ScatterTicket>> over =
      engine->Submit(ops.data(), ops.size(), d_region.get(), d_dst.get());
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().kind(), ErrorKind::kInvalidUsage);
  EXPECT_NE(over.status().message().find("max_ops"), std::string::npos) << over.status().message();
  // Nothing changed: the engine still takes max_ops ops.
  Result<std::optional<ScatterTicket>> at_max =
      engine->Submit(ops.data(), 16, d_region.get(), d_dst.get());
  ASSERT_TRUE(at_max.ok()) << at_max.status().message();
  EXPECT_TRUE(at_max.value().has_value());
  EXPECT_TRUE(engine->Synchronize().ok());
}

TEST_F(ScatterKernelTest, CreateRejectsADeviceThisProcessDoesNotSee) {
  for (int device : {-1, devices_}) {
    Result<std::unique_ptr<ScatterEngine>> engine = CreateCudaScatterEngine(device, 16, 2);
    ASSERT_FALSE(engine.ok()) << "GPU " << device;
    EXPECT_EQ(engine.status().kind(), ErrorKind::kInvalidArgument);
  }
}

// The thread's CUDA state, observed and set up through the plugin's one driver layer
// (plugin/cuda/cuda_driver.h). The driver's capture-mode call, not
// cudaThreadExchangeStreamCaptureMode: the runtime call makes the primary context current on a
// thread that has none (seen on the H200, CUDA 13.0, driver 580), which is exactly what these
// tests must observe the engine not doing.
constexpr int kCaptureRelaxed = CU_STREAM_CAPTURE_MODE_RELAXED;
constexpr int kCaptureGlobal = CU_STREAM_CAPTURE_MODE_GLOBAL;
constexpr int kCaptureThreadLocal = CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;

const CudaDriver* Driver() {
  Result<const CudaDriver*> driver = CudaDriver::Get();
  return driver.ok() ? driver.value() : nullptr;
}

void* CurrentContext(const CudaDriver& driver) {
  Result<void*> context = driver.CurrentContext();
  EXPECT_TRUE(context.ok()) << context.status().message();
  return context.ok() ? context.value() : nullptr;
}

int CurrentCaptureMode(const CudaDriver& driver) {
  int mode = kCaptureRelaxed;
  EXPECT_TRUE(driver.ExchangeStreamCaptureMode(&mode).ok());  // mode: the old one
  int restore = mode;
  EXPECT_TRUE(driver.ExchangeStreamCaptureMode(&restore).ok());
  return mode;
}

// Every engine entry point on this thread, calling `check(step)` after each.
void ExerciseEngine(char* region, char* dst, const std::function<void(const char*)>& check) {
  Result<std::unique_ptr<ScatterEngine>> created = CreateCudaScatterEngine(0, 64, 2);
  ASSERT_TRUE(created.ok()) << created.status().message();
  std::unique_ptr<ScatterEngine> engine = std::move(created).value();
  check("create");
  std::vector<ScatterOp> ops = {{3, 0, 4000, 0}, {5000, 4000, 96, 0}};
  Result<std::optional<ScatterTicket>> ticket = engine->Submit(ops.data(), ops.size(), region, dst);
  ASSERT_TRUE(ticket.ok()) << ticket.status().message();
  ASSERT_TRUE(ticket.value().has_value());
  check("submit");
  Result<bool> done = false;
  while ((done = engine->Done(*ticket.value())).ok() && !done.value()) {
  }
  ASSERT_TRUE(done.ok()) << done.status().message();
  check("done");
  ASSERT_TRUE(engine->Synchronize().ok());
  check("synchronize");
  engine.reset();
  check("destroy");
}

TEST_F(ScatterKernelTest, EveryCallLeavesTheThreadsContextAndCaptureModeAsItFoundThem) {
  const CudaDriver* driver = Driver();
  ASSERT_NE(driver, nullptr) << "the CUDA driver did not load";
  DeviceBuffer region(8192);
  DeviceBuffer dst(8192);
  ASSERT_NE(region.get(), nullptr);
  ASSERT_NE(dst.get(), nullptr);

  // A thread with no context current: it must still have none (no fallback to device 0).
  std::thread([&] {
    ASSERT_EQ(CurrentContext(*driver), nullptr) << "a new thread starts with no context";
    int mode = kCaptureThreadLocal;
    ASSERT_TRUE(driver->ExchangeStreamCaptureMode(&mode).ok());
    ASSERT_EQ(CurrentContext(*driver), nullptr) << "setting the capture mode made one current";
    ExerciseEngine(region.get(), dst.get(), [&](const char* step) {
      EXPECT_EQ(CurrentContext(*driver), nullptr) << step;
      EXPECT_EQ(CurrentCaptureMode(*driver), kCaptureThreadLocal) << step;
    });
  }).join();

  // A thread in a context of its own, as NCCL's proxy thread with NCCL_CREATE_THREAD_CONTEXT=1.
  std::thread([&] {
    Result<void*> own = driver->CreateOwnContext(0);  // and makes it current
    ASSERT_TRUE(own.ok()) << own.status().message();
    ExerciseEngine(region.get(), dst.get(), [&](const char* step) {
      EXPECT_EQ(CurrentContext(*driver), own.value()) << step;
      EXPECT_EQ(CurrentCaptureMode(*driver), kCaptureGlobal) << step;
    });
    Status destroyed = driver->DestroyContext(own.value());
    EXPECT_TRUE(destroyed.ok()) << destroyed.message();
  }).join();
}

TEST_F(ScatterKernelTest, AGlobalGraphCaptureOnAnotherThreadDoesNotFailTheEngine) {
  DeviceBuffer region(8192);
  DeviceBuffer dst(8192);
  ASSERT_NE(region.get(), nullptr);
  ASSERT_NE(dst.get(), nullptr);
  cudaStream_t capturing = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&capturing, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(capturing, cudaStreamCaptureModeGlobal), cudaSuccess);
  // Allocation, stream creation and frees of the engine, while the capture goes on.
  std::thread([&] { ExerciseEngine(region.get(), dst.get(), [](const char*) {}); }).join();
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(capturing, &graph), cudaSuccess);
  if (graph != nullptr) cudaGraphDestroy(graph);
  cudaStreamDestroy(capturing);
}

}  // namespace
}  // namespace devmem::gpu
