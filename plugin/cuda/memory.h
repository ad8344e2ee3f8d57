// Registered memory (what regMr returns) and the pinned staging that CUDA buffers go through
// on the plain-TCP path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "plugin/core/status.h"

namespace devmem {

// What an mhandle names. The ABI edge finds it through the handle registry
// (plugin/abi/handle_registry.h), which alone tells a live registration from anything else.
struct MemoryRegion {
  void* data = nullptr;
  size_t size = 0;
  int type = 0;  // nccl::kPtrHost or nccl::kPtrCuda
  bool is_cuda() const;
  // Devmem TX (a CUDA buffer of a send comm whose NIC sends from device memory): the buffer's
  // allocation is bound for transmit as dmabuf `tx_dmabuf_id`, and `data` lies at byte
  // `tx_data_offset` of it, so sends name offsets instead of copying to the host. `tx_binding`
  // keeps that binding (and its exported dmabuf) alive while the registration lives
  // (plugin/setup/tx_setup.h). Empty: CUDA sends stage through pinned host memory.
  std::shared_ptr<const void> tx_binding;
  uint32_t tx_dmabuf_id = 0;
  uint64_t tx_data_offset = 0;
  int tx_ifindex = 0;  // the NIC the binding is for
  bool devmem_tx() const { return tx_binding != nullptr; }
};

// Pinned, device-mapped host memory of a fixed size (cuMemHostAlloc), allocated in `gpu`'s
// context (or the caller's, for -1) and freed with the owner. A copy from it to the device is
// synchronous, so the bytes have landed when the copy returns.
class PinnedBuffer final {
 public:
  static Result<PinnedBuffer> Allocate(size_t bytes, int gpu);
  PinnedBuffer() = default;
  PinnedBuffer(PinnedBuffer&& other) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer();
  char* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  char* data_ = nullptr;
  size_t bytes_ = 0;
};

// Grow-only pinned host buffer (cuMemHostAlloc), one per request slot, reused across messages.
// Nothing is freed before the owner goes: cuMemFreeHost synchronizes the device, and on NCCL's
// proxy thread that can deadlock against NCCL's running kernels (NCCL PR #194). A buffer that
// grows keeps its old memory until close; growth doubles, so that happens a few times at most,
// and comms pre-size it when NCCL registers its CUDA buffers (Comm::Register), before any
// message.
class StagingBuffer final {
 public:
  StagingBuffer() = default;
  StagingBuffer(const StagingBuffer&) = delete;
  StagingBuffer& operator=(const StagingBuffer&) = delete;
  // Ensures at least `bytes` of capacity (allocated in the caller's CUDA context); returns the
  // buffer.
  Result<char*> Reserve(size_t bytes);
  size_t capacity() const { return current_.bytes(); }

 private:
  PinnedBuffer current_;
  std::vector<PinnedBuffer> retired_;  // outgrown buffers, freed with the owner
};

}  // namespace devmem
