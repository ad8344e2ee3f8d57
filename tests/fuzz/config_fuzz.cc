// The configuration parser: Config::FromEnvironment over a fuzzed environment, and its pieces
// ParseBoundedInteger and ParseQueueList over any text and any range.
//
// Input: u8 mode, then
//   mode % 4 == 0  environment lines "<name byte><value>\n": a name byte below 0xf0 picks one of
//                  the variables the plugin reads, any other byte means the line is "NAME=VALUE"
//   mode % 4 == 1  i64 min, i64 max, i64 probe, then the text of ParseBoundedInteger (a count)
//   mode % 4 == 2  the text of ParseQueueList
//   mode % 4 == 3  as 1, for a byte size (K/M/G suffixes accepted)
//
// Invariants: an accepted configuration is inside every documented range (README.md,
// "Configuration"); an accepted integer is inside [min, max]; the decimal form of any integer in
// [min, max] is accepted as itself; an accepted queue list holds unique ids <= 65535, one per
// comma-separated item, and reads back the same when printed; refusals carry a message.
#include <sys/socket.h>

#include <map>
#include <string>
#include <vector>

#include "plugin/core/config.h"
#include "tests/fuzz/fuzz_input.h"

namespace devmem {
namespace {

constexpr const char* kVariables[] = {
    "NCCL_DEVMEM_NSOCKS",
    "NCCL_DEVMEM_NTHREADS",
    "NCCL_DEVMEM_CHUNK_SIZE",
    "NCCL_DEVMEM_INLINE_BYTES",
    "NCCL_DEVMEM_MAX_RECVS",
    "NCCL_DEVMEM_HANDSHAKE_TIMEOUT_MS",
    "NCCL_DEVMEM_TCP_USER_TIMEOUT_MS",
    "NCCL_DEVMEM_EMULATE",
    "NCCL_DEVMEM_RX_REGION_BYTES",
    "NCCL_DEVMEM_REQUIRE",
    "NCCL_DEVMEM_RX_QUEUES",
    "NCCL_DEVMEM_EMULATE_SPLIT_PERCENT",
    "NCCL_DEVMEM_EMULATE_LINEAR_PERCENT",
    "NCCL_DEVMEM_UNPACK",
    "NCCL_SOCKET_IFNAME",
    "NCCL_SOCKET_FAMILY",
    "NCCL_BUFFSIZE",
    "NCCL_P2P_NET_CHUNKSIZE",
    "NCCL_DEVMEM_RX_PAGE_SIZE",
    "NCCL_DEVMEM_PROXY_BYTES",
    "NCCL_DEVMEM_SOCKET_BUFFER_BYTES",
    "NCCL_DEVMEM_GPU_CONSUMER_TIMEOUT_MS",
    "NCCL_DEVMEM_EMULATE_TX",
    "NCCL_DEVMEM_REQUIRE_TX",
    "NCCL_DEVMEM_RAILS",
    "NCCL_DEVMEM_VNIC_STRIPING",
    "NCCL_DEVMEM_METRICS_FILE",
    "NCCL_DEVMEM_METRICS_INTERVAL_MS",
};
constexpr size_t kVariableCount = sizeof(kVariables) / sizeof(kVariables[0]);

void FuzzEnvironment(const uint8_t* data, size_t size) {
  std::map<std::string, std::string> env;
  size_t pos = 0;
  while (pos < size) {
    size_t end = pos;
    while (end < size && data[end] != '\n') ++end;
    const std::string line(reinterpret_cast<const char*>(data) + pos, end - pos);
    pos = end + 1;
    if (line.empty()) continue;
    const uint8_t pick = static_cast<uint8_t>(line[0]);
    if (pick < 0xf0) {
      env[kVariables[pick % kVariableCount]] = line.substr(1);
    } else if (size_t eq = line.find('=', 1); eq != std::string::npos) {
      env[line.substr(1, eq - 1)] = line.substr(eq + 1);
    }
  }
  auto getenv_fn = [&env](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  Result<Config> parsed = Config::FromEnvironment(getenv_fn);
  if (!parsed.ok()) {
    FUZZ_CHECK(!parsed.status().message().empty(), "a refusal without a message");
    return;
  }
  const Config& c = parsed.value();
  FUZZ_CHECK(c.data_sockets >= 1 && c.data_sockets <= kMaxDataSockets, "nsocks %d", c.data_sockets);
  FUZZ_CHECK(c.worker_threads >= 1 && c.worker_threads <= kMaxWorkerThreads &&
                 c.worker_threads <= c.data_sockets,
             "nthreads %d with %d sockets", c.worker_threads, c.data_sockets);
  FUZZ_CHECK(c.chunk_bytes >= kMinChunkBytes && c.chunk_bytes <= kMaxChunkBytes, "chunk %llu",
             static_cast<unsigned long long>(c.chunk_bytes));
  FUZZ_CHECK(c.inline_bytes <= kMaxInlineBytes, "inline %u", c.inline_bytes);
  FUZZ_CHECK(c.queued_inline_bytes <= c.inline_bytes, "queued inline %u above inline %u",
             c.queued_inline_bytes, c.inline_bytes);
  FUZZ_CHECK(c.max_recvs >= 1 && c.max_recvs <= kMaxRecvsLimit, "max recvs %d", c.max_recvs);
  FUZZ_CHECK(c.handshake_timeout_ms >= 100 && c.handshake_timeout_ms <= 3600000,
             "handshake timeout %d", c.handshake_timeout_ms);
  FUZZ_CHECK(c.tcp_user_timeout_ms >= 0 && c.tcp_user_timeout_ms <= 3600000, "user timeout %d",
             c.tcp_user_timeout_ms);
  FUZZ_CHECK(c.rx_region_bytes >= kMinRxRegionBytes && c.rx_region_bytes <= kMaxRxRegionBytes &&
                 c.rx_region_bytes % 4096 == 0,
             "region %llu", static_cast<unsigned long long>(c.rx_region_bytes));
  FUZZ_CHECK(c.emulate_split_percent >= 0 && c.emulate_split_percent <= 100, "split %d",
             c.emulate_split_percent);
  FUZZ_CHECK(c.emulate_linear_percent >= 0 && c.emulate_linear_percent <= 100, "linear %d",
             c.emulate_linear_percent);
  FUZZ_CHECK(c.nccl_buffsize > 0 && c.nccl_p2p_net_chunk > 0, "NCCL sizes");
  FUZZ_CHECK(c.socket_family == 0 || c.socket_family == AF_INET || c.socket_family == AF_INET6,
             "family %d", c.socket_family);
  FUZZ_CHECK(c.rx_page_bytes == 0 ||
                 (c.rx_page_bytes >= kMinRxPageBytes && c.rx_page_bytes <= kMaxRxPageBytes &&
                  (c.rx_page_bytes & (c.rx_page_bytes - 1)) == 0),
             "rx page %u", c.rx_page_bytes);
  FUZZ_CHECK(c.gpu_consumer_timeout_ms >= 0 && c.gpu_consumer_timeout_ms <= 3600000,
             "consumer timeout %d", c.gpu_consumer_timeout_ms);
  FUZZ_CHECK(c.metrics_interval_ms >= kMinMetricsIntervalMs && c.metrics_interval_ms <= 3600000,
             "metrics interval %d", c.metrics_interval_ms);
  FUZZ_CHECK(env.count("NCCL_DEVMEM_METRICS_FILE") == 0 || !c.metrics_file.empty(),
             "a set metrics file parsed to none");
  FUZZ_CHECK(env.count("NCCL_DEVMEM_RX_QUEUES") == 0 || !c.rx_queues.empty(),
             "a set queue list parsed to none");
  for (size_t i = 0; i < c.rx_queues.size(); ++i) {
    FUZZ_CHECK(c.rx_queues[i] <= 65535, "queue %u", c.rx_queues[i]);
    for (size_t j = 0; j < i; ++j) FUZZ_CHECK(c.rx_queues[i] != c.rx_queues[j], "queue twice");
  }
  c.LogValues(getenv_fn);  // every value printed (to nowhere unless NCCL_DEBUG asks)
}

void FuzzInteger(fuzz::ByteReader& in, IntegerUnit unit) {
  const int64_t min = in.Take<int64_t>();
  const int64_t max = in.Take<int64_t>();
  const int64_t probe = in.Take<int64_t>();
  const std::string text(reinterpret_cast<const char*>(in.rest()), in.left());
  Result<int64_t> parsed = ParseBoundedInteger("NCCL_DEVMEM_FUZZ", text.c_str(), min, max, unit);
  if (parsed.ok()) {
    FUZZ_CHECK(parsed.value() >= min && parsed.value() <= max,
               "\"%s\" -> %lld outside [%lld, %lld]", text.c_str(),
               static_cast<long long>(parsed.value()), static_cast<long long>(min),
               static_cast<long long>(max));
  } else {
    FUZZ_CHECK(!parsed.status().message().empty(), "a refusal without a message");
  }
  if (min <= probe && probe <= max) {
    const std::string decimal = std::to_string(probe);
    Result<int64_t> exact =
        ParseBoundedInteger("NCCL_DEVMEM_FUZZ", decimal.c_str(), min, max, unit);
    FUZZ_CHECK(exact.ok() && exact.value() == probe,
               "\"%s\" in [%lld, %lld] not read as itself: %s", decimal.c_str(),
               static_cast<long long>(min), static_cast<long long>(max),
               exact.ok() ? "other value" : exact.status().message().c_str());
  }
}

void FuzzQueueList(fuzz::ByteReader& in) {
  const std::string text(reinterpret_cast<const char*>(in.rest()), in.left());
  Result<std::vector<uint32_t>> parsed = ParseQueueList(text);
  if (!parsed.ok()) {
    FUZZ_CHECK(!parsed.status().message().empty(), "a refusal without a message");
    return;
  }
  const std::vector<uint32_t>& queues = parsed.value();
  if (text.empty()) {
    FUZZ_CHECK(queues.empty(), "an empty list parsed to %zu queues", queues.size());
    return;
  }
  size_t items = 1;
  for (char c : text) items += c == ',' ? 1 : 0;
  FUZZ_CHECK(queues.size() == items, "%zu queues from %zu items", queues.size(), items);
  std::string printed;
  for (size_t i = 0; i < queues.size(); ++i) {
    FUZZ_CHECK(queues[i] <= 65535, "queue %u", queues[i]);
    for (size_t j = 0; j < i; ++j) FUZZ_CHECK(queues[i] != queues[j], "queue %u twice", queues[i]);
    printed += (i == 0 ? "" : ",") + std::to_string(queues[i]);
  }
  Result<std::vector<uint32_t>> again = ParseQueueList(printed);
  FUZZ_CHECK(again.ok() && again.value() == queues, "\"%s\" does not read back", printed.c_str());
}

}  // namespace
}  // namespace devmem

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace devmem;
  if (size == 0) return 0;
  fuzz::ByteReader in(data + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      FuzzEnvironment(data + 1, size - 1);
      break;
    case 1:
      FuzzInteger(in, IntegerUnit::kPlain);
      break;
    case 2:
      FuzzQueueList(in);
      break;
    default:
      FuzzInteger(in, IntegerUnit::kBytes);
  }
  return 0;
}
