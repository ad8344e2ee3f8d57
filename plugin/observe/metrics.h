// The process's counters for NCCL_DEVMEM_METRICS_FILE: what every comm counts anyway (its
// single-writer counters, plugin/core/relaxed_counter.h), collected on demand by the metrics
// writer thread, never pushed by the data path. Comms register as sources while they live; a
// closing comm's counts are folded into the process totals, so nothing counted is lost.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "plugin/core/relaxed_counter.h"

namespace devmem::observe {

// Which way bytes go, and the data path that carried them.
enum class Direction : uint8_t { kSend, kRecv };
inline constexpr size_t kDirections = 2;
enum class DataPath : uint8_t {
  kPlain,     // TCP into (or from) host memory
  kDevmem,    // devmem RX: frags in a bound GPU region
  kEmulated,  // NCCL_DEVMEM_EMULATE (receive) or NCCL_DEVMEM_EMULATE_TX (send)
  kDevmemTx,  // devmem TX: sent from GPU memory by dmabuf offset
};
inline constexpr size_t kDataPaths = 4;
const char* DirectionName(Direction direction);  // "send", "recv"
const char* DataPathName(DataPath path);         // "plain", "devmem", "emulated", "devmem_tx"

// Why traffic did not take the devmem path it could have.
enum class Fallback : uint8_t {
  kRxUnavailable,   // a receive comm runs plain TCP: devmem RX is unavailable on its NIC
  kTxRefused,       // a CUDA send buffer devmem TX refused stages through host memory
  kSteeringMissed,  // a devmem connection read plain data: flow steering did not apply
};
inline constexpr size_t kFallbacks = 3;
const char* FallbackName(Fallback reason);  // "rx_unavailable", "tx_refused", "steering_missed"

// How long a receive's consumer took once its last byte arrived (scatter kernel, NCCL's
// unpack publish, host scatter), in buckets whose upper bounds are kLatencyBoundsNs.
inline constexpr std::array<uint64_t, 13> kLatencyBoundsNs = {
    10'000,    25'000,    50'000,     100'000,    250'000,     500'000,      1'000'000,
    2'500'000, 5'000'000, 10'000'000, 50'000'000, 250'000'000, 1'000'000'000};
struct LatencyCounts {
  std::array<uint64_t, kLatencyBoundsNs.size() + 1> buckets{};  // the last: above every bound
  uint64_t count = 0;
  uint64_t sum_ns = 0;
};

// One writer (the thread that completes receives: NCCL's proxy thread), read by the writer.
class LatencyHistogram {
 public:
  void Record(std::chrono::nanoseconds elapsed);
  void AddTo(LatencyCounts* into) const;

 private:
  std::array<RelaxedCounter, kLatencyBoundsNs.size() + 1> buckets_;
  RelaxedCounter sum_ns_;
};

// Everything the metrics file shows, as plain numbers. Counters only grow; gauges (marked) are
// values of now and are not folded into the totals when their comm closes.
struct MetricsSnapshot {
  uint64_t bytes[kDirections][kDataPaths] = {};
  uint64_t messages[kDirections] = {};
  uint64_t inline_messages[kDirections] = {};
  uint64_t staged_bytes[kDirections] = {};  // CUDA buffers through pinned host memory
  uint64_t data_syscalls[kDirections] = {};
  uint64_t frags[kDataPaths] = {};
  uint64_t region_bytes[kDataPaths] = {};
  uint64_t linear_bytes[kDataPaths] = {};
  uint64_t pool_stalls[kDataPaths] = {};
  uint64_t steering_misses = 0;
  uint64_t tokens_returned = 0;
  uint64_t tokens_not_freed = 0;
  uint64_t fallbacks[kFallbacks] = {};
  uint64_t zerocopy_sends = 0;
  uint64_t zerocopy_completions = 0;
  uint64_t zerocopy_copies = 0;  // completions the kernel reported as copied after all
  uint64_t comms_opened[kDirections][kDataPaths] = {};
  LatencyCounts consumer_latency;
  // Gauges.
  uint64_t tokens_held = 0;
  uint64_t comms_open[kDirections][kDataPaths] = {};

  // Adds `other`'s counters (not its gauges).
  void AddCounters(const MetricsSnapshot& other);
  // Adds `other`'s gauges.
  void AddGauges(const MetricsSnapshot& other);
};

// A live thing with counters (a comm). Collect adds its counters and gauges to *into; it runs
// on the writer thread while the source's own threads keep counting.
class MetricsSource {
 public:
  virtual void Collect(MetricsSnapshot* into) const = 0;

 protected:
  ~MetricsSource() = default;
};

// The process's sources and the totals of those that closed.
class MetricsRegistry {
 public:
  static MetricsRegistry& Process();
  // Whether anyone reads the counters (NCCL_DEVMEM_METRICS_FILE is set): sources register only
  // then.
  bool enabled() const { return enabled_.load(std::memory_order_acquire); }
  void Enable() { enabled_.store(true, std::memory_order_release); }

  void Add(const MetricsSource* source);
  // Folds the source's counters into the totals; true when it was the last live source.
  bool Remove(const MetricsSource* source);
  // Totals plus every live source.
  MetricsSnapshot Snapshot() const;

 private:
  std::atomic<bool> enabled_{false};
  mutable std::mutex mutex_;
  std::vector<const MetricsSource*> sources_;
  MetricsSnapshot closed_;  // counters of sources that went away
};

// A source's registration: added when the registry is enabled, removed (and folded) with this.
class MetricsRegistration {
 public:
  MetricsRegistration() = default;
  MetricsRegistration(const MetricsRegistration&) = delete;
  MetricsRegistration& operator=(const MetricsRegistration&) = delete;
  ~MetricsRegistration() { Reset(); }
  void Register(const MetricsSource* source);
  void Reset();

 private:
  const MetricsSource* source_ = nullptr;
};

}  // namespace devmem::observe
