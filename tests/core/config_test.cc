#include "plugin/core/config.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/socket.h>

#include <cstdint>
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
  Result<Config> config = Config::FromEnvironment(Env({}), /*usable_cpus=*/2);
  ASSERT_TRUE(config.ok()) << config.status().message();
  EXPECT_EQ(config->data_sockets, 2);
  EXPECT_EQ(config->worker_threads, 1);
  EXPECT_EQ(config->chunk_bytes, 512u << 10);
  // The proxy moves everything: up to 4 MiB inline, above 1 MiB only with no other send in flight.
  EXPECT_EQ(config->inline_bytes, 4u << 20);
  EXPECT_EQ(config->queued_inline_bytes, 1u << 20);
  EXPECT_EQ(config->proxy_bytes, uint64_t{1} << 30);
  EXPECT_EQ(config->socket_buffer_bytes, 0u);
  EXPECT_EQ(config->gpu_consumer_timeout_ms, 20000);
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
                                                       {"NCCL_DEVMEM_GPU_CONSUMER_TIMEOUT_MS", "0"},
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
  EXPECT_EQ(config->gpu_consumer_timeout_ms, 0);
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
                      BadValue{"NCCL_DEVMEM_NSOCKS", "99999999999999999999", "out of range"},
                      BadValue{"NCCL_DEVMEM_NSOCKS", " 4", "leading blank"},
                      BadValue{"NCCL_DEVMEM_NSOCKS", "4 ", "trailing characters"},
                      BadValue{"NCCL_DEVMEM_NSOCKS", "08", "a leading 0 means octal"},
                      BadValue{"NCCL_DEVMEM_NSOCKS", "0x", "trailing characters"},
                      BadValue{"NCCL_DEVMEM_NSOCKS", "4K", "not a size"},
                      BadValue{"NCCL_DEVMEM_NTHREADS", "1k", "not a size"},
                      BadValue{"NCCL_DEVMEM_MAX_RECVS", "1M", "not a size"},
                      BadValue{"NCCL_DEVMEM_HANDSHAKE_TIMEOUT_MS", "1K", "[100, 3600000]"},
                      BadValue{"NCCL_DEVMEM_TCP_USER_TIMEOUT_MS", "1G", "not a size"},
                      BadValue{"NCCL_DEVMEM_EMULATE_SPLIT_PERCENT", "0K", "not a size"},
                      BadValue{"NCCL_DEVMEM_REQUIRE", "1K", "not a size"},
                      BadValue{"NCCL_DEVMEM_CHUNK_SIZE", " 1M", "leading blank"},
                      BadValue{"NCCL_DEVMEM_CHUNK_SIZE", "1MB", "trailing characters"},
                      BadValue{"NCCL_DEVMEM_NTHREADS", "17", "[1, 16]"},
                      BadValue{"NCCL_DEVMEM_NTHREADS", "-1", "[1, 16]"},
                      BadValue{"NCCL_DEVMEM_CHUNK_SIZE", "1K", "[4096, 67108864]"},
                      BadValue{"NCCL_DEVMEM_CHUNK_SIZE", "1G", "out of range"},
                      BadValue{"NCCL_DEVMEM_INLINE_BYTES", "16777217", "[0, 16777216]"},
                      BadValue{"NCCL_DEVMEM_PROXY_BYTES", "2G", "[0, 1073741824]"},
                      BadValue{"NCCL_DEVMEM_PROXY_BYTES", "-1", "[0, 1073741824]"},
                      BadValue{"NCCL_DEVMEM_SOCKET_BUFFER_BYTES", "2G", "[0, 1073741824]"},
                      BadValue{"NCCL_DEVMEM_MAX_RECVS", "9", "[1, 8]"},
                      BadValue{"NCCL_DEVMEM_HANDSHAKE_TIMEOUT_MS", "5", "[100, 3600000]"},
                      BadValue{"NCCL_SOCKET_FAMILY", "AF_UNIX", "AF_INET and AF_INET6"},
                      BadValue{"NCCL_DEVMEM_EMULATE", "2", "[0, 1]"},
                      BadValue{"NCCL_DEVMEM_TCP_USER_TIMEOUT_MS", "-1", "[0, 3600000]"},
                      BadValue{"NCCL_DEVMEM_GPU_CONSUMER_TIMEOUT_MS", "-1", "[0, 3600000]"},
                      BadValue{"NCCL_DEVMEM_GPU_CONSUMER_TIMEOUT_MS", "3600001", "[0, 3600000]"},
                      BadValue{"NCCL_DEVMEM_GPU_CONSUMER_TIMEOUT_MS", "10s", "trailing characters"},
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
                      BadValue{"NCCL_DEVMEM_UNPACK", "", "plugin and nccl"},
                      BadValue{"NCCL_DEVMEM_EMULATE_TX", "2", "[0, 1]"},
                      BadValue{"NCCL_DEVMEM_VNIC_STRIPING", "fast", "adaptive and roundrobin"},
                      BadValue{"NCCL_DEVMEM_RAILS", "eth0", "NAME=RAIL"},
                      BadValue{"NCCL_DEVMEM_RAILS", "eth0=1,eth0=2", "twice"}));

