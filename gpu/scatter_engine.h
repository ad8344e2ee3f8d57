// ScatterEngine: the seam between a receive comm and whatever copies its frags out of a GPU RX
// region. The product's engine (CreateCudaScatterEngine) runs our scatter kernel on its own
// stream with one CUDA event per submission. The consumer learns the copy finished from Done();
// only then may the frags' devmem tokens go back to the kernel.
// No CUDA header here: the plugin and tests include it on machines without CUDA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "gpu/scatter_plan.h"
#include "plugin/core/status.h"

namespace devmem::gpu {

struct ScatterTicket {
  uint32_t slot = 0;
  uint64_t generation = 0;
};

class ScatterEngine {
 public:
  virtual ~ScatterEngine() = default;
  // Enqueues a copy of `count` ops from region_dptr to dst_dptr (device pointers).
  virtual Result<ScatterTicket> Submit(const ScatterOp* ops, size_t count, const void* region_dptr,
                                       void* dst_dptr) = 0;
  // True once the kernel of `ticket` has completed.
  virtual Result<bool> Done(const ScatterTicket& ticket) = 0;
  // Blocks until every submission finished (tests, shutdown).
  virtual Status Synchronize() = 0;
};

// The scatter kernel engine on CUDA device `device`, taking up to `max_ops` ops per submission;
// an error without a GPU or in a build without nvcc.
Result<std::unique_ptr<ScatterEngine>> CreateCudaScatterEngine(int device, size_t max_ops);

// Whether this build contains the CUDA kernels (nvcc was found at build time).
bool BuiltWithCudaKernels();

}  // namespace devmem::gpu
