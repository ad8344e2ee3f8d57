// Loads libnccl-net-devmem.so with dlopen/dlsym exactly as NCCL does, and drives init, devices
// and getProperties through every exported table version.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "plugin/abi/net_abi.h"
#include "tests/common/plugin_loader.h"

namespace devmem {
namespace {

using testing::LoadedPlugin;
using testing::StderrLogger;

class DlopenTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(plugin_.Open(DEVMEM_PLUGIN_PATH)) << plugin_.error(); }
  LoadedPlugin plugin_;
};

TEST_F(DlopenTest, ExportsEveryTableVersionWithOneName) {
  for (const char* symbol : {"ncclNetPlugin_v12", "ncclNetPlugin_v11", "ncclNetPlugin_v10",
                             "ncclNetPlugin_v9", "ncclNetPlugin_v8"}) {
    const auto* table = plugin_.Symbol<abi::NetV8>(symbol);
    ASSERT_NE(table, nullptr) << symbol;
    EXPECT_STREQ(table->name, "devmem") << symbol;
  }
  EXPECT_EQ(plugin_.Symbol<void>("ncclNetPlugin_v13"), nullptr);
}

// NCCL 2.30 looks ncclNetPlugin_v12 up first; its properties end with railId and planeId
// (NVIDIA/nccl v2.30.7-1 src/include/plugin/net/net_v12.h:44-45), which NCCL copies into the
// topology as rail= / plane= (src/graph/topo.cc:1647-1648) unless they are NCCL_NET_ID_UNDEF.
// This test's environment sets NCCL_DEVMEM_RAILS=lo=3/1.
TEST_F(DlopenTest, V12PropertiesCarryTheConfiguredRailAndPlane) {
  const auto* net = plugin_.Symbol<abi::NetV12>("ncclNetPlugin_v12");
  ASSERT_NE(net, nullptr);
  for (size_t slot = 0; slot < sizeof(abi::NetV12) / sizeof(void*); ++slot) {
    EXPECT_NE(reinterpret_cast<void* const*>(net)[slot], nullptr) << "slot " << slot;
  }
  void* ctx = nullptr;
  ASSERT_EQ(net->init(&ctx, 7, nullptr, StderrLogger, nullptr), abi::kSuccess);
  abi::PropertiesV12 props;
  memset(&props, 0xab, sizeof(props));
  ASSERT_EQ(net->getProperties(0, &props), abi::kSuccess);
  EXPECT_STREQ(props.name, "lo");
  EXPECT_EQ(props.railId, 3);
  EXPECT_EQ(props.planeId, 1);
  EXPECT_EQ(props.vProps.ndevs, 1);
  EXPECT_EQ(props.vProps.devs[0], 0);
  EXPECT_EQ(props.maxMultiRequestSize, 1);
  EXPECT_GT(props.maxP2pBytes, 0u);
  EXPECT_EQ(props.maxCollBytes, props.maxP2pBytes);
  EXPECT_EQ(net->finalize(ctx), abi::kSuccess);
}

