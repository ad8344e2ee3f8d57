// ScatterEngine: the seam between a receive comm and whatever copies its frags out of a GPU RX
// region. The product's engine (CreateCudaScatterEngine) runs our scatter kernel on the
// device's scatter stream with one CUDA event per submission. The consumer learns the copy
// finished from Done(); only then may the frags' devmem tokens go back to the kernel.
// No CUDA header here: the plugin and tests include it on machines without CUDA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

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
  // Enqueues a copy of `count` ops from region_dptr to dst_dptr (device pointers). Never
  // allocates, frees or blocks. Three outcomes:
  // - a ticket: the copy is queued; poll Done(ticket).
  // - std::nullopt, "busy": every slot still holds a submission in flight. Nothing was queued
  //   and nothing is wrong: keep the frags and submit again later (back-pressure, e.g. test()
  //   reports "not done yet"); a slot frees as soon as its copy finished.
  // - an error: more than max_ops ops (kInvalidUsage), or CUDA failed (kSystem).
  virtual Result<std::optional<ScatterTicket>> Submit(const ScatterOp* ops, size_t count,
                                                      const void* region_dptr, void* dst_dptr) = 0;
  // True once the kernel of `ticket` has completed.
  virtual Result<bool> Done(const ScatterTicket& ticket) = 0;
  // Returns once every submission finished, however long that takes (tests, shutdown).
  virtual Status Synchronize() = 0;
  // True once every submission finished; never blocks (a bounded close polls it).
  virtual Result<bool> Idle() = 0;
};

// The scatter kernel engine on CUDA device `device` (its primary context), taking up to
// `max_ops` ops per submission and keeping up to `slots` submissions in flight; an error
// without a GPU, for an invalid device, or in a build without nvcc.
// - Everything is allocated here, once: per slot, `max_ops` ops of pinned host memory and of
//   device memory (slots x max_ops x 24 bytes of each) and a CUDA event. The stream is the
//   device's one scatter stream, shared by every engine of the process (created by the first,
//   never destroyed: see SharedScatterStream in gpu/scatter_kernel.cu). The data
//   path never allocates or frees (a cudaFree there can deadlock against NCCL's kernels); all
//   is freed by the destructor, unless plugin GPU work was given up on
//   (plugin/cuda/gpu_quarantine.h): then nothing is.
// - The kernel is loaded here (lazy loading would load it at the first launch, on NCCL's proxy
//   thread, which can deadlock against NCCL's running kernel); failing to load it fails this.
// - Size `slots` to the submissions a receive comm keeps in flight: NCCL_STEPS (8) steps of up
//   to maxRecvs subs each, so at least 8 x maxRecvs. Fewer only costs back-pressure (busy).
// - Every call, this one and the destructor included, runs with the device's primary context
//   current and returns the calling thread's CUDA context and stream capture mode unchanged
//   (CudaDriver::EnterContext, plugin/cuda/cuda_driver.h): safe to call on NCCL's threads.
Result<std::unique_ptr<ScatterEngine>> CreateCudaScatterEngine(int device, size_t max_ops,
                                                               size_t slots);

// Whether this build contains the CUDA kernels (nvcc was found at build time).
bool BuiltWithCudaKernels();

}  // namespace devmem::gpu
