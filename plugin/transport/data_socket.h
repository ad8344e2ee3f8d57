// The data plane: each data socket has a FIFO of tasks (one per message that uses it). Bytes
// are moved, never blocking, by a SocketMover: on the NCCL proxy thread for messages small
// enough that a hand-off would cost more than the copy, on the socket's progress-engine worker
// for the rest (plugin/transport/progress_engine.h). A socket is touched by one thread at a
// time: the proxy thread only while the worker's FIFO of that socket is empty, the worker only
// what its FIFO holds.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "plugin/consumers/frag_consumer.h"
#include "plugin/core/status.h"
#include "plugin/core/relaxed_counter.h"
#include "plugin/core/unique_fd.h"
#include "plugin/devmem/frag_receiver.h"
#include "plugin/devmem/offset_table.h"
#include "plugin/observe/profiler.h"
#include "plugin/transport/task_queue.h"
#include "plugin/transport/zerocopy.h"

namespace devmem {

struct Request;

// What one data socket received of one message through a FragReceiver: region frags as an
// offset table, and the tokens that pin them until the consumer has scattered them.
struct FragResult {
  OffsetTable table;
  std::vector<uint32_t> tokens;
  bool used = false;
  void Clear() {
    table.Clear();
    tokens.clear();
    used = false;
  }
};

// State the receive workers of one devmem comm share with its consumer (the proxy thread).
struct DevmemShared {
  std::atomic<uint64_t> oldest_seq{0};          // lowest message whose frags are still held
  std::atomic<uint64_t> release_generation{0};  // bumped whenever tokens go back
};

// The part of one message that one data socket carries: chunks next_chunk, next_chunk+stride,
// ... of a message cut by a StripePlan.
struct SocketTask {
  Request* request = nullptr;
  char* base = nullptr;  // nullptr on receive: read and discard (truncated message)
  uint64_t size = 0;
  uint64_t chunk_bytes = 0;
  uint64_t chunk_count = 0;
  uint64_t next_chunk = 0;
  uint32_t stride = 1;
  uint64_t done_in_chunk = 0;
  FragResult* result = nullptr;  // devmem modes: where deferred frags and tokens are recorded
  // Devmem modes: the consumer that scatters frags as they arrive (FragConsumer::PlanLanding);
  // nullptr: the frags are recorded in `result` and held until the consumer runs.
  const FragConsumer* arrival_consumer = nullptr;
  uint64_t seq = 0;              // devmem modes: message sequence number (reserve policy)
  // Send, devmem TX: `base` is the message's byte offset in the dmabuf bound as this id
  // (plugin/devmem/devmem_tx.h), and chunks go out with SendDevmemTx. 0: `base` is an address.
  uint32_t tx_dmabuf_id = 0;
  // Send with MSG_ZEROCOPY: every send under NCCL_DEVMEM_EMULATE_TX, and every devmem TX
  // send (QueueStripes sets it whenever tx_dmabuf_id is).
  bool zerocopy = false;
  // NCCL's profiler: the message's record when NCCL passed a handle for it (nullptr: not
  // profiled, the one test on the data path), and this transfer's SOCK event.
  observe::MessageProfile* profile = nullptr;
  void* phandle = nullptr;  // NCCL's handle, kept here: an error may end the message first
  void* socket_event = nullptr;
  bool socket_event_started = false;  // asked once, even where the profiler declined
};

class CommHealth;
class EngineWorker;
enum class Direction { kSend, kRecv };

// Counters with a single writer (whichever thread moves the socket, one at a time): plain
// relaxed stores, no locked instructions on the hot path; other threads read them when the
// comm closes or a benchmark asks.
struct SocketCounters {
  RelaxedCounter bytes;
  RelaxedCounter syscalls;
};

// Where a socket stands with its progress-engine worker (worker-only; see progress_engine.h).
enum class EngineStage : uint8_t { kIdle, kActive, kBlocked, kStalled, kAwaiting, kBroken };

struct DataSocket {
  DataSocket(UniqueFd socket_fd, Direction dir, CommHealth* comm_health, DevmemShared* shared)
      : fd(std::move(socket_fd)), direction(dir), health(comm_health), devmem(shared) {}

