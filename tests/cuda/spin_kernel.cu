#include "tests/cuda/spin_kernel.h"

namespace devmem::testing {
namespace {

__device__ uint64_t GlobalTimerNs() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void SpinUntil(const volatile uint32_t* flag, uint32_t value, uint64_t timeout_ns,
                          uint32_t* timed_out) {
  const uint64_t start = GlobalTimerNs();
  while (*flag != value) {
    if (GlobalTimerNs() - start > timeout_ns) {
      *timed_out = 1;
      return;
    }
  }
}

}  // namespace

cudaError_t LaunchSpinUntil(const volatile uint32_t* flag, uint32_t value, uint64_t timeout_ns,
                            uint32_t* timed_out, cudaStream_t stream) {
  SpinUntil<<<1, 1, 0, stream>>>(flag, value, timeout_ns, timed_out);
  return cudaGetLastError();
}

}  // namespace devmem::testing
