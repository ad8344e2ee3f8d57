// A kernel that spins until a device word holds a value, the way NCCL's kernels wait for the
// network proxy: tests that plugin-side copies never queue behind such a kernel.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace devmem::testing {

// Launches one thread on `stream` that returns once *flag == value, or after `timeout_ns` of
// GPU global time with *timed_out set to 1 (so a test that fails cannot hang the GPU).
cudaError_t LaunchSpinUntil(const volatile uint32_t* flag, uint32_t value, uint64_t timeout_ns,
                            uint32_t* timed_out, cudaStream_t stream);

}  // namespace devmem::testing
