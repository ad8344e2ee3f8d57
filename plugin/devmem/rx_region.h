// Where a receive comm's devmem frags land. Host memory: the emulated frag source on a machine
// without a GPU (and tests), scattered by the CPU. GPU memory: the dmabuf bound to the NIC's RX
// queues, or on a GPU host its emulated stand-in, read only by a GPU consumer (our scatter
// kernel or NCCL's device unpack).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "plugin/core/status.h"

namespace devmem {

class CopyStream;

// The largest message a receive may hold whole in a region until its consumer ran: a quarter of
// it. Half the page pool is reserved for the oldest held message (frag_receiver.h), and split
// frags use half pages, so more could deadlock the pool. Reported to NCCL as the message cap
// (getProperties), sized into the scatter kernel's op buffers, and enforced per message.
inline constexpr uint64_t MaxHeldMessageBytes(uint64_t region_bytes) { return region_bytes / 4; }

class RxRegion {
 public:
  virtual ~RxRegion() = default;
  virtual uint64_t bytes() const = 0;
  // Non-null when the CPU can address the frags (host regions).
  virtual char* host_base() const = 0;
  // The address a GPU consumer uses: the device pointer of a GPU region; for a host region its
  // host address (only CPU consumers read it).
  virtual uint64_t device_base() const = 0;
  // NCCL's unpack: the base every region of this GPU shares (its ncclNetDeviceHandle
  // bounce_buf) and this region's offset from it; a frag's src_off is bounce_offset() plus its
  // offset in the region (plugin/devmem/rx_arena.h).
  virtual uint64_t bounce_base() const { return device_base(); }
  virtual uint64_t bounce_offset() const { return 0; }
  // CUDA device holding the region, or -1 for host memory.
  virtual int gpu() const = 0;
  // Emulation: stores bytes the NIC would have written by DMA at `offset`. A GPU region queues
  // the copy on `stream` (the writer's own; the caller waits on it before reusing `src`); a
  // host region copies at once and ignores it.
  virtual Status Write(uint64_t offset, const char* src, size_t len, CopyStream* stream) = 0;
};

}  // namespace devmem
