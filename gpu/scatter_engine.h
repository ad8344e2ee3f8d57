// CudaScatterEngine: copies frags from a GPU RX region into GPU destination buffers with our
// scatter kernel, on its own stream, one CUDA event per submission. The consumer learns the
// copy finished from Done(); only then may the frags' devmem tokens go back to the kernel.
// No CUDA header here: the plugin and tests include it on machines without CUDA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "gpu/scatter_plan.h"
#include "plugin/status.h"

namespace devmem::gpu {

struct ScatterTicket {
  uint32_t slot = 0;
  uint64_t generation = 0;
};

class CudaScatterEngine {
 public:
  // On CUDA device `device`; an error without a GPU or in a build without nvcc.
  static Result<std::unique_ptr<CudaScatterEngine>> Create(int device, size_t max_ops);
  virtual ~CudaScatterEngine() = default;
  // Enqueues a copy of `count` ops from region_dptr to dst_dptr (device pointers).
  virtual Result<ScatterTicket> Submit(const ScatterOp* ops, size_t count, const void* region_dptr,
                                       void* dst_dptr) = 0;
  // True once the kernel of `ticket` has completed.
  virtual Result<bool> Done(const ScatterTicket& ticket) = 0;
  // Blocks until every submission finished (tests, shutdown).
  virtual Status Synchronize() = 0;
};

// Whether this build contains the CUDA kernels (nvcc was found at build time).
bool BuiltWithCudaKernels();

}  // namespace devmem::gpu
