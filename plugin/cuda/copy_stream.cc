#include "plugin/cuda/copy_stream.h"

#include <cstdlib>
#include <mutex>
#include <thread>
#include <utility>

#include "plugin/core/log.h"
#include "plugin/cuda/cuda_driver.h"

namespace devmem {

void WarnIfMpsSharesWorkQueues(int device) {
  static std::once_flag once;
  std::call_once(once, [device] {
    Result<const CudaDriver*> driver = CudaDriver::Get();
    if (!driver.ok() || device < 0) return;
    Result<bool> mps = driver.value()->MpsEnabled(device);
    if (!mps.ok() || !mps.value() || std::getenv("CUDA_DEVICE_MAX_CONNECTIONS") != nullptr) return;
    log::Warn(
        "GPU %d is shared through MPS and CUDA_DEVICE_MAX_CONNECTIONS is unset: MPS clients "
        "share one pool of hardware work queues, and the plugin's GPU work (its copies and "
        "scatter kernel) can land on the queue of NCCL's spinning kernel and never run (a "
        "receive then fails after NCCL_DEVMEM_GPU_CONSUMER_TIMEOUT_MS). Set "
        "CUDA_DEVICE_MAX_CONNECTIONS=32 for every rank (measured: perf/RESULTS.md)",
        device);
  });
}

Result<CopyStream> CopyStream::Create(int device, std::chrono::milliseconds wait_limit) {
  Result<const CudaDriver*> got = CudaDriver::Get();
  if (!got.ok()) return got.status();
  const CudaDriver* driver = got.value();
  void* context = nullptr;
  if (device >= 0) {
    Result<void*> primary = driver->PrimaryContext(device);
    if (!primary.ok()) return primary.status();
    context = primary.value();
  } else {
    DEVMEM_RETURN_IF_ERROR(driver->Check(driver->ctx_get_current_(&context), "cuCtxGetCurrent"));
    if (context == nullptr) {
      return Status::Error(ErrorKind::kInvalidUsage,
                           "a copy stream for the current context, but this thread has none");
    }
  }
  Result<ScopedDeviceContext> entered = driver->EnterContext(context);
  if (!entered.ok()) return entered.status();
  if (device >= 0) {
    WarnIfMpsSharesWorkQueues(device);
  } else if (Result<int> current = driver->CurrentDevice(); current.ok()) {
    WarnIfMpsSharesWorkQueues(current.value());
  }
  constexpr unsigned kNonBlocking = 0x1;  // CU_STREAM_NON_BLOCKING
  // The highest priority, like the scatter engine's stream (gpu/scatter_kernel.cu).
  int least = 0, greatest = 0;
  DEVMEM_RETURN_IF_ERROR(driver->Check(driver->ctx_get_stream_priority_range_(&least, &greatest),
                                       "cuCtxGetStreamPriorityRange"));
  void* stream = nullptr;
  DEVMEM_RETURN_IF_ERROR(
      driver->Check(driver->stream_create_with_priority_(&stream, kNonBlocking, greatest),
                    "cuStreamCreateWithPriority (non-blocking copy stream)"));
  return CopyStream(driver, context, stream, wait_limit);
}

CopyStream::CopyStream(CopyStream&& other) noexcept
    : driver_(other.driver_),
      context_(other.context_),
      stream_(std::exchange(other.stream_, nullptr)),
      wait_limit_(other.wait_limit_),
      abandoned_(other.abandoned_) {}

CopyStream& CopyStream::operator=(CopyStream&& other) noexcept {
  if (this != &other) {
    Reset();
    driver_ = other.driver_;
    context_ = other.context_;
    stream_ = std::exchange(other.stream_, nullptr);
    wait_limit_ = other.wait_limit_;
    abandoned_ = other.abandoned_;
  }
  return *this;
}

CopyStream::~CopyStream() { Reset(); }

void CopyStream::Reset() {
  if (stream_ == nullptr) return;
  if (abandoned_) {  // synchronizing would hang; destroying it would not stop its copies
    stream_ = nullptr;
    return;
  }
  // Whatever was queued finishes first: its host memory may be freed right after us.
  Result<ScopedDeviceContext> entered = driver_->EnterContext(context_);
  if (entered.ok()) {
    (void)driver_->stream_synchronize_(stream_);
    (void)driver_->stream_destroy_(stream_);
  }
  stream_ = nullptr;
}

Status CopyStream::EnqueueToDevice(void* dst_device, const void* src, size_t bytes) {
  if (bytes == 0) return Status::Ok();
  Result<ScopedDeviceContext> entered = driver_->EnterContext(context_);
  if (!entered.ok()) return entered.status();
  return driver_->Check(
      driver_->memcpy_htod_async_(reinterpret_cast<CudaDriver::CUdeviceptr>(dst_device), src, bytes,
                                  stream_),
      "cuMemcpyHtoDAsync");
}

Status CopyStream::EnqueueToHost(void* dst, const void* src_device, size_t bytes) {
  if (bytes == 0) return Status::Ok();
  Result<ScopedDeviceContext> entered = driver_->EnterContext(context_);
  if (!entered.ok()) return entered.status();
  return driver_->Check(
      driver_->memcpy_dtoh_async_(dst, reinterpret_cast<CudaDriver::CUdeviceptr>(src_device), bytes,
                                  stream_),
      "cuMemcpyDtoHAsync");
}

Status CopyStream::Wait() {
  if (abandoned_) {
    return Status::Error(ErrorKind::kSystem, "the copy stream was abandoned by an earlier wait");
  }
  Result<ScopedDeviceContext> entered = driver_->EnterContext(context_);
  if (!entered.ok()) return entered.status();
  if (wait_limit_.count() == 0) {
    return driver_->Check(driver_->stream_synchronize_(stream_),
                          "cuStreamSynchronize (copy stream)");
  }
  // Polled, not cuStreamSynchronize: that one cannot be given up on. Small copies finish in
  // microseconds, so the first polls only yield; the clock is read every 64 polls.
  constexpr CudaDriver::CUresult kNotReady = 600;  // CUDA_ERROR_NOT_READY
  const auto deadline = std::chrono::steady_clock::now() + wait_limit_;
  for (uint64_t polls = 1;; ++polls) {
    const CudaDriver::CUresult result = driver_->stream_query_(stream_);
    if (result != kNotReady) return driver_->Check(result, "cuStreamQuery (copy stream)");
    if (polls % 64 == 0) {
      if (std::chrono::steady_clock::now() >= deadline) break;
      if (polls >= 4096) std::this_thread::sleep_for(std::chrono::microseconds(50));
    } else {
      std::this_thread::yield();
    }
  }
  abandoned_ = true;
  CudaDriver::AbandonGpuWork();
  return Status::Error(
      ErrorKind::kSystem,
      "a host<->device copy on the plugin's copy stream has not finished %lld ms after it was "
      "queued: the plugin's GPU work is not running (seen when its stream shares a hardware "
      "work queue with NCCL's spinning kernel: MPS clients share one pool, "
      "CUDA_DEVICE_MAX_CONNECTIONS). The stream and, from now on, the plugin's GPU and pinned "
      "memory are leaked rather than freed under it; the limit is "
      "NCCL_DEVMEM_GPU_CONSUMER_TIMEOUT_MS",
      static_cast<long long>(wait_limit_.count()));
}

Status CopyStream::ToDevice(void* dst_device, const void* src, size_t bytes) {
  DEVMEM_RETURN_IF_ERROR(EnqueueToDevice(dst_device, src, bytes));
  return Wait();
}

Status CopyStream::ToHost(void* dst, const void* src_device, size_t bytes) {
  DEVMEM_RETURN_IF_ERROR(EnqueueToHost(dst, src_device, bytes));
  return Wait();
}

}  // namespace devmem
