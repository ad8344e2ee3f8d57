// What init decides from the table NCCL called and from the environment, each case in a fresh
// process (the plugin reads its configuration once per process): UNPACK is never advertised
// through the v8 table, and the NCCL settings the unpack path cannot live with are set only
// where the user left them unset.
//   - NVIDIA/nccl src/transport/net.cc (2.24.3+): LL/LL128 receives are preset with
//     NCCL_NET_OPTIONAL_RECV_COMPLETION; NCCL < 2.24 loads at most ncclNetPlugin_v8 and never
//     does, so a v8 caller cannot get UNPACK.
//   - The env guards: plugin/setup/nccl_env_guards.h says which NCCL code reads each one.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <map>
#include <string>

#include "plugin/abi/net_abi.h"
#include "tests/common/plugin_loader.h"

namespace devmem {
namespace {

using testing::LoadedPlugin;
using testing::StderrLogger;

// Runs `body` in a child with `env` applied; returns what it wrote ("" if it crashed).
std::string InChild(const std::map<std::string, std::string>& env,
                    const std::function<std::string()>& body) {
  int fds[2];
  if (pipe(fds) != 0) return "pipe failed";
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    for (const char* name :
         {"NCCL_PAT_ENABLE", "NCCL_GRAPH_REGISTER", "NCCL_LOCAL_REGISTER", "NCCL_PROTO",
          "NCCL_NET_GDR_READ", "NCCL_DEVMEM_EMULATE", "NCCL_DEVMEM_UNPACK"}) {
      unsetenv(name);
    }
    setenv("NCCL_SOCKET_IFNAME", "lo", 1);
    for (const auto& [name, value] : env) setenv(name.c_str(), value.c_str(), 1);
    std::string out = body();
    ssize_t written = write(fds[1], out.data(), out.size());
    _exit(written == static_cast<ssize_t>(out.size()) ? 0 : 1);
  }
  close(fds[1]);
  std::string out;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fds[0], buffer, sizeof(buffer))) > 0) out.append(buffer, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? out : "child failed: " + out;
}

std::string Env(const char* name) {
  const char* value = getenv(name);
  return value == nullptr ? "(unset)" : value;
}

// Loads the plugin, initializes it through `table` ("v8".."v11") and reports device 0's
// netDeviceType.
std::string DeviceTypeThrough(const std::string& table) {
  LoadedPlugin plugin;
  if (!plugin.Open(DEVMEM_PLUGIN_PATH)) return "dlopen: " + plugin.error();
  if (table == "v8") {
    const auto* net = plugin.Symbol<abi::NetV8>("ncclNetPlugin_v8");
    abi::PropertiesV8 props{};
    if (net->init(StderrLogger) != abi::kSuccess ||
        net->getProperties(0, &props) != abi::kSuccess) {
      return "v8 init/getProperties failed";
    }
    return std::to_string(props.netDeviceType);
  }
  if (table == "v9") {
    const auto* net = plugin.Symbol<abi::NetV9>("ncclNetPlugin_v9");
    abi::PropertiesV9 props{};
    if (net->init(StderrLogger) != abi::kSuccess ||
        net->getProperties(0, &props) != abi::kSuccess) {
      return "v9 init/getProperties failed";
    }
    return std::to_string(props.netDeviceType);
  }
  const abi::NetV11* net = plugin.v11();
  void* ctx = nullptr;
  abi::PropertiesV11 props{};
  if (net->init(&ctx, 1, nullptr, StderrLogger, nullptr) != abi::kSuccess ||
      net->getProperties(0, &props) != abi::kSuccess) {
    return "v11 init/getProperties failed";
  }
  net->finalize(ctx);
  return std::to_string(props.netDeviceType);
}

const std::map<std::string, std::string> kEmulatedUnpack = {{"NCCL_DEVMEM_EMULATE", "1"},
                                                            {"NCCL_DEVMEM_UNPACK", "nccl"}};

TEST(InitEnvTest, UnpackIsNeverAdvertisedThroughTheV8Table) {
  const std::string host = std::to_string(abi::kDeviceHost);
  const std::string unpack = std::to_string(abi::kDeviceUnpack);
  EXPECT_EQ(InChild(kEmulatedUnpack, [] { return DeviceTypeThrough("v8"); }), host);
  EXPECT_EQ(InChild(kEmulatedUnpack, [] { return DeviceTypeThrough("v9"); }), unpack);
  EXPECT_EQ(InChild(kEmulatedUnpack, [] { return DeviceTypeThrough("v11"); }), unpack);
}

TEST(InitEnvTest, UnpackSetsNcclGuardsOnlyWhereUnset) {
  std::string out = InChild(kEmulatedUnpack, [] {
    std::string type = DeviceTypeThrough("v11");
    return type + " " + Env("NCCL_PAT_ENABLE") + " " + Env("NCCL_GRAPH_REGISTER") + " " +
           Env("NCCL_LOCAL_REGISTER") + " " + Env("NCCL_PROTO");
  });
  EXPECT_EQ(out, std::to_string(abi::kDeviceUnpack) + " 0 0 0 ^LL128");

  std::map<std::string, std::string> user = kEmulatedUnpack;
  user.insert_or_assign("NCCL_PROTO", std::string("Simple"));  // a move: GCC 12 -O3 -Wrestrict
  user.insert_or_assign("NCCL_GRAPH_REGISTER", std::string("0"));  // a move: GCC 12 -O3 -Wrestrict
  out = InChild(user, [] { return Env("NCCL_PROTO") + " " + Env("NCCL_GRAPH_REGISTER"); });
  EXPECT_EQ(out, "Simple 0");  // nothing initialized yet: the child did not load the plugin
  out = InChild(user, [] {
    DeviceTypeThrough("v11");
    return Env("NCCL_PROTO") + " " + Env("NCCL_GRAPH_REGISTER") + " " + Env("NCCL_PAT_ENABLE");
  });
  EXPECT_EQ(out, "Simple 0 0");
}

TEST(InitEnvTest, AUserForcedConflictFallsBackToThePluginConsumer) {
  std::map<std::string, std::string> user = kEmulatedUnpack;
  user.insert_or_assign("NCCL_PAT_ENABLE", std::string("1"));  // a move: GCC 12 -O3 -Wrestrict
  std::string out = InChild(user, [] {
    std::string type = DeviceTypeThrough("v11");
    return type + " " + Env("NCCL_PAT_ENABLE") + " " + Env("NCCL_LOCAL_REGISTER");
  });
  // No UNPACK, the user's value kept, and no unpack-only setting forced on the job.
  EXPECT_EQ(out, std::to_string(abi::kDeviceHost) + " 1 (unset)");
}

TEST(InitEnvTest, HostModeChangesNoNcclSetting) {
  std::string out = InChild({}, [] {
    DeviceTypeThrough("v11");
    return Env("NCCL_PAT_ENABLE") + " " + Env("NCCL_PROTO") + " " + Env("NCCL_NET_GDR_READ");
  });
  EXPECT_EQ(out, "(unset) (unset) (unset)");
}

}  // namespace
}  // namespace devmem
