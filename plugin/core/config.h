// Every tunable of the plugin, read once from the environment, validated and logged.
// README.md documents each one; a bad value is an error naming the variable and its range.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "plugin/core/rails.h"
#include "plugin/core/status.h"

namespace devmem {

// Who copies frags out of a GPU RX region into the destination (NCCL_DEVMEM_UNPACK).
enum class UnpackMode {
  kPlugin,  // our scatter kernel on a per-comm stream; test() waits for its CUDA event
  kNccl,    // NCCL's device unpack (netDeviceType UNPACK): NCCL's kernels read our metadata
};

// Who moves a message's bytes by default, by the CPUs this process may run on (measured on
// 2 and on 16 CPUs: perf/RESULTS.md, "Host path defaults by CPU count"). With few CPUs the
// thread that calls isend/irecv/test (NCCL's proxy) moves every message itself: a hand-off to
// a worker costs more than it buys. With many, messages above 64 KiB go to 4 workers (one
// per data socket), as NCCL's socket transport uses 4 helper threads per comm on GCP: NCCL's
// p2p steps (NCCL_P2P_NET_CHUNKSIZE, 128 KiB) and ring steps from many channels then no
// longer queue behind the one proxy thread (through NCCL on 16 CPUs: sendrecv 0.54-0.74x ->
// 1.16-2.11x NCCL's socket transport, perf/RESULTS.md).
struct HostPathDefaults {
  int worker_threads;    // NCCL_DEVMEM_NTHREADS when unset
  uint64_t proxy_bytes;  // NCCL_DEVMEM_PROXY_BYTES when unset (given the thread count)
};
inline constexpr int kManyCpus = 8;  // from this many usable CPUs on, the workers' default
inline constexpr int kManyCpusWorkerThreads = 4;
// Data sockets per comm: four for four workers; two where the proxy thread moves everything
// (with one-stream inline up to 1 MiB the data sockets carry only larger messages, and one
// thread moving four lost to two at 16 MiB ping-pong, 0.54-0.59x vs 1.09x NCCL's socket
// transport: perf/RESULTS.md, "Progress engine").
inline constexpr int kManyCpusDataSockets = 4;
inline constexpr int kFewCpusDataSockets = 2;
inline constexpr uint64_t kWorkerProxyBytes = 64 << 10;  // proxy limit when workers exist
// The most a devmem RX connection takes inline (its receiver caps the sender's offer in the
// handshake reply): inline bytes land in host memory, not in the RX region.
inline constexpr uint32_t kDevmemInlineBytes = 32 << 10;
// NCCL_DEVMEM_INLINE_BYTES' default follows the proxy limit within these: where NCCL's proxy
// thread moves a message itself, one stream (header and payload on the control socket, as
// NCCL's socket transport sends by default) beat a separate data socket from 64 KiB to 1 MiB
// (perf/RESULTS.md, "Progress engine").
inline constexpr uint32_t kMinDefaultInlineBytes = 32 << 10;
inline constexpr uint32_t kMaxDefaultInlineBytes = 4 << 20;
// By default a message above 1 MiB rides the control socket only when no other send of its comm
// is in flight: one stream has the least latency per message (4 MiB ping-pong on 2 vCPUs, 7
// rounds: 1627 us inline vs 1800 us over the data sockets, NCCL's socket transport 1699 us), but
// a queue of them moves faster dealt over the data sockets (4 MiB stream: 5.23 vs 5.81 GB/s) and
// from 16 MiB one socket loses even alone (7325 vs 6959 us). perf/RESULTS.md, "Inline while
// idle". An explicit NCCL_DEVMEM_INLINE_BYTES applies whether or not sends are in flight.
inline constexpr uint32_t kMaxDefaultQueuedInlineBytes = 1 << 20;
// The thread default for `usable_cpus`, and the proxy default for `worker_threads` threads:
// one thread moves everything on the proxy; several take every message above 64 KiB (a
// thread count set without a proxy limit would otherwise leave the workers idle).
int DefaultWorkerThreads(int usable_cpus);
int DefaultDataSockets(int usable_cpus);
uint64_t DefaultProxyBytes(int worker_threads);
uint32_t DefaultInlineBytes(uint64_t proxy_bytes);
uint32_t DefaultQueuedInlineBytes(uint32_t inline_bytes);
// The CPUs the calling thread may run on (sched_getaffinity), at least 1.
int UsableCpuCount();

// Defaults that code outside Config also starts from (struct defaults of the transport and the
// RX path, which the product always sets from Config; the RX budget's floor).
inline constexpr uint64_t kDefaultChunkBytes = 512 << 10;     // NCCL_DEVMEM_CHUNK_SIZE
inline constexpr int kDefaultHandshakeTimeoutMs = 30000;      // NCCL_DEVMEM_HANDSHAKE_TIMEOUT_MS
inline constexpr int kDefaultGpuConsumerTimeoutMs = 20000;    // NCCL_DEVMEM_GPU_CONSUMER_TIMEOUT_MS
inline constexpr uint64_t kNcclDefaultBuffsize = 4ull << 20;  // NCCL_BUFFSIZE unset: NCCL's 4 MiB

struct Config {
  int data_sockets = kManyCpusDataSockets;  // NCCL_DEVMEM_NSOCKS (default: DefaultDataSockets)
  int worker_threads = 1;            // NCCL_DEVMEM_NTHREADS (default: DefaultWorkerThreads)
  uint64_t chunk_bytes = kDefaultChunkBytes;  // NCCL_DEVMEM_CHUNK_SIZE
  uint32_t inline_bytes = kMinDefaultInlineBytes;  // NCCL_DEVMEM_INLINE_BYTES (default:
                                                   // DefaultInlineBytes of proxy_bytes)
  // The largest message sent inline while other sends of the comm are in flight: inline_bytes
  // when NCCL_DEVMEM_INLINE_BYTES is set, else DefaultQueuedInlineBytes of it.
  uint32_t queued_inline_bytes = kMinDefaultInlineBytes;
  // NCCL_DEVMEM_PROXY_BYTES: messages up to this size move on the calling thread, larger ones
  // on the workers (default: DefaultProxyBytes of the thread count).
  uint64_t proxy_bytes = uint64_t{1} << 30;
  int usable_cpus = 1;                  // what the thread default was chosen for (logged)
  int max_recvs = 1;                    // NCCL_DEVMEM_MAX_RECVS
  int handshake_timeout_ms = kDefaultHandshakeTimeoutMs;  // NCCL_DEVMEM_HANDSHAKE_TIMEOUT_MS
  // NCCL_DEVMEM_GPU_CONSUMER_TIMEOUT_MS (0: never): the one limit on waiting for plugin GPU work
  // (plugin/cuda/gpu_quarantine.h), called gpu_work_limit wherever it is passed on.
  int gpu_consumer_timeout_ms = kDefaultGpuConsumerTimeoutMs;
  int tcp_user_timeout_ms = 0;          // NCCL_DEVMEM_TCP_USER_TIMEOUT_MS (0: kernel default)
  // NCCL_DEVMEM_SOCKET_BUFFER_BYTES: SO_SNDBUF/SO_RCVBUF of every socket of a comm (0: the
  // kernel's autotuning, which won on long-lived comms; measured: perf/RESULTS.md).
  uint64_t socket_buffer_bytes = 0;
  bool emulate_devmem = false;  // NCCL_DEVMEM_EMULATE
  // NCCL_DEVMEM_EMULATE_TX: sends go out with MSG_ZEROCOPY from host memory, completions
  // tracked as devmem TX would track them (a test mode; logged on every send comm).
  bool emulate_tx = false;
  bool require_devmem = false;  // NCCL_DEVMEM_REQUIRE
  // NCCL_DEVMEM_REQUIRE_TX: a send connection, or a CUDA send buffer, that cannot use devmem TX
  // fails (connect / regMr) instead of staging through host memory.
  bool require_tx = false;
  // NCCL_DEVMEM_RX_QUEUES: a NIC's devmem queue pool (empty: the queues outside RSS, else its last
  // queue); each (NIC, GPU, process) binds its own share of it (plugin/setup/rx_queue_plan.h).
  std::vector<uint32_t> rx_queues;
  // NCCL_DEVMEM_RX_REGION_BYTES: the RX region of one NIC (devmem) or one receive comm
  // (emulation). Unset: emulation uses 64 MiB, devmem the in-flight budget
  // (plugin/setup/rx_budget.h).
  uint64_t rx_region_bytes = 64ull << 20;
  bool rx_region_bytes_set = false;
  // NCCL_DEVMEM_RX_PAGE_SIZE: the RX page (niov) size bind-rx asks for, and the emulated NIC's
  // page size; 0 (unset): the kernel's PAGE_SIZE and no bind-rx attribute (docs/rx-page-size.md).
  uint32_t rx_page_bytes = 0;
  int emulate_split_percent = 10;           // NCCL_DEVMEM_EMULATE_SPLIT_PERCENT
  int emulate_linear_percent = 5;           // NCCL_DEVMEM_EMULATE_LINEAR_PERCENT
  UnpackMode unpack = UnpackMode::kPlugin;  // NCCL_DEVMEM_UNPACK=plugin|nccl
  std::string socket_ifname;                // NCCL_SOCKET_IFNAME (NCCL's own syntax)
  int socket_family = 0;                    // NCCL_SOCKET_FAMILY: AF_INET, AF_INET6 or 0 (either)
  std::vector<RailAssignment> rails;        // NCCL_DEVMEM_RAILS (plugin/core/rails.h)
  // NCCL_DEVMEM_VNIC_STRIPING=roundrobin|adaptive: how a sender between virtual NICs deals
  // messages over the data sockets (ConnectionParams::adaptive_stripes). Round-robin by
  // default: it won on members of equal speed, adaptive on members of different speeds
  // (perf/RESULTS.md, 2026-11-26).
  bool adaptive_stripes = false;
  // NCCL_DEVMEM_METRICS_FILE: where the process's counters are written in Prometheus text
  // format (%p: pid, %h: host name; empty: nowhere, no writer thread), and
  // NCCL_DEVMEM_METRICS_INTERVAL_MS how often (plugin/observe/metrics_writer.h).
  std::string metrics_file;
  int metrics_interval_ms = 5000;
  // NCCL's own settings that bound the size of one receive (read, never set, here).
  uint64_t nccl_buffsize = kNcclDefaultBuffsize;  // NCCL_BUFFSIZE
  uint64_t nccl_p2p_net_chunk = 128 << 10;  // NCCL_P2P_NET_CHUNKSIZE (NCCL's default: 128 KiB)

