#include "plugin/observe/metrics.h"

#include <algorithm>

#include "plugin/observe/metrics_writer.h"

namespace devmem::observe {

const char* DirectionName(Direction direction) {
  return direction == Direction::kSend ? "send" : "recv";
}

const char* DataPathName(DataPath path) {
  switch (path) {
    case DataPath::kPlain:
      return "plain";
    case DataPath::kDevmem:
      return "devmem";
    case DataPath::kEmulated:
      return "emulated";
    case DataPath::kDevmemTx:
      return "devmem_tx";
  }
  return "plain";
}

const char* FallbackName(Fallback reason) {
  switch (reason) {
    case Fallback::kRxUnavailable:
      return "rx_unavailable";
    case Fallback::kTxRefused:
      return "tx_refused";
    case Fallback::kSteeringMissed:
      return "steering_missed";
  }
  return "rx_unavailable";
}

void LatencyHistogram::Record(std::chrono::nanoseconds elapsed) {
  const auto ns = static_cast<uint64_t>(std::max<int64_t>(elapsed.count(), 0));
  const auto bound = std::lower_bound(kLatencyBoundsNs.begin(), kLatencyBoundsNs.end(), ns);
  ++buckets_[static_cast<size_t>(bound - kLatencyBoundsNs.begin())];
  sum_ns_ += ns;
}

void LatencyHistogram::AddTo(LatencyCounts* into) const {
  for (size_t i = 0; i < buckets_.size(); ++i) {
    const uint64_t n = buckets_[i].load();
    into->buckets[i] += n;
    into->count += n;
  }
  into->sum_ns += sum_ns_.load();
}

namespace {
template <typename T, size_t N>
void AddArray(T (&into)[N], const T (&from)[N]) {
  for (size_t i = 0; i < N; ++i) into[i] += from[i];
}
template <typename T, size_t N, size_t M>
void AddArray(T (&into)[N][M], const T (&from)[N][M]) {
  for (size_t i = 0; i < N; ++i) AddArray(into[i], from[i]);
}
}  // namespace

void MetricsSnapshot::AddCounters(const MetricsSnapshot& other) {
  AddArray(bytes, other.bytes);
  AddArray(messages, other.messages);
  AddArray(inline_messages, other.inline_messages);
  AddArray(staged_bytes, other.staged_bytes);
  AddArray(data_syscalls, other.data_syscalls);
  AddArray(frags, other.frags);
  AddArray(region_bytes, other.region_bytes);
  AddArray(linear_bytes, other.linear_bytes);
  AddArray(pool_stalls, other.pool_stalls);
  steering_misses += other.steering_misses;
  tokens_returned += other.tokens_returned;
  tokens_not_freed += other.tokens_not_freed;
  AddArray(fallbacks, other.fallbacks);
  zerocopy_sends += other.zerocopy_sends;
  zerocopy_completions += other.zerocopy_completions;
  zerocopy_copies += other.zerocopy_copies;
  AddArray(comms_opened, other.comms_opened);
  for (size_t i = 0; i < consumer_latency.buckets.size(); ++i) {
    consumer_latency.buckets[i] += other.consumer_latency.buckets[i];
  }
  consumer_latency.count += other.consumer_latency.count;
  consumer_latency.sum_ns += other.consumer_latency.sum_ns;
}

void MetricsSnapshot::AddGauges(const MetricsSnapshot& other) {
  tokens_held += other.tokens_held;
  AddArray(comms_open, other.comms_open);
}

MetricsRegistry& MetricsRegistry::Process() {
  // Never destroyed: comms closed by static destructors (or after exit began) still find it.
  static auto* registry = new MetricsRegistry();  // NOLINT(cppcoreguidelines-owning-memory)
  return *registry;
}

void MetricsRegistry::Add(const MetricsSource* source) {
  std::lock_guard<std::mutex> lock(mutex_);
  sources_.push_back(source);
}

bool MetricsRegistry::Remove(const MetricsSource* source) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = std::find(sources_.begin(), sources_.end(), source);
  if (it == sources_.end()) return false;
  MetricsSnapshot last;
  source->Collect(&last);
  closed_.AddCounters(last);
  sources_.erase(it);
  return sources_.empty();
}

MetricsSnapshot MetricsRegistry::Snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  MetricsSnapshot total = closed_;
  for (const MetricsSource* source : sources_) {
    MetricsSnapshot live;
    source->Collect(&live);
    total.AddCounters(live);
    total.AddGauges(live);
  }
  return total;
}

void MetricsRegistration::Register(const MetricsSource* source) {
  Reset();
  MetricsRegistry& registry = MetricsRegistry::Process();
  if (!registry.enabled()) return;
  registry.Add(source);
  source_ = source;
}

void MetricsRegistration::Reset() {
  if (source_ == nullptr) return;
  const bool last = MetricsRegistry::Process().Remove(source_);
  source_ = nullptr;
  // The last comm closed: the file shows the job's final counts now, not an interval later.
  if (last) RequestMetricsWrite();
}

}  // namespace devmem::observe
