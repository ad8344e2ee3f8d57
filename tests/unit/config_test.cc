#include "plugin/core/config.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <map>
#include <string>

namespace devmem {
namespace {

// Builds a getenv replacement over a fixed map.
std::function<const char*(const char*)> Env(std::map<std::string, std::string> values) {
  auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(values));
  return [shared](const char* name) -> const char* {
    auto it = shared->find(name);
    return it == shared->end() ? nullptr : it->second.c_str();
  };
}

TEST(ConfigTest, DefaultsWhenNothingIsSet) {
  Result<Config> config = Config::FromEnvironment(Env({}));
  ASSERT_TRUE(config.ok()) << config.status().message();
  EXPECT_EQ(config->data_sockets, 4);
  EXPECT_EQ(config->worker_threads, 1);
  EXPECT_EQ(config->chunk_bytes, 512u << 10);
  EXPECT_EQ(config->inline_bytes, 1024u);
  EXPECT_EQ(config->max_recvs, 1);
  EXPECT_EQ(config->socket_family, 0);
  EXPECT_TRUE(config->socket_ifname.empty());
  EXPECT_EQ(config->unpack, UnpackMode::kPlugin);
}

TEST(ConfigTest, ReadsEveryVariable) {
  Result<Config> config = Config::FromEnvironment(Env({{"NCCL_DEVMEM_NSOCKS", "8"},
                                                       {"NCCL_DEVMEM_NTHREADS", "4"},
                                                       {"NCCL_DEVMEM_CHUNK_SIZE", "1M"},
                                                       {"NCCL_DEVMEM_INLINE_BYTES", "0"},
                                                       {"NCCL_DEVMEM_MAX_RECVS", "8"},
                                                       {"NCCL_DEVMEM_HANDSHAKE_TIMEOUT_MS", "500"},
                                                       {"NCCL_SOCKET_IFNAME", "^docker,lo"},
                                                       {"NCCL_SOCKET_FAMILY", "AF_INET6"},
                                                       {"NCCL_DEVMEM_EMULATE", "1"},
                                                       {"NCCL_DEVMEM_REQUIRE", "1"},
                                                       {"NCCL_DEVMEM_RX_QUEUES", "6,7"},
                                                       {"NCCL_DEVMEM_RX_REGION_BYTES", "256M"},
                                                       {"NCCL_DEVMEM_UNPACK", "NCCL"}}));
  ASSERT_TRUE(config.ok()) << config.status().message();
  EXPECT_EQ(config->data_sockets, 8);
  EXPECT_EQ(config->worker_threads, 4);
  EXPECT_EQ(config->chunk_bytes, 1u << 20);
  EXPECT_EQ(config->inline_bytes, 0u);
  EXPECT_EQ(config->max_recvs, 8);
  EXPECT_EQ(config->handshake_timeout_ms, 500);
  EXPECT_EQ(config->socket_ifname, "^docker,lo");
  EXPECT_EQ(config->socket_family, AF_INET6);
  EXPECT_TRUE(config->emulate_devmem);
  EXPECT_TRUE(config->require_devmem);
  EXPECT_EQ(config->rx_queues, (std::vector<uint32_t>{6, 7}));
  EXPECT_EQ(config->rx_region_bytes, 256u << 20);
  EXPECT_EQ(config->unpack, UnpackMode::kNccl);
}

struct BadValue {
  const char* name;
  const char* value;
  const char* expect_in_message;
};

class ConfigRejects : public ::testing::TestWithParam<BadValue> {};

TEST_P(ConfigRejects, WithAMessageNamingVariableValueAndRange) {
  const BadValue& bad = GetParam();
  Result<Config> config = Config::FromEnvironment(Env({{bad.name, bad.value}}));
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().kind(), ErrorKind::kInvalidArgument);
  const std::string& message = config.status().message();
  EXPECT_NE(message.find(bad.name), std::string::npos) << message;
  EXPECT_NE(message.find(bad.expect_in_message), std::string::npos) << message;
}

