// The scatter kernel on a real GPU against the host reference: random tables of 1 to 100k
// frags, unaligned offsets and lengths, receives from 1 B to 64 MiB. Skips without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "gpu/scatter_engine.h"
#include "gpu/scatter_plan.h"

namespace devmem::gpu {
namespace {

class ScatterKernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
      GTEST_SKIP() << "no CUDA device: " << (err != cudaSuccess ? cudaGetErrorString(err) : "0");
    }
    Result<std::unique_ptr<ScatterEngine>> engine = CreateCudaScatterEngine(0, 1 << 20);
    ASSERT_TRUE(engine.ok()) << engine.status().message();
    engine_ = std::move(engine).value();
  }

  // Builds a random table that fills `total` destination bytes from a region of frags.
  void RunRandom(uint64_t total, uint32_t max_frag, bool aligned, uint64_t seed) {
    std::mt19937_64 rng(seed);
    const uint64_t region_bytes = std::max<uint64_t>(total * 2, 1 << 20);
    std::vector<char> region(region_bytes);
    for (char& c : region) c = static_cast<char>(rng());
    std::vector<ScatterEntry> entries;
    uint64_t dst = 0;
    while (dst < total) {
      uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(1 + rng() % max_frag, total - dst));
      uint64_t src = rng() % (region_bytes - len);
      if (aligned) src &= ~uint64_t{15};
      entries.push_back({src, dst, len});
      dst += len;
    }
    std::vector<ScatterOp> ops;
    BuildScatterPlan(entries, &ops);
    std::vector<char> expected(total), actual(total);
    ExecuteScatterPlanOnHost(ops.data(), ops.size(), region.data(), expected.data());

    void* d_region = nullptr;
    void* d_dst = nullptr;
    ASSERT_EQ(cudaMalloc(&d_region, region_bytes), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&d_dst, total + 1), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(d_region, region.data(), region_bytes, cudaMemcpyHostToDevice),
              cudaSuccess);
    ASSERT_EQ(cudaMemset(d_dst, 0, total + 1), cudaSuccess);
    for (size_t first = 0; first < ops.size(); first += 1 << 20) {
      const size_t n = std::min<size_t>(1 << 20, ops.size() - first);
      Result<ScatterTicket> ticket = engine_->Submit(ops.data() + first, n, d_region, d_dst);
      ASSERT_TRUE(ticket.ok()) << ticket.status().message();
    }
    ASSERT_TRUE(engine_->Synchronize().ok());
    ASSERT_EQ(cudaMemcpy(actual.data(), d_dst, total, cudaMemcpyDeviceToHost), cudaSuccess);
    char guard = 1;
    ASSERT_EQ(cudaMemcpy(&guard, static_cast<char*>(d_dst) + total, 1, cudaMemcpyDeviceToHost),
              cudaSuccess);
    EXPECT_EQ(guard, 0) << "wrote past the destination";
    EXPECT_TRUE(actual == expected) << "total " << total << " frags " << entries.size();
    cudaFree(d_region);
    cudaFree(d_dst);
  }

  std::unique_ptr<ScatterEngine> engine_;
};

TEST_F(ScatterKernelTest, OneByte) { RunRandom(1, 1, false, 1); }
TEST_F(ScatterKernelTest, UnalignedSmallFrags) { RunRandom(1 << 20, 100, false, 2); }
TEST_F(ScatterKernelTest, AlignedPageFrags) { RunRandom(8 << 20, 4096, true, 3); }
TEST_F(ScatterKernelTest, HundredThousandFrags) { RunRandom(100000ull * 20, 40, false, 4); }
TEST_F(ScatterKernelTest, SixtyFourMiBWithMegabyteFrags) { RunRandom(64 << 20, 3 << 20, false, 5); }

TEST_F(ScatterKernelTest, DoneTurnsTrueOnlyAfterTheKernel) {
  const size_t bytes = 256 << 20;
  void* d_region = nullptr;
  void* d_dst = nullptr;
  ASSERT_EQ(cudaMalloc(&d_region, bytes), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_dst, bytes), cudaSuccess);
  std::vector<ScatterEntry> entries = {{0, 0, static_cast<uint32_t>(bytes - 1)}};
  std::vector<ScatterOp> ops;
  BuildScatterPlan(entries, &ops);
  Result<ScatterTicket> ticket = engine_->Submit(ops.data(), ops.size(), d_region, d_dst);
  ASSERT_TRUE(ticket.ok()) << ticket.status().message();
  // Wait through Done() only; once it says true the stream has passed the kernel.
  Result<bool> done = false;
  while ((done = engine_->Done(ticket.value())).ok() && !done.value()) {
  }
  ASSERT_TRUE(done.ok()) << done.status().message();
  cudaStream_t probe;
  ASSERT_EQ(cudaStreamCreate(&probe), cudaSuccess);
  EXPECT_EQ(cudaStreamQuery(probe), cudaSuccess);
  cudaStreamDestroy(probe);
  cudaFree(d_region);
  cudaFree(d_dst);
}

}  // namespace
}  // namespace devmem::gpu
