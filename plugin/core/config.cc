#include "plugin/core/config.h"

#include <sched.h>
#include <strings.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "plugin/core/log.h"

namespace devmem {

namespace {

// K, M or G (either case): the binary multiplier, else 1.
int64_t SizeSuffixMultiplier(char c) {
  switch (c) {
    case 'k':
    case 'K':
      return int64_t{1} << 10;
    case 'm':
    case 'M':
      return int64_t{1} << 20;
    case 'g':
    case 'G':
      return int64_t{1} << 30;
    default:
      return 1;
  }
}

// One integer of the grammar ParseBoundedInteger documents, into *value. Returns nullptr, or
// why the text is not such an integer.
const char* ReadIntegerText(const char* text, IntegerUnit unit, int64_t* value) {
  if (text == nullptr || text[0] == '\0') return "empty";
  // strtoll, and so NCCL, skips leading blanks; here they are a quoting slip, not a number.
  if (isspace(static_cast<unsigned char>(text[0])) != 0) return "leading blank";
  const char* digits = text + (text[0] == '+' || text[0] == '-' ? 1 : 0);
  if (digits[0] == '0' && (digits[1] == 'b' || digits[1] == 'B')) {
    // glibc >= 2.38 reads 0b binary in C++ builds, older ones stop at the b: NCCL builds
    // disagree on such a value.
    return "0b binary, which not every NCCL build reads";
  }
  errno = 0;
  char* end = nullptr;
  const long long parsed = strtoll(text, &end, 0);
  if (end == text) return "not an integer";
  if (errno == ERANGE) return "out of range";
  const int64_t multiplier = SizeSuffixMultiplier(*end);
  if (multiplier != 1) {
    if (unit != IntegerUnit::kBytes) return "a size suffix, on a variable that is not a size";
    ++end;
  }
  if (*end != '\0') {
    // Base 0 reads "08" as octal 0 followed by an 8.
    if (digits[0] == '0' && isdigit(static_cast<unsigned char>(*end)) != 0) {
      return "a leading 0 means octal, as in NCCL's own variables";
    }
    return "trailing characters";
  }
  if (parsed > INT64_MAX / multiplier || parsed < INT64_MIN / multiplier) return "out of range";
  *value = static_cast<int64_t>(parsed) * multiplier;
  return nullptr;
}

}  // namespace

Result<std::vector<uint32_t>> ParseQueueList(const std::string& text) {
  std::vector<uint32_t> queues;
  if (text.empty()) return queues;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    const std::string item = text.substr(pos, comma - pos);
    int64_t value = 0;
    const char* why = ReadIntegerText(item.c_str(), IntegerUnit::kPlain, &value);
    if (why == nullptr && (value < 0 || value > 65535)) why = "out of range";
    if (why != nullptr) {
      return Status::Error(ErrorKind::kInvalidArgument,
                           "NCCL_DEVMEM_RX_QUEUES=\"%s\": \"%s\" is not a queue id in [0, 65535] "
                           "(%s)",
                           text.c_str(), item.c_str(), why);
    }
    if (std::find(queues.begin(), queues.end(), value) != queues.end()) {
      return Status::Error(ErrorKind::kInvalidArgument,
                           "NCCL_DEVMEM_RX_QUEUES=\"%s\" lists queue %lld twice", text.c_str(),
                           static_cast<long long>(value));
    }
    queues.push_back(static_cast<uint32_t>(value));
    pos = comma + 1;
  }
  return queues;
}