TEST(ConfigTest, ReadsTheTxRailAndStripingVariables) {
  Result<Config> config = Config::FromEnvironment(Env({{"NCCL_DEVMEM_EMULATE_TX", "1"},
                                                       {"NCCL_DEVMEM_VNIC_STRIPING", "adaptive"},
                                                       {"NCCL_DEVMEM_RAILS", "eth0=2/1"}}));
  ASSERT_TRUE(config.ok()) << config.status().message();
  EXPECT_TRUE(config->emulate_tx);
  EXPECT_TRUE(config->adaptive_stripes);
  ASSERT_EQ(config->rails.size(), 1u);
  EXPECT_EQ(config->rails[0].rail, 2);
  EXPECT_EQ(config->rails[0].plane, 1);
  Result<Config> defaults = Config::FromEnvironment(Env({}));
  ASSERT_TRUE(defaults.ok());
  EXPECT_FALSE(defaults->emulate_tx);
  EXPECT_FALSE(defaults->adaptive_stripes);  // round-robin: measured better on equal members
  EXPECT_TRUE(defaults->rails.empty());
}

// The host path's defaults follow the CPUs (perf/RESULTS.md "Host path defaults by CPU count":
// one thread won on 2 CPUs, 4 workers above 64 KiB on 16).
TEST(ConfigTest, HostPathDefaultsFollowTheUsableCpus) {
  for (int cpus : {1, 2, 7}) {
    Result<Config> config = Config::FromEnvironment(Env({}), cpus);
    ASSERT_TRUE(config.ok()) << config.status().message();
    EXPECT_EQ(config->data_sockets, 2) << cpus << " CPUs";
    EXPECT_EQ(config->worker_threads, 1) << cpus << " CPUs";
    EXPECT_EQ(config->proxy_bytes, uint64_t{1} << 30) << cpus << " CPUs";
    EXPECT_EQ(config->usable_cpus, cpus);
  }
  for (int cpus : {8, 16, 224}) {
    Result<Config> config = Config::FromEnvironment(Env({}), cpus);
    ASSERT_TRUE(config.ok()) << config.status().message();
    EXPECT_EQ(config->data_sockets, 4) << cpus << " CPUs";
    EXPECT_EQ(config->worker_threads, 4) << cpus << " CPUs";
    EXPECT_EQ(config->proxy_bytes, 64u << 10) << cpus << " CPUs";
  }
  // Fewer sockets than the default threads: the threads follow the sockets.
  Result<Config> two_sockets = Config::FromEnvironment(Env({{"NCCL_DEVMEM_NSOCKS", "2"}}), 16);
  ASSERT_TRUE(two_sockets.ok());
  EXPECT_EQ(two_sockets->worker_threads, 2);
  EXPECT_EQ(two_sockets->proxy_bytes, 64u << 10);
  Result<Config> one_socket = Config::FromEnvironment(Env({{"NCCL_DEVMEM_NSOCKS", "1"}}), 16);
  ASSERT_TRUE(one_socket.ok());
  EXPECT_EQ(one_socket->worker_threads, 1);
  EXPECT_EQ(one_socket->proxy_bytes, uint64_t{1} << 30);  // no worker to hand anything to
}

