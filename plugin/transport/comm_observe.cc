// What a comm shows the outside while it runs: its counters to the metrics file
// (plugin/observe/metrics.h) and its messages and data-socket transfers to NCCL's profiler
// (plugin/observe/profiler.h). Nothing here runs for a message NCCL gave no profiler handle.
#include <algorithm>
#include <chrono>

#include "plugin/transport/comm.h"

namespace devmem {
namespace {

size_t Slot(observe::Direction direction) { return static_cast<size_t>(direction); }
size_t Slot(observe::DataPath path) { return static_cast<size_t>(path); }

// The bytes of its message that `task`'s socket carries: chunks next_chunk, next_chunk+stride...
uint64_t ShareOf(const SocketTask& task) {
  uint64_t bytes = 0;
  for (uint64_t c = task.next_chunk; c < task.chunk_count; c += task.stride) {
    bytes += std::min(task.chunk_bytes, task.size - c * task.chunk_bytes);
  }
  return bytes - task.done_in_chunk;
}

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
    into->data_syscalls[dir] += socket->counters.syscalls.load();
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

observe::MessageProfile* Comm::StartMessageProfile(Request* request, int index, void* phandle,
                                                   const observe::MessageTransfer& message) {
  observe::ProfilerSink* sink = observe::ActiveProfiler();
  if (phandle == nullptr || sink == nullptr) return nullptr;
  if (request->profiles == nullptr) {
    request->profiles = std::make_unique<std::array<observe::MessageProfile, kMaxRecvsLimit>>();
  }
  observe::MessageProfile& profile = (*request->profiles)[static_cast<size_t>(index)];
  profile.Begin(phandle, message);
  profile.event = sink->StartMessage(phandle, message);
  return &profile;
}

void Comm::EndProfiledMessages(Request* request, bool failed) {
  if (request->profiles == nullptr) return;
  observe::ProfilerSink* sink = observe::ActiveProfiler();
  for (int i = 0; i < request->count && i < kMaxRecvsLimit; ++i) {
    observe::MessageProfile& profile = (*request->profiles)[static_cast<size_t>(i)];
    if (profile.phandle == nullptr) continue;
    profile.phandle = nullptr;  // the slot's next message starts unprofiled
    if (profile.event == nullptr || sink == nullptr) continue;
    const SubRequest& sub = request->subs[static_cast<size_t>(i)];
    observe::MessageTransfer message = profile.start;
    message.failed = failed;
    message.bytes = sub.matched ? sub.size : 0;
    message.frags = profile.frags.load(std::memory_order_relaxed);
    message.linear_bytes = profile.linear_bytes.load(std::memory_order_relaxed);
    message.consumer_ns = profile.consumer_ns;
    // One token per frag (devmem: one per cmsg; emulation: one per page frag). A consumer that
    // scattered on arrival gave each back at once; held ones go back once the sub lets go.
    const bool returned = sub.scatter_on_arrival || !sub.holds_frags;
    message.tokens_returned = returned ? message.frags : 0;
    sink->StopMessage(profile.event, message);
    profile.event = nullptr;
  }
}

void Comm::NoteConsumerFinished(Request* request) {
  const auto elapsed = std::chrono::steady_clock::now() - request->consuming_since;
  consumer_latency_.Record(elapsed);
  if (request->profiles == nullptr) return;
  const auto ns =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count());
  for (int i = 0; i < request->count && i < kMaxRecvsLimit; ++i) {
    (*request->profiles)[static_cast<size_t>(i)].consumer_ns = ns;
  }
}

void Comm::StopProfiledEvents() {
  observe::ProfilerSink* sink = observe::ActiveProfiler();
  if (sink == nullptr) return;
  // No worker touches the sockets any more (detached): their unfinished transfers stop here.
  for (const auto& socket : data_sockets_) {
    for (TaskQueue<SocketTask>* queue : {&socket->proxy_tasks, &socket->tasks}) {
      while (SocketTask* task = queue->Front()) {
        if (task->socket_event != nullptr) sink->StopSocket(task->socket_event);
        queue->Pop();
      }
    }
  }
  for (size_t i = 0; i < RequestPool::kSize; ++i) {
    Request* request = pool_.At(i);
    if (request != nullptr && request->in_use()) EndProfiledMessages(request, /*failed=*/true);
  }
}

SocketMover::Outcome SocketMover::AdvanceProfiled(DataSocket* socket, SocketTask* task,
                                                  bool* moved) {
  observe::ProfilerSink* sink = observe::ActiveProfiler();  // set: the task has a profile
  if (!task->socket_event_started) {
    task->socket_event_started = true;
    observe::SocketTransfer transfer;
    transfer.fd = socket->fd.get();
    transfer.direction = socket->direction == Direction::kSend ? observe::Direction::kSend
                                                               : observe::Direction::kRecv;
    transfer.length = ShareOf(*task);
    task->socket_event = sink->StartSocket(task->phandle, transfer);
  }
  // The receiver's counters have one writer, this mover: their growth during the call is
  // this transfer's.
  const FragReceiver* receiver = socket->receiver.get();
  const uint64_t frags = receiver != nullptr ? receiver->counters().frags.load() : 0;
  const uint64_t linear = receiver != nullptr ? receiver->counters().host_bytes.load() : 0;
  const Outcome outcome = AdvanceBytes(socket, task, moved);
  if (receiver != nullptr) {
    task->profile->frags.fetch_add(receiver->counters().frags.load() - frags,
                                   std::memory_order_relaxed);
    task->profile->linear_bytes.fetch_add(receiver->counters().host_bytes.load() - linear,
                                          std::memory_order_relaxed);
  }
  if ((outcome == Outcome::kDone || outcome == Outcome::kFailed) && task->socket_event != nullptr) {
    sink->StopSocket(task->socket_event);
    task->socket_event = nullptr;
  }
  return outcome;
}

}  // namespace devmem