namespace {

constexpr const char* kNsocks = "NCCL_DEVMEM_NSOCKS";
constexpr const char* kNthreads = "NCCL_DEVMEM_NTHREADS";
constexpr const char* kChunk = "NCCL_DEVMEM_CHUNK_SIZE";
constexpr const char* kInline = "NCCL_DEVMEM_INLINE_BYTES";
constexpr const char* kProxyBytes = "NCCL_DEVMEM_PROXY_BYTES";
constexpr const char* kSocketBuffer = "NCCL_DEVMEM_SOCKET_BUFFER_BYTES";
constexpr const char* kMaxRecvs = "NCCL_DEVMEM_MAX_RECVS";
constexpr const char* kHandshakeTimeout = "NCCL_DEVMEM_HANDSHAKE_TIMEOUT_MS";
constexpr const char* kConsumerTimeout = "NCCL_DEVMEM_GPU_CONSUMER_TIMEOUT_MS";
constexpr const char* kUserTimeout = "NCCL_DEVMEM_TCP_USER_TIMEOUT_MS";
constexpr const char* kEmulate = "NCCL_DEVMEM_EMULATE";
constexpr const char* kEmulateTx = "NCCL_DEVMEM_EMULATE_TX";
constexpr const char* kRegion = "NCCL_DEVMEM_RX_REGION_BYTES";
constexpr const char* kRxPageSize = "NCCL_DEVMEM_RX_PAGE_SIZE";
constexpr const char* kRequire = "NCCL_DEVMEM_REQUIRE";
constexpr const char* kRequireTx = "NCCL_DEVMEM_REQUIRE_TX";
constexpr const char* kQueues = "NCCL_DEVMEM_RX_QUEUES";
constexpr const char* kSplit = "NCCL_DEVMEM_EMULATE_SPLIT_PERCENT";
constexpr const char* kLinear = "NCCL_DEVMEM_EMULATE_LINEAR_PERCENT";
constexpr const char* kUnpack = "NCCL_DEVMEM_UNPACK";
constexpr const char* kIfname = "NCCL_SOCKET_IFNAME";
constexpr const char* kFamily = "NCCL_SOCKET_FAMILY";
constexpr const char* kRails = "NCCL_DEVMEM_RAILS";
constexpr const char* kVnicStriping = "NCCL_DEVMEM_VNIC_STRIPING";
constexpr const char* kMetricsFile = "NCCL_DEVMEM_METRICS_FILE";
constexpr const char* kMetricsInterval = "NCCL_DEVMEM_METRICS_INTERVAL_MS";

// Reads one bounded integer variable into *out when it is set.
Status ReadInteger(const std::function<const char*(const char*)>& getenv_fn, const char* name,
                   int64_t min, int64_t max, int64_t* out, IntegerUnit unit = IntegerUnit::kPlain) {
  const char* text = getenv_fn(name);
  if (text == nullptr) return Status::Ok();
  Result<int64_t> parsed = ParseBoundedInteger(name, text, min, max, unit);
  if (!parsed.ok()) return parsed.status();
  *out = parsed.value();
  return Status::Ok();
}

// NCCL's own integers (NCCL_BUFFSIZE, ...) hold what NCCL itself will use: ncclLoadParam
// (src/misc/param.cc) takes strtoll(value, nullptr, 0) and keeps its default only when errno
// is set, so "8M" is 8 to NCCL. Sizing follows NCCL's reading; a value NCCL cannot have meant
// gets a WARN saying how NCCL reads it.
void ReadNcclSize(const std::function<const char*(const char*)>& getenv_fn, const char* name,
                  uint64_t* out) {
  const char* text = getenv_fn(name);
  if (text == nullptr || text[0] == '\0') return;  // NCCL treats an empty value as unset
  errno = 0;
  char* end = nullptr;
  const long long parsed = strtoll(text, &end, 0);
  if (errno != 0) {  // ERANGE: glibc sets nothing else for base 0
    log::Warn(
        "%s=\"%s\" is out of range; NCCL ignores it, so devmem RX is sized for NCCL's "
        "default %llu",
        name, text, static_cast<unsigned long long>(*out));
    return;
  }
  if (parsed <= 0) {
    log::Warn("%s=\"%s\" is %lld to NCCL, not a size; devmem RX is sized for NCCL's default %llu",
              name, text, parsed, static_cast<unsigned long long>(*out));
    return;
  }
  if (*end != '\0') {
    log::Warn(
        "%s=\"%s\" is %lld to NCCL (it reads the leading integer and takes no suffix); "
        "devmem RX is sized for that",
        name, text, parsed);
  }
  *out = static_cast<uint64_t>(parsed);
}

}  // namespace

Result<int64_t> ParseBoundedInteger(const char* name, const char* text, int64_t min, int64_t max,
                                    IntegerUnit unit) {
  int64_t value = 0;
  const char* why = ReadIntegerText(text, unit, &value);
  if (why == nullptr && (value < min || value > max)) why = "out of range";
  if (why != nullptr) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "%s=\"%s\" is invalid (%s); accepted range is [%lld, %lld]%s", name,
                         text == nullptr ? "" : text, why, static_cast<long long>(min),
                         static_cast<long long>(max),
                         unit == IntegerUnit::kBytes ? ", with an optional K, M or G suffix" : "");
  }
  return value;
}

uint64_t Config::MaxNcclStepBytes() const {
  return std::max<uint64_t>(nccl_buffsize / 8 * 2, nccl_p2p_net_chunk);
}

