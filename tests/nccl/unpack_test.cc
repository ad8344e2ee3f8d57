// NCCL_DEVMEM_UNPACK=nccl through the exported v11 table, on the CPU: the plugin advertises
// NCCL's device unpack, fills the device handle at accept, publishes each SIMPLE step's frags in
// slot k % 16, and returns the step's tokens only at irecvConsumed. The test plays NCCL's
// kernel with the CPU reference (unpack::ExecuteOnHost) over the emulated host region.
// Runs with NCCL_DEVMEM_EMULATE=1 NCCL_DEVMEM_UNPACK=nccl NCCL_DEVMEM_RX_REGION_BYTES=4M.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "plugin/abi/net_abi.h"
#include "plugin/consumers/unpack_queue.h"
#include "tests/common/plugin_fixture.h"

namespace devmem {
namespace {

using Clock = std::chrono::steady_clock;
using testing::RandomBytes;
using testing::StderrLogger;

constexpr uint64_t kRegionBytes = 4 << 20;  // NCCL_DEVMEM_RX_REGION_BYTES of this test

class UnpackTest : public testing::PluginSuite {
 protected:
  void SetUp() override {
    ASSERT_EQ(net_->init(&ctx_, 1, nullptr, StderrLogger, nullptr), abi::kSuccess);
    uint8_t handle[abi::kNetHandleMaxSize];
    void* listen_comm = nullptr;
    ASSERT_EQ(net_->listen(ctx_, 0, handle, &listen_comm), abi::kSuccess);
    // What NCCL's recvProxyConnect passes: a zeroed handle with type and version set.
    device_ = {};
    device_.netDeviceType = abi::kDeviceUnpack;
    device_.netDeviceVersion = abi::kDeviceUnpackVersion;
    abi::DeviceHandleV7* recv_device = &device_;
    abi::DeviceHandleV7* send_device = nullptr;
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (send_comm_ == nullptr || recv_comm_ == nullptr) {
      if (send_comm_ == nullptr) {
        ASSERT_EQ(net_->connect(ctx_, 0, handle, &send_comm_, &send_device), abi::kSuccess);
      }
      if (recv_comm_ == nullptr) {
        ASSERT_EQ(net_->accept(listen_comm, &recv_comm_, &recv_device), abi::kSuccess);
      }
      ASSERT_LT(Clock::now(), deadline);
    }
    ASSERT_EQ(net_->closeListen(listen_comm), abi::kSuccess);
    ASSERT_NE(device_.handle, nullptr);
    unpack_ = static_cast<unpack::UnpackDeviceHandle*>(device_.handle);
  }

  void TearDown() override {
    if (send_comm_ != nullptr) {
      EXPECT_EQ(net_->closeSend(send_comm_), abi::kSuccess);
    }
    if (recv_comm_ != nullptr) {
      EXPECT_EQ(net_->closeRecv(recv_comm_), abi::kSuccess);
    }
    EXPECT_EQ(net_->finalize(ctx_), abi::kSuccess);
  }

  void* PostRecv(void* dst, size_t capacity, bool ll_hint) {
    void* request =
        ll_hint ? reinterpret_cast<void*>(abi::kOptionalRecvCompletion) : nullptr;
    int tag = 5;
    void* mh = nullptr;
    EXPECT_EQ(net_->irecv(recv_comm_, 1, &dst, &capacity, &tag, &mh, nullptr, &request),
              abi::kSuccess);
    return request;
  }
  void* PostSend(void* data, size_t size) {
    void* request = nullptr;
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (request == nullptr && Clock::now() < deadline) {
      EXPECT_EQ(net_->isend(send_comm_, data, size, 5, nullptr, nullptr, &request), abi::kSuccess);
    }
    return request;
  }
  // Polls until done; returns the size, or -1 on timeout.
  int Wait(void* request, std::chrono::milliseconds limit = std::chrono::seconds(60)) {
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
      int done = 0, size = -1;
      EXPECT_EQ(net_->test(request, &done, &size), abi::kSuccess);
      if (done) return size;
    }
    return -1;
  }
  // NCCL's kernel for the step in `slot`, on the CPU.
  void Unpack(uint32_t slot, char* dst, size_t dst_bytes) {
    Status status = unpack::ExecuteOnHost(*unpack_->meta, slot,
                                          static_cast<const char*>(unpack_->bounce_buf),
                                          kRegionBytes, dst, dst_bytes);
    ASSERT_TRUE(status.ok()) << status.message();
  }

