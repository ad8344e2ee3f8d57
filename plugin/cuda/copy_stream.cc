#include "plugin/cuda/copy_stream.h"

#include <cstdlib>
#include <mutex>
#include <utility>

#include "plugin/core/log.h"
#include "plugin/cuda/cuda_driver.h"
#include "plugin/cuda/gpu_quarantine.h"

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

Result<CopyStream> CopyStream::Create(int device, std::chrono::milliseconds gpu_work_limit) {
  Result<const CudaDriver*> got = CudaDriver::Get();
  if (!got.ok()) return got.status();
  const CudaDriver* driver = got.value();
  void* context = nullptr;
  if (device >= 0) {
    Result<void*> primary = driver->PrimaryContext(device);
    if (!primary.ok()) return primary.status();
    context = primary.value();
  } else {
    Result<void*> current = driver->CurrentContext();
    if (!current.ok()) return current.status();
    context = current.value();
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
  return CopyStream(driver, context, stream, gpu_work_limit);
}

CopyStream::CopyStream(CopyStream&& other) noexcept
    : driver_(other.driver_),
      context_(other.context_),
      stream_(std::exchange(other.stream_, nullptr)),
      gpu_work_limit_(other.gpu_work_limit_),
      abandoned_(other.abandoned_) {}

CopyStream& CopyStream::operator=(CopyStream&& other) noexcept {
  if (this != &other) {
    Reset();
    driver_ = other.driver_;
    context_ = other.context_;
    stream_ = std::exchange(other.stream_, nullptr);
    gpu_work_limit_ = other.gpu_work_limit_;
    abandoned_ = other.abandoned_;
  }
  return *this;
}

CopyStream::~CopyStream() { Reset(); }

void CopyStream::Reset() {
  if (stream_ == nullptr) return;
  // Given up on, by this stream's wait or any other: the copies may still run one day, a wait
  // for them would hang and destroying the stream would not stop them (gpu_quarantine.h).
  if (abandoned_ || GpuQuarantine::Process().stopped_freeing()) {
    stream_ = nullptr;
    return;
  }
  // Whatever was queued finishes first: its host memory may be freed right after us.
  Result<ScopedDeviceContext> entered = driver_->EnterContext(context_);
  if (entered.ok()) {
    (void)WaitForQueuedCopies("it began closing");
    // Given up on just now, it stays with its copies; a failed copy leaves nothing queued.
    if (!abandoned_) (void)driver_->stream_destroy_(stream_);
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
    return Status::Error(ErrorKind::kSystem, "the copy stream was given up on by an earlier wait");
  }
  Result<ScopedDeviceContext> entered = driver_->EnterContext(context_);
  if (!entered.ok()) return entered.status();
  return WaitForQueuedCopies("it was queued");
}

Status CopyStream::WaitForQueuedCopies(const char* since) {
  // Polled (GpuQuarantine::Wait), never cuStreamSynchronize: that one cannot be given up on.
  constexpr CudaDriver::CUresult kNotReady = 600;  // CUDA_ERROR_NOT_READY
  bool gave_up = false;
  Status waited = GpuQuarantine::Process().Wait(
      "a host<->device copy on the plugin's copy stream", since, gpu_work_limit_,
      [this]() -> Result<bool> {
        const CudaDriver::CUresult result = driver_->stream_query_(stream_);
        if (result == kNotReady) return false;
        DEVMEM_RETURN_IF_ERROR(driver_->Check(result, "cuStreamQuery (copy stream)"));
        return true;
      },
      &gave_up);
  // The stream stays with its copies, never synchronized or destroyed (Reset).
  if (gave_up) abandoned_ = true;
  return waited;
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
