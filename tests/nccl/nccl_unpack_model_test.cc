// NCCL_DEVMEM_UNPACK=nccl against a model of what NCCL itself does with an UNPACK connection,
// written from NCCL's source (NVIDIA/nccl v2.28.9; unchanged in 2.30.7), not from our spec:
//   - Kernel: ncclNetDeviceUnpackSetup (src/device/network/unpack/unpack.h) copies the handle's
//     head into shared memory per (group, peer) and its bounce_buf into ONE per-block field
//     (ncclShmemData.devicePlugin.unpack.bounce_buf, src/device/common.h): every receive
//     connection the block loads overwrites it (all_reduce.h runTreeSplit loads two).
//   - For every SIMPLE slice, Primitives::waitPeer (src/device/prims_simple.h) calls
//     ncclNetDeviceIncrementHead *before* genericOp unpacks it; ncclNetDeviceUnpack then reads
//     slot head % NCCL_NET_DEVICE_UNPACK_MAX_QUEUE_DEPTH (16): cnt[slot] metas {src_off from
//     bounce_buf, len, dst_off}. An empty (0-byte) slice advances head like any other.
//   - At kernel exit ncclNetDeviceSaveHead writes head back to the handle; the next kernel
//     starts from it.
//   - Proxy (src/transport/net.cc recvProxyProgress): posts up to NCCL_STEPS (8) receives ahead,
//     tests the oldest first, and calls irecvConsumed once the GPU is done with a step. LL/LL128
//     receives are posted with *request preset to NCCL_NET_OPTIONAL_RECV_COMPLETION (0x1) and
//     never unpacked by the kernel.
// The data path is the plugin loaded through dlopen, real loopback sockets and the emulated
// frag source; the kernel is played on the CPU by unpack::ExecuteOnHost.
// Runs with NCCL_DEVMEM_EMULATE=1 NCCL_DEVMEM_UNPACK=nccl NCCL_DEVMEM_RX_REGION_BYTES=4M.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <random>
#include <vector>

#include "plugin/abi/net_abi.h"
#include "plugin/consumers/unpack_queue.h"
#include "plugin/setup/rx_plan.h"
#include "tests/common/plugin_fixture.h"

namespace devmem {
namespace {

using Clock = std::chrono::steady_clock;
using testing::RandomBytes;
using testing::StderrLogger;

constexpr uint64_t kRegionBytes = 4 << 20;  // NCCL_DEVMEM_RX_REGION_BYTES of this test
// Every comm's region is a slice of this process's one arena (the bounds the model's unpack
// checks against; NCCL's kernel checks none).
constexpr uint64_t kArenaBytes = kEmulatedCommsPerArena * kRegionBytes;
constexpr int kNcclSteps = 8;

// One CUDA block of NCCL's kernel, on the CPU.
class NcclBlockModel {
 public:
  struct Peer {
    unpack::UnpackDeviceHandle* handle;
    uint64_t head = 0;  // the block's shared-memory copy
  };
  // ncclNetDeviceUnpackSetup for each receive connection the block loads, in order.
  void Load(std::vector<Peer>* peers) {
    for (Peer& peer : *peers) {
      peer.head = peer.handle->head;
      bounce_ = static_cast<const char*>(peer.handle->bounce_buf);  // per block: last wins
    }
  }
  // One SIMPLE slice from `peer`: waitPeer's increment, then the unpack of that slot.
  ::testing::AssertionResult Slice(Peer* peer, char* dst, size_t dst_bytes) {
    ++peer->head;  // ncclNetDeviceIncrementHead, before the copy
    const uint32_t slot = static_cast<uint32_t>(peer->head % unpack::kQueueDepth);
    Status status =
        unpack::ExecuteOnHost(*peer->handle->meta, slot, bounce_, kArenaBytes, dst, dst_bytes);
    if (!status.ok()) return ::testing::AssertionFailure() << status.message();
    return ::testing::AssertionSuccess();
  }
  // ncclNetDeviceSaveHead at kernel exit.
  static void Save(std::vector<Peer>* peers) {
    for (Peer& peer : *peers) peer.handle->head = peer.head;
  }

 private:
  const char* bounce_ = nullptr;
};

class NcclUnpackModelTest : public testing::PluginSuite {
 protected:
  struct Connection {
    void* send = nullptr;
    void* recv = nullptr;
    abi::DeviceHandleV7 device{};
    unpack::UnpackDeviceHandle* handle = nullptr;
  };

  void SetUp() override {
    ASSERT_EQ(net_->init(&ctx_, 1, nullptr, StderrLogger, nullptr), abi::kSuccess);
  }
  void TearDown() override {
    for (Connection& c : connections_) {
      if (c.send != nullptr) {
        EXPECT_EQ(net_->closeSend(c.send), abi::kSuccess);
      }
      if (c.recv != nullptr) {
        EXPECT_EQ(net_->closeRecv(c.recv), abi::kSuccess);
      }
    }
    EXPECT_EQ(net_->finalize(ctx_), abi::kSuccess);
  }