// Inline (header and payload on the control stream) is the proxy thread's one-stream path: its
// default follows the proxy limit within [32 KiB, 4 MiB], and above 1 MiB only for a message
// alone on its comm (queued_inline_bytes); a value the user set wins, alone or queued.
TEST(ConfigTest, TheInlineDefaultFollowsTheProxyLimit) {
  for (int cpus : {1, 2, 7}) {
    Result<Config> config = Config::FromEnvironment(Env({}), cpus);
    ASSERT_TRUE(config.ok());
    EXPECT_EQ(config->inline_bytes, 4u << 20) << cpus << " CPUs";
    EXPECT_EQ(config->queued_inline_bytes, 1u << 20) << cpus << " CPUs";
  }
  Result<Config> many = Config::FromEnvironment(Env({}), 16);
  ASSERT_TRUE(many.ok());
  EXPECT_EQ(many->inline_bytes, 64u << 10);  // = the 64 KiB proxy limit with workers
  EXPECT_EQ(many->queued_inline_bytes, 64u << 10);
  Result<Config> small = Config::FromEnvironment(Env({{"NCCL_DEVMEM_PROXY_BYTES", "4K"}}), 2);
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->inline_bytes, 32u << 10);
  EXPECT_EQ(small->queued_inline_bytes, 32u << 10);
  Result<Config> set = Config::FromEnvironment(
      Env({{"NCCL_DEVMEM_PROXY_BYTES", "4K"}, {"NCCL_DEVMEM_INLINE_BYTES", "2M"}}), 2);
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->inline_bytes, 2u << 20);
  EXPECT_EQ(set->queued_inline_bytes, 2u << 20);
}

TEST(ConfigTest, TheProxyDefaultFollowsAThreadCountTheUserSet) {
  // Threads asked for on a small host get the messages above 64 KiB; one thread on a large
  // host moves everything itself; an explicit proxy limit always wins.
  Result<Config> threads = Config::FromEnvironment(Env({{"NCCL_DEVMEM_NTHREADS", "2"}}), 2);
  ASSERT_TRUE(threads.ok());
  EXPECT_EQ(threads->worker_threads, 2);
  // More threads than the small host's default sockets: the sockets follow the threads.
  Result<Config> four = Config::FromEnvironment(Env({{"NCCL_DEVMEM_NTHREADS", "4"}}), 2);
  ASSERT_TRUE(four.ok()) << four.status().message();
  EXPECT_EQ(four->data_sockets, 4);
  EXPECT_EQ(threads->proxy_bytes, 64u << 10);
  Result<Config> one = Config::FromEnvironment(Env({{"NCCL_DEVMEM_NTHREADS", "1"}}), 16);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->worker_threads, 1);
  EXPECT_EQ(one->proxy_bytes, uint64_t{1} << 30);
  Result<Config> both = Config::FromEnvironment(
      Env({{"NCCL_DEVMEM_NTHREADS", "4"}, {"NCCL_DEVMEM_PROXY_BYTES", "1M"}}), 2);
  ASSERT_TRUE(both.ok());
  EXPECT_EQ(both->proxy_bytes, 1u << 20);
  Result<Config> zero = Config::FromEnvironment(Env({{"NCCL_DEVMEM_PROXY_BYTES", "0"}}), 16);
  ASSERT_TRUE(zero.ok());
  EXPECT_EQ(zero->proxy_bytes, 0u);  // 0 is a value (every message to the workers), not "unset"
}