// makeVDevice as NCCL calls it (src/graph/topo.cc ncclTopoMakeVnic): NCCL never asks for a
// virtual NIC of one device, but a plugin must answer the device itself; bad lists are
// errors (NCCL then marks the devices unplaced and retries without them, topo.cc:1424).
TEST_F(DlopenTest, MakeVDeviceAnswersOneDeviceItselfAndRefusesBadLists) {
  const auto* v12 = plugin_.Symbol<abi::NetV12>("ncclNetPlugin_v12");
  const abi::NetV11* v11 = plugin_.v11();
  ASSERT_NE(v12, nullptr);
  ASSERT_NE(v11, nullptr);
  void* ctx = nullptr;
  ASSERT_EQ(v12->init(&ctx, 7, nullptr, StderrLogger, nullptr), abi::kSuccess);
  int ndev = 0;
  ASSERT_EQ(v12->devices(&ndev), abi::kSuccess);
  int d = -1;
  abi::VDevicePropsV12 one{1, {0}};
  ASSERT_EQ(v12->makeVDevice(&d, &one), abi::kSuccess);
  EXPECT_EQ(d, 0);
  abi::VDevicePropsV12 twice{2, {0, 0}};
  EXPECT_NE(v12->makeVDevice(&d, &twice), abi::kSuccess);
  abi::VDevicePropsV12 unknown{2, {0, ndev}};
  EXPECT_NE(v12->makeVDevice(&d, &unknown), abi::kSuccess);
  abi::VDevicePropsV12 none{0, {}};
  EXPECT_NE(v12->makeVDevice(&d, &none), abi::kSuccess);
  abi::VDevicePropsV12 nine{9, {}};
  EXPECT_NE(v12->makeVDevice(&d, &nine), abi::kSuccess);
  abi::VDeviceProps five_for_v11{5, {0, 1, 2, 3}};  // ndevs beyond the v11 array
  EXPECT_NE(v11->makeVDevice(&d, &five_for_v11), abi::kSuccess);
  EXPECT_NE(v12->makeVDevice(nullptr, &one), abi::kSuccess);
  EXPECT_NE(v12->makeVDevice(&d, nullptr), abi::kSuccess);
  int after = 0;
  ASSERT_EQ(v12->devices(&after), abi::kSuccess);
  EXPECT_EQ(after, ndev);  // nothing was made
  EXPECT_EQ(v12->finalize(ctx), abi::kSuccess);
}

TEST_F(DlopenTest, V11InitDevicesPropertiesFinalize) {
  const abi::NetV11* net = plugin_.v11();
  ASSERT_NE(net, nullptr);
  for (size_t slot = 0; slot < sizeof(abi::NetV11) / sizeof(void*); ++slot) {
    EXPECT_NE(reinterpret_cast<void* const*>(net)[slot], nullptr) << "slot " << slot;
  }
  void* ctx = nullptr;
  abi::CommConfigV10 config{-1};
  ASSERT_EQ(net->init(&ctx, 7, &config, StderrLogger, nullptr), abi::kSuccess);
  ASSERT_NE(ctx, nullptr);
  int ndev = 0;
  ASSERT_EQ(net->devices(&ndev), abi::kSuccess);
  ASSERT_GE(ndev, 1);
  abi::PropertiesV11 props;
  memset(&props, 0xab, sizeof(props));
  ASSERT_EQ(net->getProperties(0, &props), abi::kSuccess);
  EXPECT_STREQ(props.name, "lo");  // NCCL_SOCKET_IFNAME=lo in this test's environment
  EXPECT_EQ(props.ptrSupport, abi::kPtrHost);
  EXPECT_GT(props.speed, 0);
  EXPECT_EQ(props.netDeviceType, abi::kDeviceHost);
  EXPECT_EQ(props.netDeviceVersion, 0);
  EXPECT_EQ(props.vProps.ndevs, 1);
  EXPECT_EQ(props.vProps.devs[0], 0);
  EXPECT_GT(props.maxP2pBytes, 0u);
  EXPECT_LE(props.maxP2pBytes, size_t{1} << 40);
  EXPECT_EQ(props.maxCollBytes, props.maxP2pBytes);
  EXPECT_EQ(props.maxMultiRequestSize, 1);
  EXPECT_GE(props.maxComms, 1);
  EXPECT_GE(props.maxRecvs, 1);
  EXPECT_EQ(props.forceFlush, 0);
  EXPECT_NE(net->getProperties(ndev, &props), abi::kSuccess);
  EXPECT_NE(net->getProperties(-1, &props), abi::kSuccess);
  // Two communicators get two contexts.
  void* ctx2 = nullptr;
  ASSERT_EQ(net->init(&ctx2, 8, nullptr, StderrLogger, nullptr), abi::kSuccess);
  EXPECT_NE(ctx, ctx2);
  EXPECT_EQ(net->finalize(ctx2), abi::kSuccess);
  EXPECT_EQ(net->finalize(ctx), abi::kSuccess);
}

