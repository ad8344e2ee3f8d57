#include "gpu/device_context.h"

#include <cudaTypedefs.h>

namespace devmem::gpu {
namespace {

// The driver ABI the PFN types below describe (cuCtxPushCurrent_v2, cuDevicePrimaryCtxRelease_v2,
// ...). Any driver that runs this CUDA 13 runtime provides it.
constexpr unsigned int kDriverAbiVersion = 12000;

struct DriverEntryPoints {
  PFN_cuInit_v2000 init = nullptr;
  PFN_cuDeviceGet_v2000 device_get = nullptr;
  PFN_cuDevicePrimaryCtxRetain_v7000 primary_ctx_retain = nullptr;
  PFN_cuDevicePrimaryCtxRelease_v11000 primary_ctx_release = nullptr;
  PFN_cuCtxPushCurrent_v4000 ctx_push_current = nullptr;
  PFN_cuCtxPopCurrent_v4000 ctx_pop_current = nullptr;
  PFN_cuGetErrorName_v6000 get_error_name = nullptr;
};

template <typename Fn>
Status Resolve(const char* symbol, Fn* fn) {
  void* address = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
  const cudaError_t err = cudaGetDriverEntryPointByVersion(symbol, &address, kDriverAbiVersion,
                                                           cudaEnableDefault, &found);
  DEVMEM_RETURN_IF_ERROR(CudaCheck(err, symbol));
  if (found != cudaDriverEntryPointSuccess || address == nullptr) {
    return Status::Error(ErrorKind::kSystem,
                         "the CUDA driver has no %s (ABI %u, lookup result %d): driver too old",
                         symbol, kDriverAbiVersion, static_cast<int>(found));
  }
  *fn = reinterpret_cast<Fn>(address);
  return Status::Ok();
}

Result<DriverEntryPoints> ResolveDriver() {
  DriverEntryPoints driver;
  DEVMEM_RETURN_IF_ERROR(Resolve("cuInit", &driver.init));
  DEVMEM_RETURN_IF_ERROR(Resolve("cuDeviceGet", &driver.device_get));
  DEVMEM_RETURN_IF_ERROR(Resolve("cuDevicePrimaryCtxRetain", &driver.primary_ctx_retain));
  DEVMEM_RETURN_IF_ERROR(Resolve("cuDevicePrimaryCtxRelease", &driver.primary_ctx_release));
  DEVMEM_RETURN_IF_ERROR(Resolve("cuCtxPushCurrent", &driver.ctx_push_current));
  DEVMEM_RETURN_IF_ERROR(Resolve("cuCtxPopCurrent", &driver.ctx_pop_current));
  DEVMEM_RETURN_IF_ERROR(Resolve("cuGetErrorName", &driver.get_error_name));
  return driver;
}

// Resolved once per process (thread-safe static initialization), read-only afterwards, and
// never destroyed: an engine freed by another static destructor at exit still reaches it.
Result<DriverEntryPoints>& Driver() {
  static auto* const driver = new Result<DriverEntryPoints>(ResolveDriver());
  return *driver;
}

Status CuCheck(CUresult result, const char* what) {
  if (result == CUDA_SUCCESS) return Status::Ok();
  const char* name = nullptr;
  if (Driver().ok() && Driver()->get_error_name(result, &name) != CUDA_SUCCESS) name = nullptr;
  return Status::Error(ErrorKind::kSystem, "%s: CUDA driver error %d (%s)", what,
                       static_cast<int>(result), name != nullptr ? name : "unknown");
}

}  // namespace

Status CudaCheck(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::Ok();
  (void)cudaGetLastError();
  return Status::Error(ErrorKind::kSystem, "%s: %s (%s)", what, cudaGetErrorString(err),
                       cudaGetErrorName(err));
}

PrimaryContext::~PrimaryContext() {
  if (context_ != nullptr) (void)Driver()->primary_ctx_release(device_);
}

Status PrimaryContext::Retain(int device) {
  if (context_ != nullptr) {
    return Status::Error(ErrorKind::kInternal, "primary context of GPU %d retained twice", device);
  }
  Result<DriverEntryPoints>& driver = Driver();
  if (!driver.ok()) return driver.status();
  DEVMEM_RETURN_IF_ERROR(CuCheck(driver->init(0), "cuInit"));
  CUdevice handle = 0;
  DEVMEM_RETURN_IF_ERROR(CuCheck(driver->device_get(&handle, device), "cuDeviceGet"));
  CUcontext context = nullptr;
  DEVMEM_RETURN_IF_ERROR(
      CuCheck(driver->primary_ctx_retain(&context, handle), "cuDevicePrimaryCtxRetain"));
  device_ = handle;
  context_ = context;
  return Status::Ok();
}

ScopedContext::ScopedContext(const PrimaryContext& context) {
  if (context.get() == nullptr) {
    status_ = Status::Error(ErrorKind::kInternal, "the scatter engine has no CUDA context");
    return;
  }
  // A retained context means the entry points resolved.
  DriverEntryPoints& driver = Driver().value();
  status_ = CuCheck(driver.ctx_push_current(context.get()), "cuCtxPushCurrent");
  if (!status_.ok()) return;
  pushed_ = true;
  saved_mode_ = cudaStreamCaptureModeRelaxed;
  status_ = CudaCheck(cudaThreadExchangeStreamCaptureMode(&saved_mode_),
                      "relaxing the stream capture mode");
  mode_exchanged_ = status_.ok();
}

ScopedContext::~ScopedContext() {
  if (mode_exchanged_) (void)cudaThreadExchangeStreamCaptureMode(&saved_mode_);
  if (pushed_) {
    CUcontext popped = nullptr;
    (void)Driver()->ctx_pop_current(&popped);
  }
}

}  // namespace devmem::gpu