TEST(ConfigTest, UsableCpuCountMatchesTheAffinityMask) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  EXPECT_EQ(UsableCpuCount(), CPU_COUNT(&set));
}

TEST(ConfigTest, RejectsMoreThreadsThanSockets) {
  Result<Config> config =
      Config::FromEnvironment(Env({{"NCCL_DEVMEM_NSOCKS", "2"}, {"NCCL_DEVMEM_NTHREADS", "3"}}));
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("NCCL_DEVMEM_NTHREADS=3 exceeds NCCL_DEVMEM_NSOCKS=2"),
            std::string::npos)
      << config.status().message();
}

TEST(ParseBoundedIntegerTest, SizesAcceptBinarySuffixes) {
  constexpr IntegerUnit kBytes = IntegerUnit::kBytes;
  EXPECT_EQ(ParseBoundedInteger("X", "4k", 0, 1 << 30, kBytes).value(), 4096);
  EXPECT_EQ(ParseBoundedInteger("X", "2M", 0, 1 << 30, kBytes).value(), 2 << 20);
  EXPECT_EQ(ParseBoundedInteger("X", "1G", 0, int64_t{1} << 31, kBytes).value(), int64_t{1} << 30);
  EXPECT_EQ(ParseBoundedInteger("X", "0x10K", 0, 1 << 30, kBytes).value(), 16 << 10);
  EXPECT_FALSE(ParseBoundedInteger("X", "8G", 0, int64_t{1} << 31, kBytes).ok());
  EXPECT_FALSE(ParseBoundedInteger("X", "1T", 0, int64_t{1} << 31, kBytes).ok());
  EXPECT_FALSE(ParseBoundedInteger("X", "9223372036854775807K", 0, INT64_MAX, kBytes).ok());
}

TEST(ParseBoundedIntegerTest, OnlySizesAcceptSuffixes) {
  Result<int64_t> parsed = ParseBoundedInteger("NCCL_X_MS", "4K", 0, 1 << 30);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().message(),
            "NCCL_X_MS=\"4K\" is invalid (a size suffix, on a variable that is not a size); "
            "accepted range is [0, 1073741824]");
}

TEST(ParseBoundedIntegerTest, ReadsIntegersLikeNcclReadsItsOwn) {
  // NCCL's ncclLoadParam: strtoll(value, nullptr, 0). A leading 0 is octal, 0x is hex, and a
  // sign is part of the number.
  EXPECT_EQ(ParseBoundedInteger("X", "010", -100, 100).value(), 8);
  EXPECT_EQ(ParseBoundedInteger("X", "0x10", -100, 100).value(), 16);
  EXPECT_EQ(ParseBoundedInteger("X", "0X1f", -100, 100).value(), 31);
  EXPECT_EQ(ParseBoundedInteger("X", "+4", -100, 100).value(), 4);
  EXPECT_EQ(ParseBoundedInteger("X", "-0x10", -100, 100).value(), -16);
  EXPECT_EQ(ParseBoundedInteger("X", "0", -100, 100).value(), 0);
  EXPECT_EQ(ParseBoundedInteger("X", "010K", 0, 1 << 20, IntegerUnit::kBytes).value(), 8 << 10);
  // What strtoll would skip or stop at is an error here, never a silently different number.
  for (const char* bad : {" 4", "\t4", "\n4", "4 ", "4\n", "+ 4", "--4", "1e3", "09", "0x", "0b101",
                          "-0B1", "4.0", "\xd9\xa4"}) {
    EXPECT_FALSE(ParseBoundedInteger("X", bad, -100, 100).ok()) << "\"" << bad << "\"";
  }
}

