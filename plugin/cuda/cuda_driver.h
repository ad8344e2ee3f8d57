// libcuda.so.1, loaded on first use. The plugin must load and serve host memory on machines
// with no GPU and no driver, so nothing links against libcuda and no CUDA header is needed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "plugin/core/status.h"

namespace devmem {

class CudaDriver;

// How the driver maps GPU memory for the device that attaches its dmabuf
// (cuMemGetHandleForAddressRange flags; the choice between them is plugin/cuda/dmabuf_export.h's).
enum class DmabufMapping {
  kDefault,   // flags 0: the driver's choice (on a coherent host, the GPU memory as system pages)
  kPcieBar1,  // CU_MEM_RANGE_FLAG_DMA_BUF_MAPPING_TYPE_PCIE (cuda.h, CUDA >= 12.8): through BAR1
};
const char* DmabufMappingName(DmabufMapping mapping);

// The plugin's CUDA work runs on NCCL's threads, which have a context (and maybe a stream
// capture) of their own: NCCL's proxy thread may even run in a private context
// (NCCL_CREATE_THREAD_CONTEXT=1). While alive, this pushes the device's primary context onto the
// calling thread and relaxes the thread's stream-capture mode (allocation and copies would fail
// under a global-mode capture elsewhere; NCCL's alloc.h does the same); the destructor pops the
// context and restores the mode, leaving the thread as it found it. TCPX wraps every CUDA call
// the same way (gpu_push_current / gpu_pop_current).
class ScopedDeviceContext final {
 public:
  ScopedDeviceContext(ScopedDeviceContext&& other) noexcept;
  ScopedDeviceContext& operator=(ScopedDeviceContext&&) = delete;
  ScopedDeviceContext(const ScopedDeviceContext&) = delete;
  ScopedDeviceContext& operator=(const ScopedDeviceContext&) = delete;
  ~ScopedDeviceContext();

 private:
  friend class CudaDriver;
  ScopedDeviceContext(const CudaDriver* driver, int capture_mode)
      : driver_(driver), capture_mode_(capture_mode) {}
  const CudaDriver* driver_ = nullptr;  // nullptr once moved from
  int capture_mode_ = 0;
};

class CudaDriver final {
 public:
  using CUresult = int;
  using CUdeviceptr = unsigned long long;

  // The process-wide driver, or why it is unavailable (logged once at INFO by the caller).
  static Result<const CudaDriver*> Get();

  // Pinned, portable and device-mapped: with unified addressing the host pointer is also the
  // pointer a kernel uses (staging, NCCL unpack metadata, the scatter engine's ops).
  Status HostAlloc(size_t bytes, void** out) const;
  // Does nothing once plugin GPU work was given up on (plugin/cuda/gpu_quarantine.h).
  void HostFree(void* ptr) const;
  // Host <-> device copies: plugin/cuda/copy_stream.h (never on the legacy default stream).

  // Device queries for readiness checks (devmem-doctor and mode selection).
  Result<int> DeviceCount() const;
  // CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED: can this GPU's memory be exported as a dmabuf?
  Result<bool> DmaBufSupported(int ordinal) const;
  // CU_DEVICE_ATTRIBUTE_MPS_ENABLED: are this process's contexts on the GPU MPS clients?
  Result<bool> MpsEnabled(int ordinal) const;
  // "0000:3b:00.0"-style PCI address of the GPU.
  Result<std::string> PciBusId(int ordinal) const;
  // cuDeviceGetAttribute(`attribute`) of GPU `ordinal`; `name` names it in the error.
  Result<int> DeviceAttribute(int ordinal, int attribute, const char* name) const;
  // cuFlushGPUDirectRDMAWrites(TARGET_CURRENT_CTX, TO_OWNER): returns once the NIC writes that
  // reached the calling thread's current context are visible to it (call inside EnterDevice).
  // An error where the driver lacks the entry point (CUDA < 11.3).
  Status FlushGpuDirectRdmaWritesToOwner() const;

  // Makes GPU `ordinal`'s primary context current on the calling thread until the returned
  // guard goes; the context is retained once per process and device. Every plugin call that
  // allocates, copies or exports runs inside one.
  Result<ScopedDeviceContext> EnterDevice(int ordinal) const;
  // The same for a given context (a CopyStream's, the scatter engine's).
  Result<ScopedDeviceContext> EnterContext(void* context) const;
  // GPU `ordinal`'s primary context (a CUcontext), retained once per process and device and
  // never released: worker and proxy threads share it, and releasing it could tear it down
  // under NCCL. Callers that enter it on every call keep it (no lock then).
  Result<void*> PrimaryContext(int ordinal) const;
  // The device of the calling thread's current context (NCCL's proxy thread has its GPU's).
  Result<int> CurrentDevice() const;
  // The calling thread's current context; nullptr where it has none.
  Result<void*> CurrentContext() const;
  Status Allocate(size_t bytes, CUdeviceptr* out) const;
  // Does nothing once plugin GPU work was given up on (plugin/cuda/gpu_quarantine.h).
  void Free(CUdeviceptr ptr) const;