  UniqueFd fd;
  const Direction direction;
  CommHealth* const health;    // the comm's: an I/O error fails it
  DevmemShared* const devmem;  // the comm's (receive side, devmem modes)
  TaskQueue<SocketTask> tasks;  // the worker's
  // The proxy thread's tasks of this socket (proxy-only): non-empty only while `tasks` is
  // empty; handed to the worker, in order, before anything is pushed behind them.
  TaskQueue<SocketTask> proxy_tasks;
  std::unique_ptr<FragReceiver> receiver;     // null: plain recv straight into the buffer
  std::unique_ptr<ZeroCopyTracker> zerocopy;  // send with MSG_ZEROCOPY (null: plain send)
  // The tracker's completed() before the mover last drained (mover-only): a worker that
  // waits for completions sleeps only while the count has not moved past it.
  uint64_t completions_seen = 0;
  SocketCounters counters;
  // Adaptive striping (ConnectionParams::adaptive_stripes), send side: bytes queued on this
  // socket (the proxy thread's count) and bytes written to it (single writer, as counters).
  uint64_t queued_bytes = 0;
  RelaxedCounter moved_bytes;
  // Release generation seen when it stalled (whoever moved its bytes then).
  std::atomic<uint64_t> stalled_generation{0};

  // The progress engine's: the worker that owns the socket, whether the socket is in (or on
  // its way to) the worker's run list (set by the producer, cleared by the worker), and the
  // worker-only stage and the completion count an awaiting socket waits to see move.
  EngineWorker* worker = nullptr;
  std::atomic<bool> scheduled{false};
  EngineStage stage = EngineStage::kIdle;
  uint64_t awaited_completions = 0;
};

// First failure of a comm, visible to every request of it. Its message names the comm (which
// peer, which NIC): a job has a thousand comms, and the WARN must say which one failed.
class CommHealth {
 public:
  void SetName(std::string name) { name_ = std::move(name); }
  void Fail(const Status& status);
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  Status error() const;

 private:
  std::atomic<bool> failed_{false};
  mutable std::mutex mutex_;
  Status first_;
  std::string name_;
};

// Moves the bytes of one socket's front task as far as the socket allows without blocking.
// Holds only scratch space: one per thread that moves bytes (engine workers, NCCL's proxy
// threads), never per comm.
class SocketMover {
 public:
  // kAwaitCompletions: a zero-copy socket has the most sends in flight it may: wait for its
  // error queue (POLLERR), not for room in the socket.
  enum class Outcome { kDone, kBlocked, kStalled, kFailed, kAwaitCompletions };
  // The calling thread's mover.
  static SocketMover& ForThisThread();
  Outcome Advance(DataSocket* socket, SocketTask* task, bool* moved) {
    if (task->profile != nullptr) [[unlikely]] return AdvanceProfiled(socket, task, moved);
    return AdvanceBytes(socket, task, moved);
  }

 private:
  Outcome AdvanceBytes(DataSocket* socket, SocketTask* task, bool* moved);
  // Advance of a profiled message's transfer: its SOCK event around the bytes, its frags and
  // linear bytes counted (plugin/transport/comm_observe.cc).
  Outcome AdvanceProfiled(DataSocket* socket, SocketTask* task, bool* moved);
  Outcome AdvanceFrags(DataSocket* socket, SocketTask* task, bool* moved);
  // Receive: a buffer to read a truncated message's bytes into and drop (allocated on the
  // first truncation: most threads never see one).
  std::vector<char>& Discard();

  std::vector<StreamSegment> segments_;  // scratch for one FragReceiver call
  OffsetTable immediate_;                // scratch: frags scattered right after they arrive
  std::vector<uint32_t> immediate_tokens_;
  std::vector<char> discard_;
};

}  // namespace devmem