  void* ctx_ = nullptr;
  void* send_comm_ = nullptr;
  void* recv_comm_ = nullptr;
  abi::DeviceHandleV7 device_{};
  unpack::UnpackDeviceHandle* unpack_ = nullptr;
};

TEST_F(UnpackTest, PropertiesAndDeviceHandleFollowNcclsUnpackContract) {
  abi::PropertiesV11 props{};
  ASSERT_EQ(net_->getProperties(0, &props), abi::kSuccess);
  EXPECT_EQ(props.netDeviceType, abi::kDeviceUnpack);
  EXPECT_EQ(props.netDeviceVersion, 0x7);
  EXPECT_EQ(props.maxRecvs, 1);
  // A quarter of the region (held until consumed), never above NCCL's 4 MiB per step.
  EXPECT_EQ(props.maxP2pBytes, kRegionBytes / 4);
  EXPECT_EQ(props.maxCollBytes, kRegionBytes / 4);
  EXPECT_EQ(device_.netDeviceType, abi::kDeviceUnpack);
  EXPECT_EQ(device_.size, sizeof(unpack::UnpackDeviceHandle));
  EXPECT_EQ(device_.needsProxyProgress, 1);
  EXPECT_NE(unpack_->meta, nullptr);
  EXPECT_NE(unpack_->bounce_buf, nullptr);
  // NCCL pre-increments head before reading a slot (src/device/prims_simple.h waitPeer calls
  // ncclNetDeviceIncrementHead before genericOp unpacks), so the first step must find
  // head + 1 == 0, i.e. slot 0.
  EXPECT_EQ(unpack_->head, UINT64_MAX);
}

TEST_F(UnpackTest, SimpleStepsArePublishedInOrderAndUnpackExactly) {
  uint32_t step = 0;
  for (int round = 0; round < 2; ++round) {  // 2 x 11 steps: the 16 slots wrap
    for (size_t size : {0u, 1u, 1000u, 1025u, 4096u, 65537u, 300000u, 524287u, 524288u,
                        (1u << 20) - 3u, 1u << 20}) {
      std::vector<char> source = RandomBytes(size, size + round);
      std::vector<char> sink(size + 64, '\x5a');
      void* recv = PostRecv(sink.data(), size, /*ll_hint=*/false);
      ASSERT_NE(recv, nullptr);
      void* send = PostSend(source.data(), size);
      ASSERT_EQ(Wait(send), static_cast<int>(size));
      ASSERT_EQ(Wait(recv), static_cast<int>(size));
      // Host bytes (inline, linear frags) are in place already; the frags wait for "NCCL".
      Unpack(step % unpack::kQueueDepth, sink.data(), size);
      ASSERT_TRUE(std::equal(source.begin(), source.end(), sink.begin())) << "size " << size;
      for (size_t i = size; i < sink.size(); ++i) ASSERT_EQ(sink[i], '\x5a');
      EXPECT_EQ(net_->irecvConsumed(recv_comm_, 1, recv), abi::kSuccess);
      ++step;
    }
  }
}

TEST_F(UnpackTest, TokensStayHeldUntilIrecvConsumed) {
  // 8 x 512 KiB into a 4 MiB region: without irecvConsumed the pool runs dry and receives
  // stall, exactly like a NIC whose tokens are not returned.
  constexpr int kSteps = 8;
  constexpr size_t kSize = 512 << 10;
  std::vector<std::vector<char>> sources, sinks;
  std::vector<void*> recvs, sends;
  for (int i = 0; i < kSteps; ++i) {
    sources.push_back(RandomBytes(kSize, 100 + i));
    sinks.emplace_back(kSize, 0);
    recvs.push_back(PostRecv(sinks.back().data(), kSize, false));
    ASSERT_NE(recvs.back(), nullptr);
  }
  for (int i = 0; i < kSteps; ++i) sends.push_back(PostSend(sources[i].data(), kSize));
  std::vector<bool> done(kSteps, false);
  auto poll = [&] {
    for (int i = 0; i < kSteps; ++i) {
      if (done[i]) continue;
      int finished = 0, size = 0;
      EXPECT_EQ(net_->test(recvs[i], &finished, &size), abi::kSuccess);
      if (finished) done[i] = true;
    }
  };
  const auto settle = Clock::now() + std::chrono::seconds(2);
  while (Clock::now() < settle) poll();
  int completed = 0;
  while (completed < kSteps && done[completed]) ++completed;
  EXPECT_GT(completed, 0);
  EXPECT_LT(completed, kSteps) << "every step completed although no token was returned";
  // Consume in order, as NCCL does; each consumption lets the stalled receives move on.
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  for (int i = 0; i < kSteps; ++i) {
    while (!done[i]) {
      poll();
      ASSERT_LT(Clock::now(), deadline) << "step " << i << " never completed";
    }
    Unpack(static_cast<uint32_t>(i) % unpack::kQueueDepth, sinks[i].data(), kSize);
    ASSERT_EQ(sinks[i], sources[i]) << "step " << i;
    EXPECT_EQ(net_->irecvConsumed(recv_comm_, 1, recvs[i]), abi::kSuccess);
  }
  for (void* send : sends) ASSERT_EQ(Wait(send), static_cast<int>(kSize));
}

TEST_F(UnpackTest, LlReceivesAreConsumedByThePluginAndStillWaitForIrecvConsumed) {
  // LL/LL128 (NCCL presets the request to 0x1): NCCL's kernels never unpack them, so the data
  // is in place when test() says done; no slot is used.
  std::vector<void*> pending;
  for (int i = 0; i < 40; ++i) {
    const size_t size = 1 + static_cast<size_t>(i) * 3001;
    std::vector<char> source = RandomBytes(size, i);
    std::vector<char> sink(size, 0);
    void* recv = PostRecv(sink.data(), size, /*ll_hint=*/true);
    if (recv == nullptr) {
      // Every request of the pool waits for irecvConsumed: back-pressure, not an error.
      ASSERT_GE(pending.size(), 16u);
      for (void* r : pending) EXPECT_EQ(net_->irecvConsumed(recv_comm_, 1, r), abi::kSuccess);
      pending.clear();
      recv = PostRecv(sink.data(), size, true);
      ASSERT_NE(recv, nullptr);
    }
    void* send = PostSend(source.data(), size);
    ASSERT_EQ(Wait(send), static_cast<int>(size));
    ASSERT_EQ(Wait(recv), static_cast<int>(size));
    ASSERT_EQ(sink, source) << "size " << size;
    pending.push_back(recv);
  }
  for (void* r : pending) EXPECT_EQ(net_->irecvConsumed(recv_comm_, 1, r), abi::kSuccess);
  // Then a SIMPLE step still lands in slot 0: LL receives took no slot.
  std::vector<char> source = RandomBytes(70000, 1), sink(70000, 0);
  void* recv = PostRecv(sink.data(), sink.size(), false);
  void* send = PostSend(source.data(), source.size());
  ASSERT_EQ(Wait(send), 70000);
  ASSERT_EQ(Wait(recv), 70000);
  Unpack(0, sink.data(), sink.size());
  EXPECT_EQ(sink, source);
  EXPECT_EQ(net_->irecvConsumed(recv_comm_, 1, recv), abi::kSuccess);
}

TEST_F(UnpackTest, BadIrecvConsumedArgumentsAreRejected) {
  int not_a_request = 0;
  EXPECT_NE(net_->irecvConsumed(recv_comm_, 1, &not_a_request), abi::kSuccess);
  EXPECT_NE(net_->irecvConsumed(recv_comm_, 1, nullptr), abi::kSuccess);
  EXPECT_NE(net_->irecvConsumed(send_comm_, 1, nullptr), abi::kSuccess);
}

TEST_F(UnpackTest, ClosingWithUnconsumedStepsFreesTheirTokens) {
  std::vector<char> source = RandomBytes(1 << 20, 3), sink(1 << 20, 0);
  void* recv = PostRecv(sink.data(), sink.size(), false);
  void* send = PostSend(source.data(), source.size());
  ASSERT_EQ(Wait(send), 1 << 20);
  ASSERT_EQ(Wait(recv), 1 << 20);
  // No irecvConsumed: closeRecv (TearDown) returns the region with the tokens, WARNing.
}

}  // namespace
}  // namespace devmem
