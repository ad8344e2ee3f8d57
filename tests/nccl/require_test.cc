// NCCL_DEVMEM_REQUIRE=1 turns the plain-TCP fallback into an error at listen, with the first
// failing readiness check; the explicitly selected emulated mode satisfies it.
// NCCL_DEVMEM_REQUIRE_TX=1 does the same for the send side at connect: loopback never runs
// devmem TX.
#include <gtest/gtest.h>

#include <cstdlib>

#include "plugin/abi/net_abi.h"
#include "tests/common/plugin_loader.h"

namespace devmem {
namespace {

TEST(RequireDevmemTest, ListenFailsUnlessDevmemOrItsEmulationRuns) {
  if (getenv("NCCL_DEVMEM_REQUIRE") == nullptr) GTEST_SKIP() << "NCCL_DEVMEM_REQUIRE unset";
  testing::LoadedPlugin plugin;
  ASSERT_TRUE(plugin.Open(DEVMEM_PLUGIN_PATH)) << plugin.error();
  const abi::NetV11* net = plugin.v11();
  void* ctx = nullptr;
  ASSERT_EQ(net->init(&ctx, 1, nullptr, testing::StderrLogger, nullptr), abi::kSuccess);
  uint8_t handle[abi::kNetHandleMaxSize];
  void* listen_comm = nullptr;
  const bool emulated = getenv("NCCL_DEVMEM_EMULATE") != nullptr;
  abi::Result result = net->listen(ctx, 0, handle, &listen_comm);
  if (emulated) {
    EXPECT_EQ(result, abi::kSuccess);
    ASSERT_NE(listen_comm, nullptr);
    EXPECT_EQ(net->closeListen(listen_comm), abi::kSuccess);
  } else {
    EXPECT_EQ(result, abi::kSystemError);
    EXPECT_EQ(listen_comm, nullptr);
  }
  EXPECT_EQ(net->finalize(ctx), abi::kSuccess);
}

TEST(RequireDevmemTest, ConnectFailsWhenDevmemTxIsRequiredButCannotRun) {
  if (getenv("NCCL_DEVMEM_REQUIRE_TX") == nullptr) {
    GTEST_SKIP() << "NCCL_DEVMEM_REQUIRE_TX unset";
  }
  testing::LoadedPlugin plugin;
  ASSERT_TRUE(plugin.Open(DEVMEM_PLUGIN_PATH)) << plugin.error();
  const abi::NetV11* net = plugin.v11();
  void* ctx = nullptr;
  ASSERT_EQ(net->init(&ctx, 1, nullptr, testing::StderrLogger, nullptr), abi::kSuccess);
  uint8_t handle[abi::kNetHandleMaxSize] = {};
  void* listen_comm = nullptr;
  ASSERT_EQ(net->listen(ctx, 0, handle, &listen_comm), abi::kSuccess);  // receiving is fine
  void* send_comm = nullptr;
  EXPECT_EQ(net->connect(ctx, 0, handle, &send_comm, nullptr), abi::kSystemError);
  EXPECT_EQ(send_comm, nullptr);
  EXPECT_EQ(net->closeListen(listen_comm), abi::kSuccess);
  EXPECT_EQ(net->finalize(ctx), abi::kSuccess);
}

}  // namespace
}  // namespace devmem
