#include "plugin/devmem/rx_region.h"

#include "plugin/cuda/cuda_driver.h"
#include "plugin/cuda/gpu_region.h"

namespace devmem {
namespace {

class GpuRxRegion final : public RxRegion {
 public:
  GpuRxRegion(std::shared_ptr<GpuRegion> region, int gpu, bool writable)
      : region_(std::move(region)), gpu_(gpu), writable_(writable) {}
  uint64_t bytes() const override { return region_->bytes(); }
  char* host_base() const override { return nullptr; }
  uint64_t device_base() const override { return region_->device_ptr(); }
  int gpu() const override { return gpu_; }
  Status Write(uint64_t offset, const char* src, size_t len) override {
    if (!writable_) {
      return Status::Error(ErrorKind::kInternal,
                           "the RX region bound to the NIC is written by the NIC only");
    }
    if (offset > region_->bytes() || len > region_->bytes() - offset) {
      return Status::Error(ErrorKind::kInternal, "write [%llu, +%zu) outside the %llu-byte region",
                           static_cast<unsigned long long>(offset), len,
                           static_cast<unsigned long long>(region_->bytes()));
    }
    const CudaDriver* cuda = CudaDriver::Get().value();
    // Worker threads are ours: give each the GPU's context on first use.
    DEVMEM_RETURN_IF_ERROR(cuda->UseDevice(gpu_));
    return cuda->CopyHostToDevice(reinterpret_cast<void*>(region_->device_ptr() + offset), src,
                                  len);
  }

 private:
  std::shared_ptr<GpuRegion> region_;
  int gpu_;
  bool writable_;
};

}  // namespace

Result<std::unique_ptr<RxRegion>> CreateEmulatedGpuRxRegion(int gpu, uint64_t bytes) {
  Result<std::unique_ptr<GpuRegion>> region =
      GpuRegion::Create(gpu, bytes, /*export_dmabuf=*/false);
  if (!region.ok()) return region.status();
  return std::unique_ptr<RxRegion>(std::make_unique<GpuRxRegion>(
      std::shared_ptr<GpuRegion>(std::move(region).value()), gpu, true));
}

std::unique_ptr<RxRegion> WrapBoundGpuRegion(std::shared_ptr<GpuRegion> region, int gpu) {
  return std::make_unique<GpuRxRegion>(std::move(region), gpu, false);
}

}  // namespace devmem
