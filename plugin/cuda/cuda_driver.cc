#include "plugin/cuda/cuda_driver.h"

#include <dlfcn.h>

#include <cctype>
#include <mutex>

#include "plugin/cuda/gpu_quarantine.h"

namespace devmem {
namespace {

template <typename Fn>
bool Resolve(void* lib, const char* name, Fn* out) {
  *out = reinterpret_cast<Fn>(dlsym(lib, name));
  return *out != nullptr;
}

}  // namespace

Result<const CudaDriver*> CudaDriver::Get() {
  static std::once_flag once;
  static CudaDriver* driver = nullptr;
  static Status failure;
  std::call_once(once, [] {
    // Never dlclose()d: the driver keeps process-wide state that outlives any comm.
    void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* why = dlerror();
      failure = Status::Error(ErrorKind::kSystem, "cannot load libcuda.so.1 (%s)",
                              why != nullptr ? why : "unknown");
      return;
    }
    auto* candidate = new CudaDriver();  // NOLINT: process lifetime, intentionally leaked
    bool ok =
        Resolve(lib, "cuInit", &candidate->init_) &&
        Resolve(lib, "cuMemHostAlloc", &candidate->mem_host_alloc_) &&
        Resolve(lib, "cuMemFreeHost", &candidate->mem_free_host_) &&
        Resolve(lib, "cuMemcpyDtoHAsync_v2", &candidate->memcpy_dtoh_async_) &&
        Resolve(lib, "cuMemcpyHtoDAsync_v2", &candidate->memcpy_htod_async_) &&
        Resolve(lib, "cuStreamCreateWithPriority", &candidate->stream_create_with_priority_) &&
        Resolve(lib, "cuCtxGetStreamPriorityRange", &candidate->ctx_get_stream_priority_range_) &&
        Resolve(lib, "cuStreamDestroy_v2", &candidate->stream_destroy_) &&
        Resolve(lib, "cuStreamSynchronize", &candidate->stream_synchronize_) &&
        Resolve(lib, "cuStreamQuery", &candidate->stream_query_) &&
        Resolve(lib, "cuGetErrorString", &candidate->get_error_string_) &&
        Resolve(lib, "cuDeviceGetCount", &candidate->device_get_count_) &&
        Resolve(lib, "cuDeviceGet", &candidate->device_get_) &&
        Resolve(lib, "cuDeviceGetAttribute", &candidate->device_get_attribute_) &&
        Resolve(lib, "cuDeviceGetPCIBusId", &candidate->device_get_pci_bus_id_) &&
        Resolve(lib, "cuDevicePrimaryCtxRetain", &candidate->primary_ctx_retain_) &&
        Resolve(lib, "cuCtxPushCurrent_v2", &candidate->ctx_push_current_) &&
        Resolve(lib, "cuCtxPopCurrent_v2", &candidate->ctx_pop_current_) &&
        Resolve(lib, "cuThreadExchangeStreamCaptureMode", &candidate->exchange_capture_mode_) &&
        Resolve(lib, "cuCtxGetCurrent", &candidate->ctx_get_current_) &&
        Resolve(lib, "cuCtxGetDevice", &candidate->ctx_get_device_) &&
        Resolve(lib, "cuMemAlloc_v2", &candidate->mem_alloc_) &&
        Resolve(lib, "cuMemFree_v2", &candidate->mem_free_);
    Resolve(lib, "cuMemGetHandleForAddressRange", &candidate->get_handle_for_address_range_);
    Resolve(lib, "cuMemGetAddressRange_v2", &candidate->mem_get_address_range_);
    Resolve(lib, "cuPointerGetAttribute", &candidate->pointer_get_attribute_);
    Resolve(lib, "cuFlushGPUDirectRDMAWrites", &candidate->flush_gpu_direct_rdma_writes_);
    Resolve(lib, "cuCtxCreate_v3", &candidate->ctx_create_v3_);
    Resolve(lib, "cuCtxDestroy_v2", &candidate->ctx_destroy_);
    if (!ok) {
      failure = Status::Error(ErrorKind::kSystem, "libcuda.so.1 lacks a required entry point");
      delete candidate;
      return;
    }
    if (Status status = candidate->Check(candidate->init_(0), "cuInit"); !status.ok()) {
      failure = status;
      delete candidate;
      return;
    }
    driver = candidate;
  });
  if (driver == nullptr) return failure;
  return static_cast<const CudaDriver*>(driver);
}

Status CudaDriver::Check(CUresult result, const char* call) const {
  if (result == 0) return Status::Ok();
  const char* text = nullptr;
  if (get_error_string_ == nullptr || get_error_string_(result, &text) != 0 || text == nullptr) {
    text = "unknown CUDA error";
  }
  return Status::Error(ErrorKind::kSystem, "%s failed: %s (CUresult %d)", call, text, result);
}

Status CudaDriver::HostAlloc(size_t bytes, void** out) const {
  constexpr unsigned kPortable = 0x01;   // CU_MEMHOSTALLOC_PORTABLE: usable from any context
  constexpr unsigned kDeviceMap = 0x02;  // CU_MEMHOSTALLOC_DEVICEMAP: kernels may read/write it
  return Check(mem_host_alloc_(out, bytes, kPortable | kDeviceMap), "cuMemHostAlloc");
}