int DefaultWorkerThreads(int usable_cpus) {
  return usable_cpus >= kManyCpus ? kManyCpusWorkerThreads : 1;
}

int DefaultDataSockets(int usable_cpus) {
  return usable_cpus >= kManyCpus ? kManyCpusDataSockets : kFewCpusDataSockets;
}

uint64_t DefaultProxyBytes(int worker_threads) {
  return worker_threads > 1 ? kWorkerProxyBytes : static_cast<uint64_t>(kMaxProxyBytes);
}

uint32_t DefaultInlineBytes(uint64_t proxy_bytes) {
  return static_cast<uint32_t>(std::clamp<uint64_t>(proxy_bytes, kMinDefaultInlineBytes,
                                                    kMaxDefaultInlineBytes));
}

uint32_t DefaultQueuedInlineBytes(uint32_t inline_bytes) {
  return std::min(inline_bytes, kMaxDefaultQueuedInlineBytes);
}

int UsableCpuCount() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

Result<Config> Config::FromEnvironment(const std::function<const char*(const char*)>& getenv_fn) {
  return FromEnvironment(getenv_fn, UsableCpuCount());
}

Result<Config> Config::FromEnvironment(const std::function<const char*(const char*)>& getenv_fn,
                                       int usable_cpus) {
  Config config;
  config.usable_cpus = std::max(1, usable_cpus);
  int64_t value = DefaultWorkerThreads(config.usable_cpus);
  DEVMEM_RETURN_IF_ERROR(ReadInteger(getenv_fn, kNthreads, 1, kMaxWorkerThreads, &value));
  config.worker_threads = static_cast<int>(value);

  // Unset: the CPUs' default, and never fewer sockets than threads the user asked for.
  value = getenv_fn(kNthreads) != nullptr
              ? std::max(DefaultDataSockets(config.usable_cpus), config.worker_threads)
              : DefaultDataSockets(config.usable_cpus);
  DEVMEM_RETURN_IF_ERROR(ReadInteger(getenv_fn, kNsocks, 1, kMaxDataSockets, &value));
  config.data_sockets = static_cast<int>(value);

  value = static_cast<int64_t>(config.chunk_bytes);
  DEVMEM_RETURN_IF_ERROR(
      ReadInteger(getenv_fn, kChunk, kMinChunkBytes, kMaxChunkBytes, &value, IntegerUnit::kBytes));
  config.chunk_bytes = static_cast<uint64_t>(value);

  value = -1;  // unset: follows the proxy limit, below
  DEVMEM_RETURN_IF_ERROR(
      ReadInteger(getenv_fn, kInline, 0, kMaxInlineBytes, &value, IntegerUnit::kBytes));
  const int64_t inline_bytes_set = value;

  value = -1;  // unset: follows the final thread count, below
  DEVMEM_RETURN_IF_ERROR(
      ReadInteger(getenv_fn, kProxyBytes, 0, kMaxProxyBytes, &value, IntegerUnit::kBytes));
  const int64_t proxy_bytes_set = value;

  value = static_cast<int64_t>(config.socket_buffer_bytes);
  DEVMEM_RETURN_IF_ERROR(
      ReadInteger(getenv_fn, kSocketBuffer, 0, kMaxSocketBufferBytes, &value, IntegerUnit::kBytes));
  config.socket_buffer_bytes = static_cast<uint64_t>(value);

  value = config.max_recvs;
  DEVMEM_RETURN_IF_ERROR(ReadInteger(getenv_fn, kMaxRecvs, 1, kMaxRecvsLimit, &value));
  config.max_recvs = static_cast<int>(value);

  value = config.handshake_timeout_ms;
  DEVMEM_RETURN_IF_ERROR(ReadInteger(getenv_fn, kHandshakeTimeout, 100, 3600000, &value));
  config.handshake_timeout_ms = static_cast<int>(value);

  value = config.gpu_consumer_timeout_ms;
  DEVMEM_RETURN_IF_ERROR(ReadInteger(getenv_fn, kConsumerTimeout, 0, 3600000, &value));
  config.gpu_consumer_timeout_ms = static_cast<int>(value);

  value = config.tcp_user_timeout_ms;
  DEVMEM_RETURN_IF_ERROR(ReadInteger(getenv_fn, kUserTimeout, 0, 3600000, &value));
  config.tcp_user_timeout_ms = static_cast<int>(value);

  value = config.emulate_devmem ? 1 : 0;
  DEVMEM_RETURN_IF_ERROR(ReadInteger(getenv_fn, kEmulate, 0, 1, &value));
  config.emulate_devmem = value == 1;

  value = config.emulate_tx ? 1 : 0;
  DEVMEM_RETURN_IF_ERROR(ReadInteger(getenv_fn, kEmulateTx, 0, 1, &value));
  config.emulate_tx = value == 1;

  value = config.require_devmem ? 1 : 0;
  DEVMEM_RETURN_IF_ERROR(ReadInteger(getenv_fn, kRequire, 0, 1, &value));
  config.require_devmem = value == 1;

  value = config.require_tx ? 1 : 0;
  DEVMEM_RETURN_IF_ERROR(ReadInteger(getenv_fn, kRequireTx, 0, 1, &value));
  config.require_tx = value == 1;

  if (const char* queues = getenv_fn(kQueues); queues != nullptr) {
    Result<std::vector<uint32_t>> parsed = ParseQueueList(queues);
    if (!parsed.ok()) return parsed.status();
    if (parsed->empty()) {
      return Status::Error(ErrorKind::kInvalidArgument,
                           "%s is set but empty; expected queue ids like \"8,9\"", kQueues);
    }
    config.rx_queues = parsed.value();
  }

  value = static_cast<int64_t>(config.rx_region_bytes);
  DEVMEM_RETURN_IF_ERROR(ReadInteger(getenv_fn, kRegion, kMinRxRegionBytes, kMaxRxRegionBytes,
                                     &value, IntegerUnit::kBytes));
  if (value % 4096 != 0) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "%s=%lld is not a multiple of the 4096-byte page; accepted range is "
                         "[%llu, %llu] in whole pages",
                         kRegion, static_cast<long long>(value),
                         static_cast<unsigned long long>(kMinRxRegionBytes),
                         static_cast<unsigned long long>(kMaxRxRegionBytes));
  }
  config.rx_region_bytes = static_cast<uint64_t>(value);
  config.rx_region_bytes_set = getenv_fn(kRegion) != nullptr;

  value = 0;
  DEVMEM_RETURN_IF_ERROR(ReadInteger(getenv_fn, kRxPageSize, kMinRxPageBytes,
                                     kMaxRxPageBytes, &value, IntegerUnit::kBytes));
  if ((value & (value - 1)) != 0) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "%s=%lld is not a power of two; accepted range is [%llu, %llu], powers "
                         "of two (the kernel refuses others: \"rx-page-size must be a power of "
                         "2\")",
                         kRxPageSize, static_cast<long long>(value),
                         static_cast<unsigned long long>(kMinRxPageBytes),
                         static_cast<unsigned long long>(kMaxRxPageBytes));
  }
  config.rx_page_bytes = static_cast<uint32_t>(value);

  ReadNcclSize(getenv_fn, "NCCL_BUFFSIZE", &config.nccl_buffsize);
  ReadNcclSize(getenv_fn, "NCCL_P2P_NET_CHUNKSIZE", &config.nccl_p2p_net_chunk);

  value = config.emulate_split_percent;
  DEVMEM_RETURN_IF_ERROR(ReadInteger(getenv_fn, kSplit, 0, 100, &value));
  config.emulate_split_percent = static_cast<int>(value);

  value = config.emulate_linear_percent;
  DEVMEM_RETURN_IF_ERROR(ReadInteger(getenv_fn, kLinear, 0, 100, &value));
  config.emulate_linear_percent = static_cast<int>(value);

  if (const char* unpack = getenv_fn(kUnpack); unpack != nullptr) {
    if (strcasecmp(unpack, "plugin") == 0) {
      config.unpack = UnpackMode::kPlugin;
    } else if (strcasecmp(unpack, "nccl") == 0) {
      config.unpack = UnpackMode::kNccl;
    } else {
      return Status::Error(ErrorKind::kInvalidArgument,
                           "%s=\"%s\" is invalid; accepted values are plugin and nccl", kUnpack,
                           unpack);
    }
  }

  if (getenv_fn(kNthreads) == nullptr) {
    // The default thread count follows a smaller socket count instead of contradicting it.
    config.worker_threads = std::min(config.worker_threads, config.data_sockets);
  }
  if (config.worker_threads > config.data_sockets) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "%s=%d exceeds %s=%d; accepted range is [1, %s]", kNthreads,
                         config.worker_threads, kNsocks, config.data_sockets, kNsocks);
  }
  config.proxy_bytes = proxy_bytes_set >= 0 ? static_cast<uint64_t>(proxy_bytes_set)
                                            : DefaultProxyBytes(config.worker_threads);
  config.inline_bytes = inline_bytes_set >= 0 ? static_cast<uint32_t>(inline_bytes_set)
                                              : DefaultInlineBytes(config.proxy_bytes);
  config.queued_inline_bytes = inline_bytes_set >= 0 ? config.inline_bytes
                                                     : DefaultQueuedInlineBytes(config.inline_bytes);

  if (const char* ifname = getenv_fn(kIfname); ifname != nullptr) {
    config.socket_ifname = ifname;
    // "^" or "=" alone, or an empty list, would match nothing and hide every NIC.
    std::string body = config.socket_ifname;
    if (!body.empty() && body[0] == '^') body.erase(0, 1);
    if (!body.empty() && body[0] == '=') body.erase(0, 1);
    if (body.empty() || body.find_first_not_of(", ") == std::string::npos) {
      return Status::Error(ErrorKind::kInvalidArgument,
                           "%s=\"%s\" names no interface; expected a comma-separated list of "
                           "prefixes, optionally led by ^ (exclude) and/or = (exact)",
                           kIfname, ifname);
    }
  }
  if (const char* family = getenv_fn(kFamily); family != nullptr) {
    if (strcasecmp(family, "AF_INET") == 0) {
      config.socket_family = AF_INET;
    } else if (strcasecmp(family, "AF_INET6") == 0) {
      config.socket_family = AF_INET6;
    } else {
      return Status::Error(ErrorKind::kInvalidArgument,
                           "%s=\"%s\" is invalid; accepted values are AF_INET and AF_INET6",
                           kFamily, family);
    }
  }
  if (const char* striping = getenv_fn(kVnicStriping); striping != nullptr) {
    if (strcmp(striping, "adaptive") == 0) {
      config.adaptive_stripes = true;
    } else if (strcmp(striping, "roundrobin") == 0) {
      config.adaptive_stripes = false;
    } else {
      return Status::Error(ErrorKind::kInvalidArgument,
                           "%s=\"%s\" is invalid; accepted values are adaptive and roundrobin",
                           kVnicStriping, striping);
    }
  }
  if (const char* metrics = getenv_fn(kMetricsFile); metrics != nullptr) {
    if (metrics[0] == '\0') {
      return Status::Error(ErrorKind::kInvalidArgument,
                           "%s is set but empty; unset it, or name the file the counters go to",
                           kMetricsFile);
    }
    config.metrics_file = metrics;
  }
  value = config.metrics_interval_ms;
  DEVMEM_RETURN_IF_ERROR(
      ReadInteger(getenv_fn, kMetricsInterval, kMinMetricsIntervalMs, 3600000, &value));
  config.metrics_interval_ms = static_cast<int>(value);
  Result<std::vector<RailAssignment>> rails = ParseRails(getenv_fn(kRails));
  if (!rails.ok()) return rails.status();
  config.rails = std::move(rails).value();
  return config;
}