TEST_F(DlopenTest, V10AndV9PropertiesLayout) {
  const auto* v10 = plugin_.Symbol<abi::NetV10>("ncclNetPlugin_v10");
  const auto* v9 = plugin_.Symbol<abi::NetV9>("ncclNetPlugin_v9");
  ASSERT_NE(v10, nullptr);
  ASSERT_NE(v9, nullptr);
  ASSERT_EQ(v10->init(StderrLogger, nullptr), abi::kSuccess);
  ASSERT_EQ(v9->init(StderrLogger), abi::kSuccess);
  int ndev = 0;
  ASSERT_EQ(v9->devices(&ndev), abi::kSuccess);
  ASSERT_GE(ndev, 1);
  abi::PropertiesV9 props;
  memset(&props, 0xcd, sizeof(props));
  ASSERT_EQ(v10->getProperties(0, &props), abi::kSuccess);
  EXPECT_STREQ(props.name, "lo");
  EXPECT_EQ(props.ptrSupport, abi::kPtrHost);
  EXPECT_EQ(props.vProps.ndevs, 1);
  EXPECT_EQ(props.maxCollBytes, props.maxP2pBytes);
  memset(&props, 0xcd, sizeof(props));
  ASSERT_EQ(v9->getProperties(0, &props), abi::kSuccess);
  EXPECT_GT(props.speed, 0);
  int vdev = -1;
  abi::VDeviceProps one{1, {0, 0, 0, 0}};
  EXPECT_EQ(v9->makeVDevice(&vdev, &one), abi::kSuccess);
  EXPECT_EQ(vdev, 0);
  abi::VDeviceProps two{2, {0, 0, 0, 0}};
  EXPECT_NE(v9->makeVDevice(&vdev, &two), abi::kSuccess);
}

TEST_F(DlopenTest, V8PropertiesLayout) {
  const auto* v8 = plugin_.Symbol<abi::NetV8>("ncclNetPlugin_v8");
  ASSERT_NE(v8, nullptr);
  ASSERT_EQ(v8->init(StderrLogger), abi::kSuccess);
  abi::PropertiesV8 props;
  memset(&props, 0xef, sizeof(props));
  ASSERT_EQ(v8->getProperties(0, &props), abi::kSuccess);
  EXPECT_STREQ(props.name, "lo");
  EXPECT_EQ(props.ptrSupport, abi::kPtrHost);
  EXPECT_GT(props.speed, 0);
  EXPECT_GE(props.maxRecvs, 1);
  EXPECT_EQ(props.netDeviceType, abi::kDeviceHost);
}

TEST_F(DlopenTest, NullAndForeignArgumentsAreErrorsNotCrashes) {
  const abi::NetV11* net = plugin_.v11();
  void* ctx = nullptr;
  ASSERT_EQ(net->init(&ctx, 1, nullptr, StderrLogger, nullptr), abi::kSuccess);
  EXPECT_NE(net->devices(nullptr), abi::kSuccess);
  EXPECT_NE(net->getProperties(0, nullptr), abi::kSuccess);
  uint64_t zeros[16] = {};
  int done = 0;
  EXPECT_NE(net->test(zeros, &done, nullptr), abi::kSuccess);
  EXPECT_NE(net->closeSend(zeros), abi::kSuccess);
  EXPECT_NE(net->closeRecv(zeros), abi::kSuccess);
  EXPECT_NE(net->closeListen(zeros), abi::kSuccess);
  void* request = nullptr;
  EXPECT_NE(net->isend(zeros, zeros, 8, 0, nullptr, nullptr, &request), abi::kSuccess);
  uint8_t handle[abi::kNetHandleMaxSize] = {};
  void* comm = nullptr;
  abi::DeviceHandleV7* dev = nullptr;
  EXPECT_NE(net->connect(ctx, 0, handle, &comm, &dev), abi::kSuccess);  // not our handle
  EXPECT_EQ(comm, nullptr);
  EXPECT_NE(net->listen(ctx, 99, handle, &comm), abi::kSuccess);
  EXPECT_NE(net->finalize(zeros), abi::kSuccess);
  EXPECT_EQ(net->finalize(ctx), abi::kSuccess);
}

}  // namespace
}  // namespace devmem
