// The plugin's GPU consumer on a real GPU: emulated devmem payload placed in a GPU RX region,
// scattered by our CUDA kernel into CUDA (and host) buffers; test() reports done only after the
// kernel's event, and the frags' tokens are held until that moment. Skips without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <vector>

#include "plugin/abi/net_abi.h"
#include "plugin/transport/comm.h"
#include "tests/common/comm_pair.h"

namespace devmem {
namespace {

using Clock = std::chrono::steady_clock;
using testing::CreateCommPair;

class GpuConsumerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount found none): the GPU consumer needs one";
    }
    // The emulated NIC writes GPU memory (GPU 0); our kernel consumes it.
    auto comms = CreateCommPair(testing::TestParams(4, 2, 128 << 10),
                                testing::EmulatedPath(64 << 20, /*gpu=*/0));
    ASSERT_TRUE(comms.ok()) << comms.status().message();
    recv_ = std::move(comms->recv);
    send_ = std::move(comms->send);
  }

  void Transfer(size_t size, uint64_t seed, bool cuda_destination) {
    std::vector<char> source(size);
    std::mt19937_64 rng(seed);
    for (char& c : source) c = static_cast<char>(rng());
    std::vector<char> host_sink(size + 32, '\x5a');
    char* device_sink = nullptr;
    ASSERT_EQ(cudaMalloc(&device_sink, size + 32), cudaSuccess);
    ASSERT_EQ(cudaMemset(device_sink, 0x5a, size + 32), cudaSuccess);
    void* dst = cuda_destination ? static_cast<void*>(device_sink) : host_sink.data();
    Result<MemoryRegion*> region =
        recv_->Register(dst, size + 32, cuda_destination ? abi::kPtrCuda : abi::kPtrHost);
    ASSERT_TRUE(region.ok());
    MemoryRegion* mr = region.value();
    size_t capacity = size;
    int tag = 1;
    Result<Request*> recv = recv_->PostRecv(1, &dst, &capacity, &tag, &mr);
    ASSERT_TRUE(recv.ok() && recv.value() != nullptr);
    Result<Request*> send = send_->PostSend(source.data(), size, tag, nullptr);
    ASSERT_TRUE(send.ok() && send.value() != nullptr);
    bool send_done = false, recv_done = false;
    int send_size = 0, recv_size = -1;
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (!send_done || !recv_done) {
      if (!send_done) {
        ASSERT_TRUE(send_->Test(send.value(), &send_done, &send_size).ok());
      }
      if (!recv_done) {
        Status tested = recv_->Test(recv.value(), &recv_done, &recv_size);
        ASSERT_TRUE(tested.ok()) << tested.message();
        // Not done yet: whatever frags arrived keep their tokens. Once done: none is left.
        if (recv_done) {
          EXPECT_EQ(recv_->DevmemCounters().tokens_outstanding, 0u);
        }
      }
      ASSERT_LT(Clock::now(), deadline);
    }
    EXPECT_EQ(recv_size, static_cast<int>(size));
    EXPECT_EQ(recv_->DevmemCounters().tokens_outstanding, 0u);
    if (cuda_destination) {
      ASSERT_EQ(cudaMemcpy(host_sink.data(), device_sink, size + 32, cudaMemcpyDeviceToHost),
                cudaSuccess);
    }
    ASSERT_TRUE(std::equal(source.begin(), source.end(), host_sink.begin())) << "size " << size;
    for (size_t i = size; i < host_sink.size(); ++i) ASSERT_EQ(host_sink[i], '\x5a');
    delete mr;
    cudaFree(device_sink);
  }

  std::unique_ptr<RecvComm> recv_;
  std::unique_ptr<SendComm> send_;
};

TEST_F(GpuConsumerTest, CudaDestinationsAreScatteredByTheKernel) {
  for (size_t size : {0u, 1u, 1000u, 1025u, 4097u, 65537u, 1u << 20, (4u << 20) + 13u,
                      16u << 20}) {
    Transfer(size, size, true);
  }
}

TEST_F(GpuConsumerTest, HostDestinationsGoThroughMappedStaging) {
  for (size_t size : {1u, 5000u, 1u << 20, (3u << 20) + 1u}) Transfer(size, size * 3, false);
}

TEST_F(GpuConsumerTest, ManyReceivesInFlightCompleteInOrder) {
  for (int i = 0; i < 64; ++i) Transfer(256 * 1024 + static_cast<size_t>(i) * 4099, i, true);
}

}  // namespace
}  // namespace devmem