std::string JoinQueueIds(const std::vector<uint32_t>& queues) {
  std::string out;
  for (uint32_t q : queues) {
    // Appended piecewise: `"," + std::to_string(q)` inlines a string insert that GCC 12 -O3
    // flags as an overlapping memcpy (-Werror=restrict, a known false positive).
    if (!out.empty()) out += ',';
    out += std::to_string(q);
  }
  return out;
}

void Config::LogValues(const std::function<const char*(const char*)>& getenv_fn) const {
  auto origin = [&](const char* name) { return getenv_fn(name) != nullptr ? "env" : "default"; };
  if (getenv_fn(kNsocks) != nullptr) {
    log::Info(log::kEnv, "%s=%d (env)", kNsocks, data_sockets);
  } else {
    log::Info(log::kEnv, "%s=%d (default for %d usable CPUs)", kNsocks, data_sockets,
              usable_cpus);
  }
  if (getenv_fn(kNthreads) != nullptr) {
    log::Info(log::kEnv, "%s=%d (env)", kNthreads, worker_threads);
  } else {
    log::Info(log::kEnv, "%s=%d (default for %d usable CPUs, %s=%d)", kNthreads, worker_threads,
              usable_cpus, kNsocks, data_sockets);
  }
  log::Info(log::kEnv, "%s=%llu (%s)", kChunk, static_cast<unsigned long long>(chunk_bytes),
            origin(kChunk));
  if (getenv_fn(kInline) != nullptr) {
    log::Info(log::kEnv, "%s=%u (env)", kInline, inline_bytes);
  } else {
    log::Info(log::kEnv,
              "%s=%u (default: %s within [32K, 4M]; above %u only while no other send of the "
              "comm is in flight; a devmem RX receiver takes at most %u)",
              kInline, inline_bytes, kProxyBytes, queued_inline_bytes, kDevmemInlineBytes);
  }
  log::Info(log::kEnv, "%s=%llu (%s)", kProxyBytes, static_cast<unsigned long long>(proxy_bytes),
            getenv_fn(kProxyBytes) != nullptr ? "env"
            : worker_threads > 1 ? "default with worker threads: larger messages go to them"
                                 : "default with one thread: every message on the caller");
  log::Info(log::kEnv, "%s=%llu (%s)", kSocketBuffer,
            static_cast<unsigned long long>(socket_buffer_bytes), origin(kSocketBuffer));
  log::Info(log::kEnv, "%s=%d (%s)", kMaxRecvs, max_recvs, origin(kMaxRecvs));
  log::Info(log::kEnv, "%s=%d (%s)", kHandshakeTimeout, handshake_timeout_ms,
            origin(kHandshakeTimeout));
  log::Info(log::kEnv, "%s=%d (%s)", kConsumerTimeout, gpu_consumer_timeout_ms,
            origin(kConsumerTimeout));
  log::Info(log::kEnv, "%s=%d (%s)", kUserTimeout, tcp_user_timeout_ms, origin(kUserTimeout));
  log::Info(log::kEnv, "%s=%d (%s)", kEmulate, emulate_devmem ? 1 : 0, origin(kEmulate));
  log::Info(log::kEnv, "%s=%d (%s)", kEmulateTx, emulate_tx ? 1 : 0, origin(kEmulateTx));
  log::Info(log::kEnv, "%s=%d (%s)", kRequire, require_devmem ? 1 : 0, origin(kRequire));
  log::Info(log::kEnv, "%s=%d (%s)", kRequireTx, require_tx ? 1 : 0, origin(kRequireTx));
  const std::string queues = JoinQueueIds(rx_queues);
  log::Info(log::kEnv, "%s=\"%s\" (%s)", kQueues,
            queues.empty() ? "each NIC's queues outside RSS" : queues.c_str(), origin(kQueues));
  if (rx_region_bytes_set || emulate_devmem) {
    log::Info(log::kEnv, "%s=%llu (%s)", kRegion, static_cast<unsigned long long>(rx_region_bytes),
              origin(kRegion));
  } else {
    log::Info(log::kEnv,
              "%s unset: each devmem NIC's RX region is sized from NCCL's in-flight "
              "bytes at the first bind",
              kRegion);
  }
  if (rx_page_bytes != 0) {
    log::Info(log::kEnv, "%s=%u (env)", kRxPageSize, rx_page_bytes);
  } else {
    log::Info(log::kEnv, "%s unset: the kernel's page size, no rx-page-size in bind-rx",
              kRxPageSize);
  }
  log::Info(log::kEnv, "%s=%d (%s)", kSplit, emulate_split_percent, origin(kSplit));
  log::Info(log::kEnv, "%s=%d (%s)", kLinear, emulate_linear_percent, origin(kLinear));
  log::Info(log::kEnv, "%s=%s (%s)", kUnpack, unpack == UnpackMode::kNccl ? "nccl" : "plugin",
            origin(kUnpack));
  log::Info(log::kEnv, "%s=\"%s\" (%s)", kIfname, socket_ifname.c_str(), origin(kIfname));
  log::Info(log::kEnv, "%s=%s (%s)", kFamily,
            socket_family == AF_INET ? "AF_INET" : (socket_family == AF_INET6 ? "AF_INET6" : "any"),
            origin(kFamily));
  log::Info(log::kEnv, "%s=%s (%s)", kVnicStriping, adaptive_stripes ? "adaptive" : "roundrobin",
            origin(kVnicStriping));
  log::Info(log::kEnv, "%s=\"%s\" (%s)", kMetricsFile,
            metrics_file.empty() ? "unset: no metrics file" : metrics_file.c_str(),
            origin(kMetricsFile));
  log::Info(log::kEnv, "%s=%d (%s)", kMetricsInterval, metrics_interval_ms,
            origin(kMetricsInterval));
  const std::string rail_text = FormatRails(rails);
  log::Info(log::kEnv, "%s=\"%s\" (%s)", kRails,
            rails.empty() ? "no rails: railId/planeId -1" : rail_text.c_str(), origin(kRails));
}

}  // namespace devmem