INSTANTIATE_TEST_SUITE_P(
    BadValues, ConfigRejects,
    ::testing::Values(BadValue{"NCCL_DEVMEM_NSOCKS", "0", "[1, 64]"},
                      BadValue{"NCCL_DEVMEM_NSOCKS", "65", "[1, 64]"},
                      BadValue{"NCCL_DEVMEM_NSOCKS", "two", "not an integer"},
                      BadValue{"NCCL_DEVMEM_NSOCKS", "4x", "trailing characters"},
                      BadValue{"NCCL_DEVMEM_NSOCKS", "", "empty"},
                      BadValue{"NCCL_DEVMEM_NSOCKS", "99999999999999999999", "not an integer"},
                      BadValue{"NCCL_DEVMEM_NTHREADS", "17", "[1, 16]"},
                      BadValue{"NCCL_DEVMEM_NTHREADS", "-1", "[1, 16]"},
                      BadValue{"NCCL_DEVMEM_CHUNK_SIZE", "1K", "[4096, 67108864]"},
                      BadValue{"NCCL_DEVMEM_CHUNK_SIZE", "1G", "out of range"},
                      BadValue{"NCCL_DEVMEM_INLINE_BYTES", "65537", "[0, 65536]"},
                      BadValue{"NCCL_DEVMEM_MAX_RECVS", "9", "[1, 8]"},
                      BadValue{"NCCL_DEVMEM_HANDSHAKE_TIMEOUT_MS", "5", "[100, 3600000]"},
                      BadValue{"NCCL_SOCKET_FAMILY", "AF_UNIX", "AF_INET and AF_INET6"},
                      BadValue{"NCCL_DEVMEM_EMULATE", "2", "[0, 1]"},
                      BadValue{"NCCL_DEVMEM_TCP_USER_TIMEOUT_MS", "-1", "[0, 3600000]"},
                      BadValue{"NCCL_DEVMEM_REQUIRE", "yes", "not an integer"},
                      BadValue{"NCCL_DEVMEM_RX_REGION_BYTES", "512K", "[1048576, 68719476736]"},
                      BadValue{"NCCL_DEVMEM_RX_REGION_BYTES", "1048577", "multiple of the 4096"},
                      BadValue{"NCCL_DEVMEM_EMULATE_SPLIT_PERCENT", "101", "[0, 100]"},
                      BadValue{"NCCL_DEVMEM_EMULATE_LINEAR_PERCENT", "-5", "[0, 100]"},
                      BadValue{"NCCL_DEVMEM_RX_QUEUES", "1,1", "twice"},
                      BadValue{"NCCL_DEVMEM_RX_QUEUES", "", "empty"},
                      BadValue{"NCCL_SOCKET_IFNAME", "^", "names no interface"},
                      BadValue{"NCCL_SOCKET_IFNAME", "^=", "names no interface"},
                      BadValue{"NCCL_SOCKET_IFNAME", ",", "names no interface"},
                      BadValue{"NCCL_DEVMEM_UNPACK", "gpu", "plugin and nccl"},
                      BadValue{"NCCL_DEVMEM_UNPACK", "", "plugin and nccl"}));

TEST(ConfigTest, RejectsMoreThreadsThanSockets) {
  Result<Config> config =
      Config::FromEnvironment(Env({{"NCCL_DEVMEM_NSOCKS", "2"}, {"NCCL_DEVMEM_NTHREADS", "3"}}));
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("NCCL_DEVMEM_NTHREADS=3 exceeds NCCL_DEVMEM_NSOCKS=2"),
            std::string::npos)
      << config.status().message();
}

TEST(ParseBoundedIntegerTest, AcceptsBinarySuffixes) {
  EXPECT_EQ(ParseBoundedInteger("X", "4k", 0, 1 << 30).value(), 4096);
  EXPECT_EQ(ParseBoundedInteger("X", "2M", 0, 1 << 30).value(), 2 << 20);
  EXPECT_EQ(ParseBoundedInteger("X", "1G", 0, int64_t{1} << 31).value(), int64_t{1} << 30);
  EXPECT_FALSE(ParseBoundedInteger("X", "8G", 0, int64_t{1} << 31).ok());
  EXPECT_FALSE(ParseBoundedInteger("X", "1T", 0, int64_t{1} << 31).ok());
}

}  // namespace
}  // namespace devmem

namespace devmem {
namespace {

TEST(ConfigTest, DefaultThreadCountNeverExceedsTheSocketCount) {
  for (const char* sockets : {"1", "2", "64"}) {
    Result<Config> config = Config::FromEnvironment(Env({{"NCCL_DEVMEM_NSOCKS", sockets}}));
    ASSERT_TRUE(config.ok()) << config.status().message();
    EXPECT_LE(config->worker_threads, config->data_sockets);
  }
}

}  // namespace
}  // namespace devmem
