// NCCL's device unpack (netDeviceType UNPACK, version 0x7): instead of copying frags itself the
// plugin publishes, per received step, a list of {offset in bounce buffer, length, offset in
// the step's buffer} that NCCL's own kernels execute. The layout below is NCCL's
// (src/device/network/unpack/unpack_defs.h, ../shared/specs/nccl-net-abi.md section 3), written
// from the spec. Slot k % 16 belongs to the k-th SIMPLE-protocol receive of the comm; tokens go
// back only when NCCL reports the step consumed (irecvConsumed).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "plugin/core/status.h"
#include "plugin/cuda/nic_write_ordering.h"
#include "plugin/devmem/offset_table.h"

namespace devmem::unpack {

inline constexpr int kDeviceVersion = 0x7;           // NCCL_NET_DEVICE_UNPACK_VERSION
inline constexpr uint32_t kQueueDepth = 16;          // NCCL_NET_DEVICE_UNPACK_MAX_QUEUE_DEPTH
inline constexpr uint32_t kMaxMetasPerSlot = 2048;   // NET_UNPACK_MAX_SLICE_PAGES
inline constexpr uint64_t kMaxSliceBytes = 4 << 20;  // NET_UNPACK_MAX_SLICE_SIZE

struct alignas(16) LoadMeta {
  uint32_t src_off;  // from the bounce buffer base
  uint32_t len;
  uint64_t dst_off;  // inside the step's destination
};
static_assert(sizeof(LoadMeta) == 16);

struct NetUnpackMeta {
  LoadMeta mem[kQueueDepth][kMaxMetasPerSlot];
  uint64_t cnt[kQueueDepth];
};
static_assert(sizeof(NetUnpackMeta) == 524416);

// What ncclNetDeviceHandle.handle points to (unpack_defs.h unpackNetDeviceHandle). `head` is
// NCCL's: the plugin sets it once, to UINT64_MAX (see UnpackQueue::Create), and NCCL's kernels
// pre-increment it per SIMPLE step and write it back when they exit.
struct UnpackDeviceHandle {
  NetUnpackMeta* meta;
  void* bounce_buf;
  uint64_t head;
};
inline constexpr uint64_t kInitialHead = UINT64_MAX;
static_assert(sizeof(UnpackDeviceHandle) == 24);

// The metadata queue of one receive comm, in memory NCCL's kernels can read: mapped pinned host
// memory when a CUDA driver is present; plain host memory otherwise (CPU-only emulation, where
// only a host consumer such as the tests reads it). Single writer: the proxy thread.
class UnpackQueue final {
 public:
  // `bounce_base`: what NCCL gets as bounce_buf, the base of the GPU's RX arena shared by every
  // unpack connection of the GPU; the comm's frags are offsets into its region, which starts
  // `region_offset` bytes into the arena and holds `region_bytes` (all below 4 GiB: NCCL's
  // src_off is 32 bits). `barrier` orders the NIC's writes into the region before a step with
  // frags is published (NicWriteOrdering::BarrierFor(region's GPU); the default: host memory).
  static Result<std::unique_ptr<UnpackQueue>> Create(uint64_t bounce_base, uint64_t region_offset,
                                                     uint64_t region_bytes,
                                                     NicWriteBarrier barrier = NicWriteBarrier());
  UnpackQueue(const UnpackQueue&) = delete;
  UnpackQueue& operator=(const UnpackQueue&) = delete;
  ~UnpackQueue();

  // The pointer to hand NCCL as ncclNetDeviceHandle.handle, and its size.
  void* device_handle() const { return handle_; }
  size_t device_handle_bytes() const { return sizeof(UnpackDeviceHandle); }
  bool device_visible() const { return pinned_; }

  // Claims the slot of the next SIMPLE receive (posting order == NCCL's step order). Fails
  // while that slot's previous receive has not been consumed (NCCL never has more than 8 steps
  // in flight, so this means a caller broke the protocol).
  Result<uint32_t> Claim();
  // Writes the entries of `tables` (one per data socket) into `slot`, then publishes the count
  // with release ordering, so a reader that sees cnt sees the entries.
  Status Publish(uint32_t slot, const OffsetTable* const* tables, size_t count);
  // NCCL consumed the step of `slot`: the slot may be claimed again.
  void Consumed(uint32_t slot);
  // Takes back the latest Claim() of a receive that was never posted, so the next SIMPLE
  // receive gets the slot NCCL's kernel will read for it.
  Status Unclaim(uint32_t slot);
  const NetUnpackMeta& meta() const { return *meta_; }

 private:
  UnpackQueue() = default;
  char* memory_ = nullptr;  // meta, then the handle
  bool pinned_ = false;
  NetUnpackMeta* meta_ = nullptr;
  UnpackDeviceHandle* handle_ = nullptr;
  uint64_t region_offset_ = 0;
  uint64_t region_bytes_ = 0;
  uint64_t claimed_ = 0;
  bool busy_[kQueueDepth] = {};
  NicWriteBarrier barrier_;
};

// What NCCL's unpack kernel does for one step, on the CPU: copies cnt[slot] entries from
// `bounce` into `dst` after checking each stays inside both. The test reference.
Status ExecuteOnHost(const NetUnpackMeta& meta, uint32_t slot, const char* bounce,
                     uint64_t bounce_bytes, char* dst, uint64_t dst_bytes);

}  // namespace devmem::unpack
