#include "plugin/cuda/copy_stream.h"

#include <utility>

#include "plugin/cuda/cuda_driver.h"

namespace devmem {

Result<CopyStream> CopyStream::Create(int device) {
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
  constexpr unsigned kNonBlocking = 0x1;  // CU_STREAM_NON_BLOCKING
  // The highest priority, like the scatter engine's stream (gpu/scatter_kernel.cu).
  int least = 0, greatest = 0;
  DEVMEM_RETURN_IF_ERROR(driver->Check(driver->ctx_get_stream_priority_range_(&least, &greatest),
                                       "cuCtxGetStreamPriorityRange"));
  void* stream = nullptr;
  DEVMEM_RETURN_IF_ERROR(
      driver->Check(driver->stream_create_with_priority_(&stream, kNonBlocking, greatest),
                    "cuStreamCreateWithPriority (non-blocking copy stream)"));
  return CopyStream(driver, context, stream);
}

CopyStream::CopyStream(CopyStream&& other) noexcept
    : driver_(other.driver_), context_(other.context_), stream_(std::exchange(other.stream_, nullptr)) {}

CopyStream& CopyStream::operator=(CopyStream&& other) noexcept {
  if (this != &other) {
    Reset();
    driver_ = other.driver_;
    context_ = other.context_;
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

CopyStream::~CopyStream() { Reset(); }

void CopyStream::Reset() {
  if (stream_ == nullptr) return;
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
  return driver_->Check(driver_->memcpy_htod_async_(
                            reinterpret_cast<CudaDriver::CUdeviceptr>(dst_device), src, bytes, stream_),
                        "cuMemcpyHtoDAsync");
}

Status CopyStream::EnqueueToHost(void* dst, const void* src_device, size_t bytes) {
  if (bytes == 0) return Status::Ok();
  Result<ScopedDeviceContext> entered = driver_->EnterContext(context_);
  if (!entered.ok()) return entered.status();
  return driver_->Check(driver_->memcpy_dtoh_async_(
                            dst, reinterpret_cast<CudaDriver::CUdeviceptr>(src_device), bytes, stream_),
                        "cuMemcpyDtoHAsync");
}

Status CopyStream::Wait() {
  Result<ScopedDeviceContext> entered = driver_->EnterContext(context_);
  if (!entered.ok()) return entered.status();
  return driver_->Check(driver_->stream_synchronize_(stream_), "cuStreamSynchronize (copy stream)");
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
