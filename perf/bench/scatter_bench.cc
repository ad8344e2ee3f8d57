// devmem-scatter-bench: the scatter kernel's bandwidth against cudaMemcpy device-to-device of
// the same bytes, in the same run, for 4 KiB and 64 KiB frags (page frags from a shuffled RX
// region into a contiguous destination, as after a devmem receive). Prints one line per case
// and `ratio R` (kernel / cudaMemcpy) per frag size. Exits 0 with a note when there is no GPU.
//
//   devmem-scatter-bench [--bytes N] [--iters N]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "gpu/scatter_engine.h"
#include "gpu/scatter_plan.h"

namespace {

using devmem::ScatterEntry;
using devmem::gpu::CreateCudaScatterEngine;
using devmem::gpu::ScatterOp;

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  size_t bytes = 256 << 20;
  int iters = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--bytes") == 0) bytes = strtoull(argv[i + 1], nullptr, 10);
    if (strcmp(argv[i], "--iters") == 0) iters = atoi(argv[i + 1]);
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    printf("devmem-scatter-bench: no CUDA device on this machine; nothing measured\n");
    return 0;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  printf("# device: %s, %zu bytes per copy, %d iterations\n", prop.name, bytes, iters);
  // Ops for the smallest frag below (MSS-sized), one submission in flight at a time.
  auto engine = CreateCudaScatterEngine(0, bytes / 1024 + 16, /*slots=*/2);
  if (!engine.ok()) {
    fprintf(stderr, "devmem-scatter-bench: %s\n", engine.status().message().c_str());
    return 1;
  }
  void* region = nullptr;
  void* dst = nullptr;
  if (cudaMalloc(&region, bytes) != cudaSuccess || cudaMalloc(&dst, bytes) != cudaSuccess) {
    fprintf(stderr, "devmem-scatter-bench: cudaMalloc of %zu bytes failed\n", bytes);
    return 1;
  }
  cudaMemset(region, 1, bytes);
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  // 1448 B: MSS frags at MTU 1500, 8-byte aligned on both sides (the kernel's 8-byte path);
  // 4096 B: header-split pages; 64 KiB: large frags.
  for (uint32_t frag : {1448u, 4096u, 65536u}) {
    const size_t frags = bytes / frag;
    std::vector<uint64_t> slots(frags);
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), std::mt19937(1));
    std::vector<ScatterEntry> entries;
    for (size_t i = 0; i < frags; ++i) entries.push_back({slots[i] * frag, i * frag, frag});
    std::vector<ScatterOp> ops;
    devmem::gpu::BuildScatterPlan(entries, &ops);
    // Warm up both, then time them back to back.
    (void)engine.value()->Submit(ops.data(), ops.size(), region, dst);
    (void)engine.value()->Synchronize();
    cudaMemcpyAsync(dst, region, bytes, cudaMemcpyDeviceToDevice, stream);
    cudaStreamSynchronize(stream);
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) {
      auto ticket = engine.value()->Submit(ops.data(), ops.size(), region, dst);
      if (!ticket.ok() || !ticket.value().has_value()) {
        fprintf(stderr, "devmem-scatter-bench: %s\n",
                ticket.ok() ? "every slot busy" : ticket.status().message().c_str());
        return 1;
      }
      (void)engine.value()->Synchronize();
    }
    const double kernel_s = Seconds(start) / iters;
    start = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) {
      cudaMemcpyAsync(dst, region, bytes, cudaMemcpyDeviceToDevice, stream);
      cudaStreamSynchronize(stream);
    }
    const double memcpy_s = Seconds(start) / iters;
    const double kernel_gbps = bytes / kernel_s / 1e9;
    const double memcpy_gbps = bytes / memcpy_s / 1e9;
    printf("frag %6u B: scatter kernel %8.1f GB/s  cudaMemcpy D2D %8.1f GB/s\n", frag, kernel_gbps,
           memcpy_gbps);
    printf("ratio %.2f  (frag %u B)\n", kernel_gbps / memcpy_gbps, frag);
  }
  cudaStreamDestroy(stream);
  cudaFree(region);
  cudaFree(dst);
  return 0;
}