void CudaDriver::HostFree(void* ptr) const {
  if (!GpuQuarantine::Process().stopped_freeing()) mem_free_host_(ptr);
}

}  // namespace devmem

namespace devmem {

Result<int> CudaDriver::DeviceCount() const {
  int count = 0;
  DEVMEM_RETURN_IF_ERROR(Check(device_get_count_(&count), "cuDeviceGetCount"));
  return count;
}

Result<int> CudaDriver::DeviceAttribute(int ordinal, int attribute, const char* name) const {
  int device = 0;
  DEVMEM_RETURN_IF_ERROR(Check(device_get_(&device, ordinal), "cuDeviceGet"));
  int value = 0;
  const std::string call = std::string("cuDeviceGetAttribute(") + name + ")";
  DEVMEM_RETURN_IF_ERROR(Check(device_get_attribute_(&value, attribute, device), call.c_str()));
  return value;
}

Result<bool> CudaDriver::DmaBufSupported(int ordinal) const {
  constexpr int kDmaBufSupported = 124;  // CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED
  Result<int> value = DeviceAttribute(ordinal, kDmaBufSupported, "DMA_BUF_SUPPORTED");
  if (!value.ok()) return value.status();
  return value.value() != 0;
}

Result<bool> CudaDriver::MpsEnabled(int ordinal) const {
  constexpr int kMpsEnabled = 133;  // CU_DEVICE_ATTRIBUTE_MPS_ENABLED
  Result<int> value = DeviceAttribute(ordinal, kMpsEnabled, "MPS_ENABLED");
  if (!value.ok()) return value.status();
  return value.value() != 0;
}

Result<std::string> CudaDriver::PciBusId(int ordinal) const {
  int device = 0;
  DEVMEM_RETURN_IF_ERROR(Check(device_get_(&device, ordinal), "cuDeviceGet"));
  char id[64] = {};
  DEVMEM_RETURN_IF_ERROR(
      Check(device_get_pci_bus_id_(id, sizeof(id), device), "cuDeviceGetPCIBusId"));
  std::string text = id;
  for (char& c : text) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  // CUDA prints an 8-digit domain ("00000000:3b:00.0"); sysfs uses 4.
  if (text.size() > 12 && text.find(':') == 8) text = text.substr(4);
  return text;
}

}  // namespace devmem