  // listen + connect/accept as NCCL's proxy does, with the device handle NCCL passes for a
  // receive connection (zeroed, type and version set: net.cc recvProxyConnect).
  Connection* Connect() {
    connections_.emplace_back();
    Connection& c = connections_.back();
    uint8_t handle[abi::kNetHandleMaxSize];
    void* listen_comm = nullptr;
    EXPECT_EQ(net_->listen(ctx_, 0, handle, &listen_comm), abi::kSuccess);
    c.device.netDeviceType = abi::kDeviceUnpack;
    c.device.netDeviceVersion = abi::kDeviceUnpackVersion;
    abi::DeviceHandleV7* recv_device = &c.device;
    abi::DeviceHandleV7* send_device = nullptr;
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while ((c.send == nullptr || c.recv == nullptr) && Clock::now() < deadline) {
      if (c.send == nullptr) {
        EXPECT_EQ(net_->connect(ctx_, 0, handle, &c.send, &send_device), abi::kSuccess);
      }
      if (c.recv == nullptr) {
        EXPECT_EQ(net_->accept(listen_comm, &c.recv, &recv_device), abi::kSuccess);
      }
    }
    EXPECT_EQ(net_->closeListen(listen_comm), abi::kSuccess);
    EXPECT_EQ(c.device.netDeviceType, abi::kDeviceUnpack);
    c.handle = static_cast<unpack::UnpackDeviceHandle*>(c.device.handle);
    return &c;
  }

  void* PostRecv(Connection* c, void* dst, size_t capacity, bool ll) {
    void* request = ll ? reinterpret_cast<void*>(abi::kOptionalRecvCompletion) : nullptr;
    int tag = 3;
    void* mh = nullptr;
    EXPECT_EQ(net_->irecv(c->recv, 1, &dst, &capacity, &tag, &mh, nullptr, &request),
              abi::kSuccess);
    return request;
  }
  void* PostSend(Connection* c, void* data, size_t size) {
    void* request = nullptr;
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (request == nullptr && Clock::now() < deadline) {
      EXPECT_EQ(net_->isend(c->send, data, size, 3, nullptr, nullptr, &request), abi::kSuccess);
    }
    return request;
  }
  bool Wait(void* request, int expected) {
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < deadline) {
      int done = 0, size = -1;
      if (net_->test(request, &done, &size) != abi::kSuccess) return false;
      if (done) return size == expected;
    }
    return false;
  }