  // The largest receive NCCL's net transport posts: a collective step is stepSize x
  // sliceSteps = NCCL_BUFFSIZE / NCCL_STEPS(8) x 2 (ring SIMPLE, src/transport/net.cc
  // recvProxyProgress), a p2p step one NCCL_P2P_NET_CHUNKSIZE.
  uint64_t MaxNcclStepBytes() const;

  // Reads the variables through `getenv_fn` (getenv in production, a map in tests); defaults
  // that depend on the host are chosen for `usable_cpus` (UsableCpuCount() when not given).
  static Result<Config> FromEnvironment(const std::function<const char*(const char*)>& getenv_fn,
                                        int usable_cpus);
  static Result<Config> FromEnvironment(const std::function<const char*(const char*)>& getenv_fn);
  // One INFO line per variable: value and whether it came from the environment.
  void LogValues(const std::function<const char*(const char*)>& getenv_fn) const;
};

// What an integer variable measures: only byte sizes take a K/M/G suffix.
enum class IntegerUnit {
  kPlain,  // counts, milliseconds, percentages, 0/1 switches
  kBytes,  // sizes: an optional binary K, M or G suffix, e.g. "512K"
};

// An integer read the way NCCL reads its own variables (strtoll, base 0: "0x10" is 16 and
// "010" is 8), with an optional sign, and nothing else: leading blanks, trailing characters
// and a suffix on a kPlain variable are errors, as is a value outside [min, max] (inclusive).
// The error names the variable, the value and the accepted range.
Result<int64_t> ParseBoundedInteger(const char* name, const char* text, int64_t min, int64_t max,
                                    IntegerUnit unit = IntegerUnit::kPlain);

// The limits, shared with tests and README.
inline constexpr int kMaxDataSockets = 64;
inline constexpr int kMaxWorkerThreads = 16;

// "3,7": queue ids as NCCL_DEVMEM_RX_QUEUES spells them (logs, devmem-doctor).
std::string JoinQueueIds(const std::vector<uint32_t>& queues);
inline constexpr uint64_t kMinChunkBytes = 4 << 10;
inline constexpr uint64_t kMaxChunkBytes = 64 << 20;
inline constexpr uint32_t kMaxInlineBytes = 16 << 20;
// NCCL_DEVMEM_PROXY_BYTES: up to 1 GiB (0: every message goes to the workers).
inline constexpr int64_t kMaxProxyBytes = int64_t{1} << 30;
inline constexpr int64_t kMaxSocketBufferBytes = int64_t{1} << 30;
// NCCL_DEVMEM_METRICS_INTERVAL_MS: rewriting the file more often than 10 times a second buys a
// scraper nothing (node_exporter reads it per scrape, typically every 15 s or more).
inline constexpr int64_t kMinMetricsIntervalMs = 100;
inline constexpr int kMaxRecvsLimit = 8;
inline constexpr uint64_t kMinRxRegionBytes = 1ull << 20;
inline constexpr uint64_t kMaxRxRegionBytes = 64ull << 30;
// NCCL_DEVMEM_RX_PAGE_SIZE: a power of two in [4K, 2M]. The top: RX regions are 2 MiB-aligned
// slices of the GPU's arena (rx_arena.h), and the kernel refuses a dmabuf whose size is not a
// multiple of the niov size (mptcp_net-next @7ac14249 net/core/devmem.c: "dmabuf size %zu not
// aligned to niov size"). The kernel's own page may raise the floor (frag_geometry.h).
inline constexpr uint64_t kMinRxPageBytes = 4096;
inline constexpr uint64_t kMaxRxPageBytes = 2u << 20;

// NCCL_DEVMEM_RX_QUEUES: a comma-separated list of RX queue ids ("" = default), each an integer
// as ParseBoundedInteger reads one (no blanks around the commas).
Result<std::vector<uint32_t>> ParseQueueList(const std::string& text);

}  // namespace devmem