TEST(ParseBoundedIntegerTest, RangesNearInt64MinDoNotOverflow) {
  EXPECT_EQ(ParseBoundedInteger("X", "-9223372036854775808", INT64_MIN, INT64_MAX).value(),
            INT64_MIN);
  EXPECT_EQ(ParseBoundedInteger("X", "-1", INT64_MIN, 0).value(), -1);
  EXPECT_EQ(ParseBoundedInteger("X", "-8G", INT64_MIN, 0, IntegerUnit::kBytes).value(),
            -(int64_t{8} << 30));
  EXPECT_EQ(ParseBoundedInteger("X", "-8589934592G", INT64_MIN, 0, IntegerUnit::kBytes).value(),
            INT64_MIN);
  EXPECT_FALSE(ParseBoundedInteger("X", "-8589934593G", INT64_MIN, 0, IntegerUnit::kBytes).ok());
  EXPECT_FALSE(ParseBoundedInteger("X", "-9223372036854775809", INT64_MIN, 0).ok());
  EXPECT_FALSE(ParseBoundedInteger("X", "0", INT64_MIN, INT64_MIN + 5).ok());
  EXPECT_EQ(ParseBoundedInteger("X", "9223372036854775807", INT64_MIN, INT64_MAX).value(),
            INT64_MAX);
}

}  // namespace
}  // namespace devmem

namespace devmem {
namespace {

TEST(ConfigTest, IntegersAndSizesUseNcclsSyntax) {
  Result<Config> config = Config::FromEnvironment(Env({{"NCCL_DEVMEM_NSOCKS", "010"},
                                                       {"NCCL_DEVMEM_NTHREADS", "+2"},
                                                       {"NCCL_DEVMEM_CHUNK_SIZE", "0x10000"},
                                                       {"NCCL_DEVMEM_INLINE_BYTES", "4k"},
                                                       {"NCCL_DEVMEM_RX_REGION_BYTES", "2G"}}));
  ASSERT_TRUE(config.ok()) << config.status().message();
  EXPECT_EQ(config->data_sockets, 8);
  EXPECT_EQ(config->worker_threads, 2);
  EXPECT_EQ(config->chunk_bytes, 64u << 10);
  EXPECT_EQ(config->inline_bytes, 4096u);
  EXPECT_EQ(config->rx_region_bytes, 2ull << 30);
}

TEST(ConfigTest, NcclsOwnSizesAreReadAsNcclReadsThem) {
  // ncclLoadParam takes strtoll(value, nullptr, 0) unless errno is set: blanks are skipped,
  // hex is hex, and a suffix ends the number.
  const uint64_t kDefault = Config{}.nccl_buffsize;
  const std::pair<const char*, uint64_t> cases[] = {{"8388608", 8u << 20},
                                                    {"0x800000", 8u << 20},
                                                    {" 8388608", 8u << 20},
                                                    {"8M", 8},
                                                    {"", kDefault},
                                                    {"0", kDefault},
                                                    {"-4", kDefault},
                                                    {"nope", kDefault},
                                                    {"99999999999999999999", kDefault}};
  for (const auto& [text, expect] : cases) {
    Result<Config> config = Config::FromEnvironment(Env({{"NCCL_BUFFSIZE", text}}));
    ASSERT_TRUE(config.ok()) << text << ": " << config.status().message();
    EXPECT_EQ(config->nccl_buffsize, expect) << "NCCL_BUFFSIZE=\"" << text << "\"";
  }
}

TEST(ConfigTest, DefaultThreadCountNeverExceedsTheSocketCount) {
  for (const char* sockets : {"1", "2", "64"}) {
    Result<Config> config = Config::FromEnvironment(Env({{"NCCL_DEVMEM_NSOCKS", sockets}}));
    ASSERT_TRUE(config.ok()) << config.status().message();
    EXPECT_LE(config->worker_threads, config->data_sockets);
  }
}

}  // namespace
}  // namespace devmem
