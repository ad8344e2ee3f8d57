// Registered memory (what regMr returns) and the pinned staging that CUDA buffers go through
// on the plain-TCP path.
#pragma once

#include <cstddef>
#include <cstdint>

#include "plugin/core/status.h"

namespace devmem {

struct MemoryRegion {
  static constexpr uint32_t kMagic = 0x4d52444d;  // "MRDM"
  uint32_t magic = kMagic;
  void* data = nullptr;
  size_t size = 0;
  int type = 0;  // nccl::kPtrHost or nccl::kPtrCuda
  bool is_cuda() const;
};

// Grow-only pinned host buffer (cuMemHostAlloc), one per request slot, reused across messages.
class StagingBuffer final {
 public:
  StagingBuffer() = default;
  StagingBuffer(const StagingBuffer&) = delete;
  StagingBuffer& operator=(const StagingBuffer&) = delete;
  ~StagingBuffer();
  // Ensures at least `bytes` of capacity; returns the buffer.
  Result<char*> Reserve(size_t bytes);

 private:
  char* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace devmem