  void* ctx_ = nullptr;
  std::deque<Connection> connections_;
};

TEST_F(NcclUnpackModelTest, TheFirstSimpleStepIsInTheSlotNcclsPreIncrementedHeadReads) {
  Connection* c = Connect();
  // NCCL's kernel will increment before reading: the plugin must leave head one below slot 0.
  ASSERT_EQ(c->handle->head, UINT64_MAX);
  std::vector<char> source = RandomBytes(300000, 1), sink(300000, 0);
  void* recv = PostRecv(c, sink.data(), sink.size(), false);
  void* send = PostSend(c, source.data(), source.size());
  ASSERT_TRUE(Wait(send, 300000));
  ASSERT_TRUE(Wait(recv, 300000));
  NcclBlockModel block;
  std::vector<NcclBlockModel::Peer> peers = {{c->handle}};
  block.Load(&peers);
  ASSERT_TRUE(block.Slice(&peers[0], sink.data(), sink.size()));
  NcclBlockModel::Save(&peers);
  EXPECT_EQ(sink, source);
  EXPECT_EQ(c->handle->head, 0u);  // NCCL saved it; the plugin never writes it again
  EXPECT_EQ(net_->irecvConsumed(c->recv, 1, recv), abi::kSuccess);
}

TEST_F(NcclUnpackModelTest, StepsPostedEightAheadWrapTheSlotsAcrossKernelLaunches) {
  Connection* c = Connect();
  // 45 steps (the 16 slots wrap twice), 0-byte steps among them, in kernel launches of 1 to 7
  // steps: each launch starts from the head the previous one saved.
  constexpr int kSteps = 45;
  std::mt19937 rng(7);
  std::vector<size_t> sizes;
  for (int s = 0; s < kSteps; ++s) {
    const int pick = static_cast<int>(rng() % 6);
    sizes.push_back(pick == 0 ? 0 : pick == 1 ? 1 + rng() % 1024 : 1 + rng() % (1 << 20));
  }
  std::vector<std::vector<char>> sources, sinks;
  for (int s = 0; s < kSteps; ++s) {
    sources.push_back(RandomBytes(sizes[s], 100 + s));
    sinks.emplace_back(sizes[s] + 16, '\x5a');
  }
  std::vector<void*> recvs(kSteps, nullptr), sends(kSteps, nullptr);
  int posted = 0, consumed = 0;
  NcclBlockModel block;
  while (consumed < kSteps) {
    // The proxy keeps NCCL_STEPS receives posted ahead of what the GPU consumed.
    while (posted < kSteps && posted < consumed + kNcclSteps) {
      recvs[posted] = PostRecv(c, sinks[posted].data(), sizes[posted], false);
      ASSERT_NE(recvs[posted], nullptr);
      sends[posted] = PostSend(c, sources[posted].data(), sizes[posted]);
      ASSERT_NE(sends[posted], nullptr);
      ++posted;
    }
    // One kernel launch over the next few steps, each once the proxy saw it done.
    const int launch = std::min<int>(1 + static_cast<int>(rng() % 7), posted - consumed);
    std::vector<NcclBlockModel::Peer> peers = {{c->handle}};
    block.Load(&peers);
    for (int k = 0; k < launch; ++k, ++consumed) {
      ASSERT_TRUE(Wait(sends[consumed], static_cast<int>(sizes[consumed])));
      ASSERT_TRUE(Wait(recvs[consumed], static_cast<int>(sizes[consumed]))) << consumed;
      ASSERT_TRUE(block.Slice(&peers[0], sinks[consumed].data(), sizes[consumed]));
      ASSERT_TRUE(
          std::equal(sources[consumed].begin(), sources[consumed].end(), sinks[consumed].begin()))
          << "step " << consumed << " of " << sizes[consumed] << " bytes";
      for (size_t i = sizes[consumed]; i < sinks[consumed].size(); ++i) {
        ASSERT_EQ(sinks[consumed][i], '\x5a') << "step " << consumed;
      }
      EXPECT_EQ(net_->irecvConsumed(c->recv, 1, recvs[consumed]), abi::kSuccess);
    }
    NcclBlockModel::Save(&peers);
  }
  EXPECT_EQ(c->handle->head, static_cast<uint64_t>(kSteps - 1));
}

TEST_F(NcclUnpackModelTest, LlReceivesTakeNoSlotAndDoNotMoveTheKernelsHead) {
  Connection* c = Connect();
  NcclBlockModel block;
  std::vector<NcclBlockModel::Peer> peers = {{c->handle}};
  block.Load(&peers);
  for (int s = 0; s < 24; ++s) {
    const bool ll = s % 3 != 2;  // LL, LL, SIMPLE, ...
    const size_t size = ll ? 1 + static_cast<size_t>(s) * 997 : 70000 + static_cast<size_t>(s);
    std::vector<char> source = RandomBytes(size, s), sink(size, 0);
    void* recv = PostRecv(c, sink.data(), size, ll);
    void* send = PostSend(c, source.data(), size);
    ASSERT_TRUE(Wait(send, static_cast<int>(size)));
    ASSERT_TRUE(Wait(recv, static_cast<int>(size)));
    // LL data is in place when test() says done (the plugin consumed it); only SIMPLE steps
    // are unpacked, and only they advance the kernel's head.
    if (!ll) {
      ASSERT_TRUE(block.Slice(&peers[0], sink.data(), size));
    }
    ASSERT_EQ(sink, source) << "step " << s << (ll ? " (LL)" : " (SIMPLE)");
    EXPECT_EQ(net_->irecvConsumed(c->recv, 1, recv), abi::kSuccess);
  }
  NcclBlockModel::Save(&peers);
}

TEST_F(NcclUnpackModelTest, TwoReceiveConnectionsInOneBlockShareOneBounceBase) {
  // A tree step: the block loads the receive connections of both children; NCCL keeps one
  // bounce_buf for the block, the one loaded last. Their steps interleave.
  Connection* a = Connect();
  Connection* b = Connect();
  ASSERT_EQ(a->handle->bounce_buf, b->handle->bounce_buf)
      << "each GPU must hand NCCL one bounce base for all its unpack connections";
  NcclBlockModel block;
  std::vector<NcclBlockModel::Peer> peers = {{a->handle}, {b->handle}};
  block.Load(&peers);
  for (int s = 0; s < 20; ++s) {
    const size_t size = 4096 + static_cast<size_t>(s) * 54321;
    for (int p = 0; p < 2; ++p) {
      Connection* c = p == 0 ? a : b;
      std::vector<char> source = RandomBytes(size, s * 2 + p), sink(size, 0);
      void* recv = PostRecv(c, sink.data(), size, false);
      void* send = PostSend(c, source.data(), size);
      ASSERT_TRUE(Wait(send, static_cast<int>(size)));
      ASSERT_TRUE(Wait(recv, static_cast<int>(size)));
      ASSERT_TRUE(block.Slice(&peers[p], sink.data(), size));
      ASSERT_EQ(sink, source) << "step " << s << " of connection " << p;
      EXPECT_EQ(net_->irecvConsumed(c->recv, 1, recv), abi::kSuccess);
    }
  }
  NcclBlockModel::Save(&peers);
}

}  // namespace
}  // namespace devmem
