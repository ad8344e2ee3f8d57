// What the ABI-level suites share: the plugin loaded once per test binary through dlopen, the
// way NCCL loads it, and deterministic payloads.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "plugin/abi/net_abi.h"
#include "tests/common/plugin_loader.h"

namespace devmem::testing {

inline std::vector<char> RandomBytes(size_t n, uint64_t seed) {
  std::vector<char> bytes(n);
  std::mt19937_64 rng(seed);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    memcpy(&bytes[i], &v, 8);
  }
  for (; i < n; ++i) bytes[i] = static_cast<char>(rng());
  return bytes;
}

// A fixture base whose suite loads DEVMEM_PLUGIN_PATH once and exposes its v11 table.
class PluginSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    plugin_ = new LoadedPlugin();
    ASSERT_TRUE(plugin_->Open(DEVMEM_PLUGIN_PATH)) << plugin_->error();
    net_ = plugin_->v11();
    ASSERT_NE(net_, nullptr);
  }
  static void TearDownTestSuite() {
    delete plugin_;
    plugin_ = nullptr;
  }
  static inline LoadedPlugin* plugin_ = nullptr;
  static inline const abi::NetV11* net_ = nullptr;
};

}  // namespace devmem::testing