namespace devmem {

Result<void*> CudaDriver::PrimaryContext(int ordinal) const {
  constexpr int kMaxDevices = 64;
  static std::mutex mutex;
  static void* contexts[kMaxDevices] = {};
  if (ordinal < 0 || ordinal >= kMaxDevices) {
    return Status::Error(ErrorKind::kInvalidArgument, "CUDA device %d out of range", ordinal);
  }
  std::lock_guard<std::mutex> lock(mutex);
  if (contexts[ordinal] == nullptr) {
    int device = 0;
    DEVMEM_RETURN_IF_ERROR(Check(device_get_(&device, ordinal), "cuDeviceGet"));
    // Retained for the life of the process: worker and proxy threads share it, and releasing
    // it could tear down the context under NCCL.
    DEVMEM_RETURN_IF_ERROR(
        Check(primary_ctx_retain_(&contexts[ordinal], device), "cuDevicePrimaryCtxRetain"));
  }
  return contexts[ordinal];
}

Result<ScopedDeviceContext> CudaDriver::EnterDevice(int ordinal) const {
  Result<void*> context = PrimaryContext(ordinal);
  if (!context.ok()) return context.status();
  return EnterContext(context.value());
}

Result<ScopedDeviceContext> CudaDriver::EnterContext(void* context) const {
  DEVMEM_RETURN_IF_ERROR(Check(ctx_push_current_(context), "cuCtxPushCurrent"));
  constexpr int kCaptureModeRelaxed = 2;  // CU_STREAM_CAPTURE_MODE_RELAXED
  int mode = kCaptureModeRelaxed;
  if (exchange_capture_mode_(&mode) != 0) mode = -1;  // nothing to restore
  return ScopedDeviceContext(this, mode);
}

ScopedDeviceContext::ScopedDeviceContext(ScopedDeviceContext&& other) noexcept
    : driver_(other.driver_), capture_mode_(other.capture_mode_) {
  other.driver_ = nullptr;
}

ScopedDeviceContext::~ScopedDeviceContext() {
  if (driver_ == nullptr) return;
  if (capture_mode_ >= 0) driver_->exchange_capture_mode_(&capture_mode_);
  void* popped = nullptr;
  driver_->ctx_pop_current_(&popped);
}

Result<int> CudaDriver::CurrentDevice() const {
  int device = -1;
  DEVMEM_RETURN_IF_ERROR(Check(ctx_get_device_(&device), "cuCtxGetDevice"));
  return device;
}

Status CudaDriver::Allocate(size_t bytes, CUdeviceptr* out) const {
  return Check(mem_alloc_(out, bytes), "cuMemAlloc");
}

void CudaDriver::Free(CUdeviceptr ptr) const {
  if (!GpuQuarantine::Process().stopped_freeing()) mem_free_(ptr);
}

Result<void*> CudaDriver::CurrentContext() const {
  void* context = nullptr;
  DEVMEM_RETURN_IF_ERROR(Check(ctx_get_current_(&context), "cuCtxGetCurrent"));
  return context;
}

Status CudaDriver::ExchangeStreamCaptureMode(int* mode) const {
  return Check(exchange_capture_mode_(mode), "cuThreadExchangeStreamCaptureMode");
}

Result<void*> CudaDriver::CreateOwnContext(int ordinal) const {
  if (ctx_create_v3_ == nullptr || ctx_destroy_ == nullptr) {
    return Status::Error(ErrorKind::kSystem,
                         "the CUDA driver lacks cuCtxCreate_v3 or cuCtxDestroy_v2 (needs CUDA >= "
                         "11.4)");
  }
  int device = 0;
  DEVMEM_RETURN_IF_ERROR(Check(device_get_(&device, ordinal), "cuDeviceGet"));
  void* context = nullptr;
  DEVMEM_RETURN_IF_ERROR(
      Check(ctx_create_v3_(&context, nullptr, 0, 0, device), "cuCtxCreate_v3"));
  return context;
}

Status CudaDriver::DestroyContext(void* context) const {
  if (ctx_destroy_ == nullptr) {
    return Status::Error(ErrorKind::kSystem, "the CUDA driver lacks cuCtxDestroy_v2");
  }
  return Check(ctx_destroy_(context), "cuCtxDestroy");
}

Status CudaDriver::FlushGpuDirectRdmaWritesToOwner() const {
  if (flush_gpu_direct_rdma_writes_ == nullptr) {
    return Status::Error(ErrorKind::kSystem,
                         "the CUDA driver lacks cuFlushGPUDirectRDMAWrites (needs CUDA >= 11.3)");
  }
  constexpr int kTargetCurrentCtx = 0;  // CU_FLUSH_GPU_DIRECT_RDMA_WRITES_TARGET_CURRENT_CTX
  constexpr int kToOwner = 100;         // CU_FLUSH_GPU_DIRECT_RDMA_WRITES_TO_OWNER
  return Check(flush_gpu_direct_rdma_writes_(kTargetCurrentCtx, kToOwner),
               "cuFlushGPUDirectRDMAWrites(TO_OWNER)");
}

const char* DmabufMappingName(DmabufMapping mapping) {
  return mapping == DmabufMapping::kPcieBar1 ? "PCIe BAR1" : "default";
}

Result<int> CudaDriver::ExportDmabuf(CUdeviceptr ptr, size_t bytes, DmabufMapping mapping) const {
  if (get_handle_for_address_range_ == nullptr) {
    return Status::Error(ErrorKind::kSystem,
                         "the CUDA driver lacks cuMemGetHandleForAddressRange (needs CUDA >= "
                         "11.7): GPU memory cannot be exported as a dmabuf");
  }
  constexpr int kDmaBufFd = 1;                      // CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD
  constexpr unsigned long long kMappingPcie = 0x1;  // CU_MEM_RANGE_FLAG_DMA_BUF_MAPPING_TYPE_PCIE
  const unsigned long long flags = mapping == DmabufMapping::kPcieBar1 ? kMappingPcie : 0;
  int fd = -1;
  DEVMEM_RETURN_IF_ERROR(Check(get_handle_for_address_range_(&fd, ptr, bytes, kDmaBufFd, flags),
                               mapping == DmabufMapping::kPcieBar1
                                   ? "cuMemGetHandleForAddressRange(DMA_BUF_FD, MAPPING_TYPE_PCIE)"
                                   : "cuMemGetHandleForAddressRange(DMA_BUF_FD)"));
  return fd;
}

Result<int> CudaDriver::ExportDmabuf(CUdeviceptr ptr, size_t bytes) const {
  Result<int> pcie = ExportDmabuf(ptr, bytes, DmabufMapping::kPcieBar1);
  if (pcie.ok()) return pcie;
  return ExportDmabuf(ptr, bytes, DmabufMapping::kDefault);
}

Result<CudaDriver::AllocationRange> CudaDriver::AllocationOf(CUdeviceptr ptr) const {
  if (mem_get_address_range_ == nullptr) {
    return Status::Error(ErrorKind::kSystem, "the CUDA driver lacks cuMemGetAddressRange_v2");
  }
  AllocationRange range;
  DEVMEM_RETURN_IF_ERROR(
      Check(mem_get_address_range_(&range.base, &range.bytes, ptr), "cuMemGetAddressRange"));
  constexpr int kBufferId = 7;  // CU_POINTER_ATTRIBUTE_BUFFER_ID (cuda.h)
  if (pointer_get_attribute_ != nullptr &&
      pointer_get_attribute_(&range.buffer_id, kBufferId, ptr) != 0) {
    range.buffer_id = 0;
  }
  return range;
}

}  // namespace devmem
