#include "plugin/cuda/gpu_region.h"

#include "plugin/cuda/cuda_driver.h"

namespace devmem {

Result<std::unique_ptr<GpuRegion>> GpuRegion::Create(int gpu, uint64_t bytes, bool export_dmabuf) {
  Result<const CudaDriver*> driver = CudaDriver::Get();
  if (!driver.ok()) return driver.status().WithContext("devmem RX region");
  const CudaDriver* cuda = driver.value();
  Result<bool> supported = export_dmabuf ? cuda->DmaBufSupported(gpu) : Result<bool>(true);
  if (!supported.ok()) return supported.status();
  if (!supported.value()) {
    return Status::Error(ErrorKind::kSystem,
                         "GPU %d cannot export memory as a dmabuf "
                         "(CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED = 0; use the open kernel modules)",
                         gpu);
  }
  constexpr uint64_t kAlign = 2 << 20;
  std::unique_ptr<GpuRegion> region(new GpuRegion());
  region->gpu_ = gpu;
  region->bytes_ = (bytes + kAlign - 1) / kAlign * kAlign;
  // In the GPU's primary context, leaving the caller's (NCCL's thread's) context as it was.
  Result<ScopedDeviceContext> context = cuda->EnterDevice(gpu);
  if (!context.ok()) return context.status();
  CudaDriver::CUdeviceptr ptr = 0;
  DEVMEM_RETURN_IF_ERROR(cuda->Allocate(region->bytes_, &ptr));
  region->device_ptr_ = ptr;
  if (!export_dmabuf) return region;
  Result<int> fd = cuda->ExportDmabuf(ptr, region->bytes_);
  if (!fd.ok()) return fd.status();
  region->dmabuf_.reset(fd.value());
  return region;
}

GpuRegion::~GpuRegion() {
  Result<const CudaDriver*> driver = CudaDriver::Get();
  if (!driver.ok()) return;
  dmabuf_.reset();
  if (device_ptr_ != 0) {
    // Free in the context it was allocated in, whatever this thread had current.
    Result<ScopedDeviceContext> context = driver.value()->EnterDevice(gpu_);
    if (context.ok()) driver.value()->Free(device_ptr_);
  }
}

}  // namespace devmem
