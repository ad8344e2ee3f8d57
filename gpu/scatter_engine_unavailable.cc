// The scatter engine factory of a build configured without nvcc: the plan logic (scatter_plan)
// is still here; the kernel is not, and asking for it says so.
#include "gpu/scatter_engine.h"

namespace devmem::gpu {

bool BuiltWithCudaKernels() { return false; }

Result<std::unique_ptr<ScatterEngine>> CreateCudaScatterEngine(int /*device*/, size_t /*max_ops*/,
                                                               size_t /*slots*/) {
  return Status::Error(ErrorKind::kSystem,
                       "this build has no CUDA kernels (nvcc was not found when it was "
                       "configured); rebuild with the CUDA toolkit installed");
}

}  // namespace devmem::gpu
