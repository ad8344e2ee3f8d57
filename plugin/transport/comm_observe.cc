// What a comm shows the outside while it runs: its counters to the metrics file
// (plugin/observe/metrics.h).
#include <algorithm>
#include <chrono>

#include "plugin/transport/comm.h"

namespace devmem {
namespace {

size_t Slot(observe::Direction direction) { return static_cast<size_t>(direction); }
size_t Slot(observe::DataPath path) { return static_cast<size_t>(path); }

}  // namespace

observe::DataPath DataPathOf(RxPath::Mode mode) {
  switch (mode) {
    case RxPath::Mode::kPlain:
      return observe::DataPath::kPlain;
    case RxPath::Mode::kEmulatedDevmem:
      return observe::DataPath::kEmulated;
    case RxPath::Mode::kDevmem:
      return observe::DataPath::kDevmem;
  }
  return observe::DataPath::kPlain;
}

void Comm::Collect(observe::MetricsSnapshot* into) const {
  const bool send = direction_ == Direction::kSend;
  const size_t dir = Slot(send ? observe::Direction::kSend : observe::Direction::kRecv);
  // A send comm's bytes go by message: devmem TX for bound CUDA buffers, the rest plain (or
  // zero-copy from host memory under NCCL_DEVMEM_EMULATE_TX).
  const observe::DataPath bytes_path =
      send ? (params_.zerocopy_tx ? observe::DataPath::kEmulated : observe::DataPath::kPlain)
           : data_path_;
  const observe::DataPath comm_path =
      send && params_.devmem_tx_ifindex > 0 ? observe::DataPath::kDevmemTx : bytes_path;
  into->comms_opened[dir][Slot(comm_path)] += 1;
  into->comms_open[dir][Slot(comm_path)] += 1;
  if (!send && data_path_ == observe::DataPath::kPlain) {
    into->fallbacks[static_cast<size_t>(observe::Fallback::kRxUnavailable)] += 1;
  }
  into->fallbacks[static_cast<size_t>(observe::Fallback::kTxRefused)] += counters_.tx_refusals;
  const uint64_t tx_bytes = counters_.devmem_tx_bytes;
  into->bytes[dir][Slot(bytes_path)] += counters_.payload_bytes - tx_bytes;
  into->bytes[dir][Slot(observe::DataPath::kDevmemTx)] += tx_bytes;
  into->messages[dir] += counters_.messages;
  into->inline_messages[dir] += counters_.inline_messages;
  into->staged_bytes[dir] += counters_.staged_bytes;
  for (const auto& socket : data_sockets_) {
    into->data_syscalls[dir] += socket->counters.syscalls.load(std::memory_order_relaxed);
    if (socket->receiver != nullptr) {
      const ReceiverCounters& c = socket->receiver->counters();
      const size_t path = Slot(data_path_);
      into->frags[path] += c.frags;
      into->region_bytes[path] += c.region_bytes;
      into->linear_bytes[path] += c.host_bytes;
      into->pool_stalls[path] += c.stalls;
      into->steering_misses += c.plain_reads;
      into->fallbacks[static_cast<size_t>(observe::Fallback::kSteeringMissed)] += c.plain_reads;
      into->tokens_returned += c.release.tokens_returned;
      into->tokens_not_freed += c.release.tokens_not_freed;
      into->tokens_held += socket->receiver->outstanding();
    }
    if (socket->zerocopy != nullptr) {
      into->zerocopy_sends += socket->zerocopy->sends();
      into->zerocopy_completions += socket->zerocopy->completed();
      into->zerocopy_copies += socket->zerocopy->copied();
    }
  }
  consumer_latency_.AddTo(&into->consumer_latency);
}

void Comm::NoteConsumerFinished(Request* request) {
  const auto elapsed = std::chrono::steady_clock::now() - request->consuming_since;
  consumer_latency_.Record(elapsed);
}

}  // namespace devmem
