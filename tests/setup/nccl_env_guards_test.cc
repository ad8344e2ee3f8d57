// The NCCL settings init turns off for the GPU receive path: set only where unset, user values
// kept and warned about. Protocol syntax from NVIDIA/nccl src/graph/tuning.cc (NCCL_PROTO goes
// through parseList: comma-separated names compared with strcasecmp, a leading '^' inverts).
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "plugin/setup/nccl_env_guards.h"

namespace devmem {
namespace {

struct FakeEnv {
  std::map<std::string, std::string> values;
  EnvGetter getter() const {
    return [this](const char* name) -> const char* {
      auto it = values.find(name);
      return it == values.end() ? nullptr : it->second.c_str();
    };
  }
};

std::map<std::string, std::string> Settings(const NcclEnvPlan& plan) {
  std::map<std::string, std::string> out;
  for (const NcclEnvSetting& s : plan.to_set) out[s.name] = s.value;
  return out;
}

TEST(NcclEnvGuardsTest, UnpackTurnsOffPatRegistrationAndLl128WhenUnset) {
  FakeEnv env;
  NcclEnvPlan plan = PlanNcclEnvGuards(
      {.unpack = true, .gpu_rx_region = true, .cuda_pointers = true, .devmem_tx = false},
      env.getter());
  EXPECT_EQ(Settings(plan), (std::map<std::string, std::string>{{"NCCL_PAT_ENABLE", "0"},
                                                                {"NCCL_GRAPH_REGISTER", "0"},
                                                                {"NCCL_LOCAL_REGISTER", "0"},
                                                                {"NCCL_PROTO", "^LL128"},
                                                                {"NCCL_NET_GDR_READ", "0"}}));
  EXPECT_TRUE(plan.warnings.empty());
  EXPECT_FALSE(plan.unpack_unsafe);
  for (const NcclEnvSetting& s : plan.to_set) EXPECT_FALSE(s.reason.empty()) << s.name;
}

TEST(NcclEnvGuardsTest, PluginConsumerNeedsOnlyLl128AndGdrRead) {
  FakeEnv env;
  NcclEnvPlan plan = PlanNcclEnvGuards(
      {.unpack = false, .gpu_rx_region = true, .cuda_pointers = true, .devmem_tx = false},
      env.getter());
  EXPECT_EQ(Settings(plan), (std::map<std::string, std::string>{{"NCCL_PROTO", "^LL128"},
                                                                {"NCCL_NET_GDR_READ", "0"}}));
}

TEST(NcclEnvGuardsTest, PlainTcpHostsChangeNothing) {
  FakeEnv env;
  NcclEnvPlan plan = PlanNcclEnvGuards({}, env.getter());
  EXPECT_TRUE(plan.to_set.empty());
  EXPECT_TRUE(plan.warnings.empty());
}

TEST(NcclEnvGuardsTest, DevmemTxLiftsTheGdrReadGuard) {
  FakeEnv env;
  NcclEnvPlan plan = PlanNcclEnvGuards(
      {.unpack = false, .gpu_rx_region = true, .cuda_pointers = true, .devmem_tx = true},
      env.getter());
  EXPECT_EQ(Settings(plan).count("NCCL_NET_GDR_READ"), 0u);
}

TEST(NcclEnvGuardsTest, UserValuesAreKeptAndConflictsMakeUnpackUnsafe) {
  FakeEnv env;
  env.values = {{"NCCL_PAT_ENABLE", "1"}, {"NCCL_GRAPH_REGISTER", "0"}};
  NcclEnvPlan plan = PlanNcclEnvGuards(
      {.unpack = true, .gpu_rx_region = true, .cuda_pointers = true, .devmem_tx = false},
      env.getter());
  std::map<std::string, std::string> set = Settings(plan);
  EXPECT_EQ(set.count("NCCL_PAT_ENABLE"), 0u);      // the user's 1 stays
  EXPECT_EQ(set.count("NCCL_GRAPH_REGISTER"), 0u);  // the user's 0 stays, no conflict
  // The plugin's consumer takes over, so no unpack-only setting is forced on the job; the
  // GPU region's own guards stay.
  EXPECT_EQ(set.count("NCCL_LOCAL_REGISTER"), 0u);
  EXPECT_EQ(set["NCCL_PROTO"], "^LL128");
  EXPECT_EQ(set["NCCL_NET_GDR_READ"], "0");
  EXPECT_TRUE(plan.unpack_unsafe);
  ASSERT_EQ(plan.warnings.size(), 1u);
  EXPECT_NE(plan.warnings[0].find("NCCL_PAT_ENABLE=1"), std::string::npos);
}

TEST(NcclEnvGuardsTest, UserGdrReadIsKeptWithAWarningButUnpackStaysSafe) {
  FakeEnv env;
  env.values = {{"NCCL_NET_GDR_READ", "1"}};
  NcclEnvPlan plan = PlanNcclEnvGuards(
      {.unpack = true, .gpu_rx_region = true, .cuda_pointers = true, .devmem_tx = false},
      env.getter());
  EXPECT_EQ(Settings(plan).count("NCCL_NET_GDR_READ"), 0u);
  EXPECT_FALSE(plan.unpack_unsafe);
  EXPECT_EQ(plan.warnings.size(), 1u);
}

TEST(NcclEnvGuardsTest, ProtoThatKeepsLl128IsWarnedAbout) {
  FakeEnv env;
  env.values = {{"NCCL_PROTO", "Simple,LL128"}};
  NcclEnvPlan plan = PlanNcclEnvGuards({.unpack = false, .gpu_rx_region = true}, env.getter());
  EXPECT_EQ(Settings(plan).count("NCCL_PROTO"), 0u);
  ASSERT_EQ(plan.warnings.size(), 1u);
  EXPECT_NE(plan.warnings[0].find("LL128"), std::string::npos);
  env.values = {{"NCCL_PROTO", "Simple"}};
  EXPECT_TRUE(
      PlanNcclEnvGuards({.unpack = false, .gpu_rx_region = true}, env.getter()).warnings.empty());
}

// NCCL_NET_GDR_READ is one process-wide setting: it may be left to NCCL only when every NIC
// that advertises CUDA buffers sends them from GPU memory.
TEST(NcclEnvGuardsTest, DevmemTxCountsOnlyWhenEveryCudaNicHasIt) {
  const NicEnvFacts tx{.gpu_rx_region = true, .unpack = false, .devmem_tx = true};
  const NicEnvFacts tx_only{.gpu_rx_region = false, .unpack = false, .devmem_tx = true};
  const NicEnvFacts rx_only{.gpu_rx_region = true, .unpack = true, .devmem_tx = false};
  const NicEnvFacts plain{};
  NcclEnvNeeds all_tx = NeedsOf({tx, tx_only, plain});
  EXPECT_TRUE(all_tx.devmem_tx);
  EXPECT_TRUE(all_tx.cuda_pointers);
  EXPECT_TRUE(all_tx.gpu_rx_region);
  EXPECT_FALSE(all_tx.unpack);
  NcclEnvNeeds mixed = NeedsOf({tx, rx_only});
  EXPECT_FALSE(mixed.devmem_tx);  // rx_only would stage every CUDA send
  EXPECT_TRUE(mixed.unpack);
  NcclEnvNeeds none = NeedsOf({plain, plain});
  EXPECT_FALSE(none.cuda_pointers);
  EXPECT_FALSE(none.devmem_tx);
  // The guard follows: set for the mixed host, left alone where every CUDA NIC has TX.
  FakeEnv env;
  auto has_gdr_read = [](const NcclEnvPlan& plan) {
    for (const NcclEnvSetting& setting : plan.to_set) {
      if (setting.name == "NCCL_NET_GDR_READ") return true;
    }
    return false;
  };
  EXPECT_TRUE(has_gdr_read(PlanNcclEnvGuards(mixed, env.getter())));
  EXPECT_FALSE(has_gdr_read(PlanNcclEnvGuards(all_tx, env.getter())));
}

TEST(NcclEnvGuardsTest, ProtoSyntaxFollowsNcclsParseList) {
  EXPECT_TRUE(ProtoEnablesLl128(nullptr));  // unset: NCCL's tuner may choose it
  EXPECT_TRUE(ProtoEnablesLl128(""));
  EXPECT_TRUE(ProtoEnablesLl128("LL128"));
  EXPECT_TRUE(ProtoEnablesLl128("ll,ll128"));
  EXPECT_TRUE(ProtoEnablesLl128("^LL"));
  EXPECT_TRUE(ProtoEnablesLl128("^Simple"));
  EXPECT_FALSE(ProtoEnablesLl128("^LL128"));
  EXPECT_FALSE(ProtoEnablesLl128("^ll128"));
  EXPECT_FALSE(ProtoEnablesLl128("^LL,LL128"));
  EXPECT_FALSE(ProtoEnablesLl128("Simple"));
  EXPECT_FALSE(ProtoEnablesLl128("LL,Simple"));
}

}  // namespace
}  // namespace devmem
