// One RX allocation per GPU per process, every RX region a slice of it.
//
// NCCL's device unpack keeps one bounce_buf per CUDA block (src/device/common.h
// ncclShmemData.devicePlugin.unpack.bounce_buf) and ncclNetDeviceUnpackSetup overwrites it for
// every receive connection the block loads; a tree step loads two at once (all_reduce.h
// runTreeSplit). So every unpack connection of a GPU must hand NCCL the same base, and each
// frag's src_off is relative to it. TCPX does the same (unpack1.cu: gpu_get_rxmem per GPU).
// Here the arena is that base: the real path carves one slice per NIC (exported to that NIC as
// a dmabuf of the page-aligned sub-range, cuMemGetHandleForAddressRange takes any), emulation
// one slice per receive comm. Slices go back to the arena when their region goes; the arena
// lives for the process (freeing GPU memory while NCCL's kernels run can deadlock).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "plugin/core/status.h"
#include "plugin/devmem/rx_region.h"

namespace devmem {

class GpuRegion;
class HostRegion;

class RxArena final : public std::enable_shared_from_this<RxArena> {
 public:
  // NCCL's unpack addresses the arena with 32-bit src_off.
  static constexpr uint64_t kMaxUnpackBytes = uint64_t{1} << 32;

  // The process's arena of `gpu` (-1: host memory, emulation without a GPU). The first call
  // creates it with `bytes` (rounded up to the slice alignment); later calls return the same
  // arena whatever they ask.
  static Result<std::shared_ptr<RxArena>> Of(int gpu, uint64_t bytes);
  // A fresh arena outside the process registry (tests).
  static Result<std::shared_ptr<RxArena>> CreateForTest(int gpu, uint64_t bytes);

  RxArena(const RxArena&) = delete;
  RxArena& operator=(const RxArena&) = delete;
  ~RxArena();

  int gpu() const { return gpu_; }
  uint64_t bytes() const { return bytes_; }
  uint64_t device_base() const { return device_base_; }
  char* host_base() const { return host_base_; }
  // 2 MiB for GPU memory (its page, and what a dmabuf export of a sub-range needs), 4 KiB
  // for host memory.
  uint64_t alignment() const { return gpu_ >= 0 ? uint64_t{2} << 20 : 4096; }
  uint64_t free_bytes() const;

  // A slice of `bytes` (rounded up to alignment()), first fit. `writable`: emulation stores
  // payload into it; a NIC-bound slice is written by the NIC only.
  Result<std::unique_ptr<RxRegion>> Carve(uint64_t bytes, bool writable);

 private:
  friend class ArenaSlice;
  RxArena() = default;
  static Result<std::shared_ptr<RxArena>> Create(int gpu, uint64_t bytes);
  void Return(uint64_t offset, uint64_t bytes);

  int gpu_ = -1;
  uint64_t bytes_ = 0;
  uint64_t device_base_ = 0;
  char* host_base_ = nullptr;
  std::unique_ptr<GpuRegion> gpu_memory_;
  std::unique_ptr<HostRegion> host_memory_;
  mutable std::mutex mutex_;
  std::map<uint64_t, uint64_t> free_;  // offset -> bytes, coalesced
};

}  // namespace devmem
