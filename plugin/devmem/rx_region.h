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

class GpuRegion;

class RxRegion {
 public:
  virtual ~RxRegion() = default;
  virtual uint64_t bytes() const = 0;
  // Non-null when the CPU can address the frags (host regions).
  virtual char* host_base() const = 0;
  // The address a GPU consumer uses: the device pointer of a GPU region; for a host region its
  // host address (only CPU consumers read it).
  virtual uint64_t device_base() const = 0;
  // CUDA device holding the region, or -1 for host memory.
  virtual int gpu() const = 0;
  // Emulation: stores bytes the NIC would have written by DMA at `offset`.
  virtual Status Write(uint64_t offset, const char* src, size_t len) = 0;
};

// A GPU RX region used by the emulated frag source (payload copied in with cuMemcpyHtoD from
// the receiving worker thread).
Result<std::unique_ptr<RxRegion>> CreateEmulatedGpuRxRegion(int gpu, uint64_t bytes);

// Wraps the bound region of the real devmem path: frags are written by the NIC only.
std::unique_ptr<RxRegion> WrapBoundGpuRegion(std::shared_ptr<GpuRegion> region, int gpu);

}  // namespace devmem
