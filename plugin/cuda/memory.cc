#include "plugin/cuda/memory.h"

#include "plugin/core/nccl_contract.h"
#include "plugin/cuda/cuda_driver.h"

namespace devmem {

bool MemoryRegion::is_cuda() const { return type == nccl::kPtrCuda; }

StagingBuffer::~StagingBuffer() {
  if (data_ == nullptr) return;
  Result<const CudaDriver*> driver = CudaDriver::Get();
  if (driver.ok()) driver.value()->HostFree(data_);
}

Result<char*> StagingBuffer::Reserve(size_t bytes) {
  if (bytes <= capacity_ && data_ != nullptr) return data_;
  Result<const CudaDriver*> driver = CudaDriver::Get();
  if (!driver.ok()) return driver.status();
  if (data_ != nullptr) driver.value()->HostFree(data_);
  data_ = nullptr;
  capacity_ = 0;
  void* fresh = nullptr;
  // Round up so that a slowly growing message size does not reallocate every time.
  size_t want = bytes < (1 << 20) ? (1 << 20) : bytes;
  DEVMEM_RETURN_IF_ERROR(driver.value()->HostAlloc(want, &fresh));
  data_ = static_cast<char*>(fresh);
  capacity_ = want;
  return data_;
}

}  // namespace devmem
