#include "plugin/cuda/memory.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "plugin/core/nccl_contract.h"
#include "plugin/cuda/cuda_driver.h"

namespace devmem {

bool MemoryRegion::is_cuda() const { return type == nccl::kPtrCuda; }

Result<PinnedBuffer> PinnedBuffer::Allocate(size_t bytes, int gpu) {
  Result<const CudaDriver*> driver = CudaDriver::Get();
  if (!driver.ok()) return driver.status();
  std::optional<ScopedDeviceContext> context;
  if (gpu >= 0) {
    Result<ScopedDeviceContext> entered = driver.value()->EnterDevice(gpu);
    if (!entered.ok()) return entered.status();
    context.emplace(std::move(entered).value());
  }
  void* memory = nullptr;
  DEVMEM_RETURN_IF_ERROR(driver.value()->HostAlloc(bytes, &memory));
  PinnedBuffer buffer;
  buffer.data_ = static_cast<char*>(memory);
  buffer.bytes_ = bytes;
  return buffer;
}

PinnedBuffer::PinnedBuffer(PinnedBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  if (this != &other) {
    PinnedBuffer doomed(std::move(*this));
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

PinnedBuffer::~PinnedBuffer() {
  if (data_ == nullptr) return;
  Result<const CudaDriver*> driver = CudaDriver::Get();
  if (driver.ok()) driver.value()->HostFree(data_);
}

Result<char*> StagingBuffer::Reserve(size_t bytes) {
  if (bytes <= current_.bytes() && current_.data() != nullptr) return current_.data();
  // Double at least, from 1 MiB: a slowly growing message size allocates a few times only.
  const size_t want = std::max<size_t>({bytes, current_.bytes() * 2, size_t{1} << 20});
  Result<PinnedBuffer> fresh = PinnedBuffer::Allocate(want, /*gpu=*/-1);
  if (!fresh.ok()) return fresh.status();
  if (current_.data() != nullptr) retired_.push_back(std::move(current_));  // freed at close
  current_ = std::move(fresh).value();
  return current_.data();
}

}  // namespace devmem
