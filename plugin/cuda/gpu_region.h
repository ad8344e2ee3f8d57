// GpuRegion: GPU memory for devmem RX (optionally exported whole as a dmabuf). Owns the
// allocation and the dmabuf fd; allocated and freed in the GPU's primary context.
#pragma once

#include <cstdint>
#include <memory>

#include "plugin/core/status.h"
#include "plugin/core/unique_fd.h"

namespace devmem {

class GpuRegion final {
 public:
  // `bytes` is rounded up to 2 MiB (GPU page granularity; dmabuf export wants page alignment).
  // Without `export_dmabuf` (emulation: no NIC reads it) dmabuf_fd() is -1.
  static Result<std::unique_ptr<GpuRegion>> Create(int gpu, uint64_t bytes,
                                                   bool export_dmabuf = true);
  GpuRegion(const GpuRegion&) = delete;
  GpuRegion& operator=(const GpuRegion&) = delete;
  ~GpuRegion();
  uint64_t device_ptr() const { return device_ptr_; }
  uint64_t bytes() const { return bytes_; }
  int dmabuf_fd() const { return dmabuf_.get(); }

 private:
  GpuRegion() = default;
  int gpu_ = 0;
  uint64_t device_ptr_ = 0;
  uint64_t bytes_ = 0;
  UniqueFd dmabuf_;
};

}  // namespace devmem