  // For the GPU tests, which act as NCCL's threads and check that every plugin call leaves the
  // thread's CUDA state as it found it; the plugin itself never calls these.
  // cuThreadExchangeStreamCaptureMode: the calling thread's mode becomes *mode (a
  // CUstreamCaptureMode), and *mode the one it had.
  Status ExchangeStreamCaptureMode(int* mode) const;
  // A context of the calling thread's own on GPU `ordinal`, current once made: what NCCL's proxy
  // thread runs in under NCCL_CREATE_THREAD_CONTEXT=1 (NCCL v2.28.9 src/proxy.cc:883, with
  // cuCtxCreate loaded at version 11040, src/misc/cudawrap.cc:212: cuCtxCreate_v3). An error
  // where the driver lacks it (CUDA < 11.4).
  Result<void*> CreateOwnContext(int ordinal) const;
  Status DestroyContext(void* context) const;
  // A dmabuf of [ptr, ptr + bytes) with `mapping` (the caller holds the GPU's context).
  Result<int> ExportDmabuf(CUdeviceptr ptr, size_t bytes, DmabufMapping mapping) const;
  // The same, PCIe BAR1 first and the default where the driver refuses that export (it does on
  // every host that is not coherent). Callers that bind the dmabuf to a NIC use
  // plugin/cuda/dmabuf_export.h instead, which also moves on where the NIC's attach refuses it.
  Result<int> ExportDmabuf(CUdeviceptr ptr, size_t bytes) const;
  // The CUDA allocation that contains `ptr` (cuMemGetAddressRange): its base and size.
  struct AllocationRange {
    CUdeviceptr base = 0;
    size_t bytes = 0;
    // CU_POINTER_ATTRIBUTE_BUFFER_ID: unique for the process's lifetime, so a new allocation
    // at a reused address is told apart (0 where the driver does not say).
    unsigned long long buffer_id = 0;
  };
  Result<AllocationRange> AllocationOf(CUdeviceptr ptr) const;

 private:
  friend class ScopedDeviceContext;
  friend class CopyStream;
  CudaDriver() = default;
  Status Check(CUresult result, const char* call) const;

  CUresult (*init_)(unsigned int) = nullptr;
  CUresult (*mem_host_alloc_)(void**, size_t, unsigned int) = nullptr;
  CUresult (*mem_free_host_)(void*) = nullptr;
  CUresult (*memcpy_dtoh_async_)(void*, CUdeviceptr, size_t, void*) = nullptr;
  CUresult (*memcpy_htod_async_)(CUdeviceptr, const void*, size_t, void*) = nullptr;
  CUresult (*stream_create_with_priority_)(void**, unsigned int, int) = nullptr;
  CUresult (*ctx_get_stream_priority_range_)(int*, int*) = nullptr;
  CUresult (*stream_destroy_)(void*) = nullptr;
  CUresult (*stream_synchronize_)(void*) = nullptr;
  CUresult (*stream_query_)(void*) = nullptr;
  CUresult (*get_error_string_)(CUresult, const char**) = nullptr;
  CUresult (*device_get_count_)(int*) = nullptr;
  CUresult (*device_get_)(int*, int) = nullptr;
  CUresult (*device_get_attribute_)(int*, int, int) = nullptr;
  CUresult (*device_get_pci_bus_id_)(char*, int, int) = nullptr;
  CUresult (*primary_ctx_retain_)(void**, int) = nullptr;
  CUresult (*ctx_push_current_)(void*) = nullptr;
  CUresult (*ctx_pop_current_)(void**) = nullptr;
  CUresult (*exchange_capture_mode_)(int*) = nullptr;
  CUresult (*ctx_get_current_)(void**) = nullptr;
  CUresult (*ctx_get_device_)(int*) = nullptr;
  CUresult (*mem_alloc_)(CUdeviceptr*, size_t) = nullptr;
  CUresult (*mem_free_)(CUdeviceptr) = nullptr;
  // Optional (CUDA >= 11.7): without it, GPU memory cannot be exported as a dmabuf.
  CUresult (*get_handle_for_address_range_)(void*, CUdeviceptr, size_t, int,
                                            unsigned long long) = nullptr;
  CUresult (*mem_get_address_range_)(CUdeviceptr*, size_t*, CUdeviceptr) = nullptr;
  CUresult (*pointer_get_attribute_)(void*, int, CUdeviceptr) = nullptr;
  // Optional (CUDA >= 11.3): without it, NIC writes cannot be flushed (nic_write_ordering.h).
  CUresult (*flush_gpu_direct_rdma_writes_)(int, int) = nullptr;
  // Optional, the GPU tests' (CreateOwnContext): cuCtxCreate_v3 (CUDA >= 11.4, cuda.h: pctx,
  // CUexecAffinityParam* paramsArray, numParams, flags, dev) and cuCtxDestroy_v2.
  CUresult (*ctx_create_v3_)(void**, void*, int, unsigned int, int) = nullptr;
  CUresult (*ctx_destroy_)(void*) = nullptr;
};

}  // namespace devmem
