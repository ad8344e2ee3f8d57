// The plugin's staging copies (plugin/cuda/copy_stream.h) must complete while a kernel on
// another stream spins waiting for them, as NCCL's kernels wait for the proxy. A synchronous
// cuMemcpyHtoD on the legacy stream did not (H200, MPS, 2026-11-26: every rank hung). Skips
// without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <thread>
#include <vector>

#include "plugin/cuda/copy_stream.h"
#include "plugin/cuda/cuda_driver.h"
#include "tests/cuda/spin_kernel.h"

namespace devmem {
namespace {

constexpr uint64_t kSpinTimeoutNs = 10'000'000'000ull;  // the kernel gives up after 10 s
constexpr auto kCopyDeadline = std::chrono::seconds(5);

class CopyStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount found none)";
    }
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    ASSERT_EQ(cudaStreamCreateWithFlags(&kernel_stream_, cudaStreamNonBlocking), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&words_, 2 * sizeof(uint32_t)), cudaSuccess);
    ASSERT_EQ(cudaMemset(words_, 0, 2 * sizeof(uint32_t)), cudaSuccess);
  }
  void TearDown() override {
    if (kernel_stream_ != nullptr) {
      cudaStreamSynchronize(kernel_stream_);
      cudaStreamDestroy(kernel_stream_);
    }
    if (words_ != nullptr) cudaFree(words_);
  }

  // Spins on words_[0] == 1; words_[1] becomes 1 if it gave up.
  void StartSpinner() {
    ASSERT_EQ(testing::LaunchSpinUntil(words_, 1, kSpinTimeoutNs, words_ + 1, kernel_stream_),
              cudaSuccess);
  }
  // After the copy: the kernel must end because of it, not because it gave up.
  void ExpectSpinnerReleased() {
    ASSERT_EQ(cudaStreamSynchronize(kernel_stream_), cudaSuccess);
    uint32_t words[2] = {0, 0};
    ASSERT_EQ(cudaMemcpy(words, words_, sizeof(words), cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(words[0], 1u);
    EXPECT_EQ(words[1], 0u) << "the spinning kernel timed out: the copy did not reach it";
  }

  cudaStream_t kernel_stream_ = nullptr;
  uint32_t* words_ = nullptr;
};

// Runs `copy` on a thread of its own (as the plugin's worker or proxy thread does) and
// fails, instead of hanging, if it has not returned by the deadline.
void CopyWithDeadline(const std::function<Status()>& copy) {
  std::packaged_task<Status()> task(copy);
  std::future<Status> done = task.get_future();
  std::thread thread(std::move(task));
  const bool in_time = done.wait_for(kCopyDeadline) == std::future_status::ready;
  thread.join();  // the kernel gives up within kSpinTimeoutNs, so this ends either way
  EXPECT_TRUE(in_time) << "the copy waited for a kernel on another stream";
  Status status = done.get();
  EXPECT_TRUE(status.ok()) << status.message();
}

TEST_F(CopyStreamTest, AHostToDeviceCopyReachesAKernelSpinningOnAnotherStream) {
  StartSpinner();
  CopyWithDeadline([this] {
    // A worker thread has no context current: the stream brings its device's primary one.
    Result<CopyStream> stream = CopyStream::Create(0);
    if (!stream.ok()) return stream.status();
    static const uint32_t kOne = 1;  // pageable, like the bytes of an inline message
    return stream.value().ToDevice(words_, &kOne, sizeof(kOne));
  });
  ExpectSpinnerReleased();
}

TEST_F(CopyStreamTest, ACopyStreamOfTheCurrentContextWorksFromAnotherThreadWithNone) {
  // Created on this thread (its current context is device 0's primary, as on NCCL's proxy
  // thread), used from a thread that has no context current.
  Result<CopyStream> created = CopyStream::Create(-1);
  ASSERT_TRUE(created.ok()) << created.status().message();
  CopyStream stream = std::move(created).value();
  StartSpinner();
  CopyWithDeadline([&] {
    std::vector<uint32_t> one(1, 1);
    return stream.ToDevice(words_, one.data(), sizeof(uint32_t));
  });
  ExpectSpinnerReleased();
  uint32_t back = 0;
  Status read = stream.ToHost(&back, words_, sizeof(back));
  ASSERT_TRUE(read.ok()) << read.message();
  EXPECT_EQ(back, 1u);
}

TEST_F(CopyStreamTest, ADeviceToHostCopyDoesNotWaitForAKernelOnAnotherStream) {
  StartSpinner();
  uint32_t seen = 7;
  CopyWithDeadline([&] {
    Result<CopyStream> stream = CopyStream::Create(0);
    if (!stream.ok()) return stream.status();
    return stream.value().ToHost(&seen, words_ + 1, sizeof(seen));
  });
  EXPECT_EQ(seen, 0u);
  // Release the spinner (a copy on its own stream would queue behind it).
  Result<CopyStream> release = CopyStream::Create(0);
  ASSERT_TRUE(release.ok()) << release.status().message();
  const uint32_t one = 1;
  Status released = release.value().ToDevice(words_, &one, sizeof(one));
  ASSERT_TRUE(released.ok()) << released.message();
  ExpectSpinnerReleased();
}

}  // namespace
}  // namespace devmem
