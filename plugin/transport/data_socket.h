// The data plane: each data socket has a FIFO of tasks (one per message that uses it). Bytes
// are moved, never blocking, by a SocketMover: the NCCL proxy thread's own for messages small
// enough that a hand-off would cost more than the copy, a worker thread's for the rest (where
// parallel sockets pay). A socket is touched by one thread at a time: the proxy thread only
// while the worker's FIFO of that socket is empty, the worker only what its FIFO holds.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "plugin/core/status.h"
#include "plugin/core/unique_fd.h"
#include "plugin/devmem/frag_receiver.h"
#include "plugin/devmem/offset_table.h"
#include "plugin/transport/zerocopy.h"

namespace devmem {

struct Request;

// Single-producer (proxy thread) / single-consumer (worker) ring.
template <typename T, size_t N>
class SpscRing {
  static_assert((N & (N - 1)) == 0, "power of two");

 public:
  bool Push(const T& value) {
    const uint64_t tail = tail_.load(std::memory_order_relaxed);
    if (tail - head_.load(std::memory_order_acquire) == N) return false;
    slots_[tail % N] = value;
    // seq_cst pairs with the worker's sleep check (see WorkerThread::Run).
    tail_.store(tail + 1, std::memory_order_seq_cst);
    return true;
  }
  T* Front() {
    const uint64_t head = head_.load(std::memory_order_relaxed);
    if (head == tail_.load(std::memory_order_seq_cst)) return nullptr;
    return &slots_[head % N];
  }
  void Pop() { head_.store(head_.load(std::memory_order_relaxed) + 1, std::memory_order_release); }

 private:
  std::array<T, N> slots_{};
  alignas(64) std::atomic<uint64_t> head_{0};
  alignas(64) std::atomic<uint64_t> tail_{0};
};

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
  bool scatter_now = false;      // devmem modes: host destination, the worker scatters at once
  uint64_t seq = 0;              // devmem modes: message sequence number (reserve policy)
  // Send, devmem TX: `base` is the message's byte offset in the dmabuf bound as this id
  // (plugin/devmem/devmem_tx.h), and chunks go out with SendDevmemTx. 0: `base` is an address.
  uint32_t tx_dmabuf_id = 0;
  // Send with MSG_ZEROCOPY: every send under NCCL_DEVMEM_EMULATE_TX, and every devmem TX
  // send (QueueStripes sets it whenever tx_dmabuf_id is).
  bool zerocopy = false;
};

// 32 requests x 8 sub-requests can each put at most one task on a socket.
inline constexpr size_t kSocketTaskCapacity = 256;

struct DataSocket {
  UniqueFd fd;
  SpscRing<SocketTask, kSocketTaskCapacity> tasks;  // the worker's
  // The proxy thread's tasks of this socket (proxy-only): non-empty only while `tasks` is
  // empty; handed to the worker, in order, before anything is pushed behind them.
  SpscRing<SocketTask, kSocketTaskCapacity> proxy_tasks;
  std::unique_ptr<FragReceiver> receiver;     // null: plain recv straight into the buffer
  std::unique_ptr<ZeroCopyTracker> zerocopy;  // send with MSG_ZEROCOPY (null: plain send)
  // The tracker's completed() before the mover last drained (mover-only): a worker that
  // waits for completions sleeps only while the count has not moved past it.
  uint64_t completions_seen = 0;
  bool broken = false;  // worker-only: an I/O error was reported, stop touching it
  // Adaptive striping (ConnectionParams::adaptive_stripes), send side: bytes queued on this
  // socket (the proxy thread's count) and bytes written to it (by whichever thread moves the
  // socket, one at a time: a single-writer counter like WorkerCounters).
  uint64_t queued_bytes = 0;
  std::atomic<uint64_t> moved_bytes{0};
  // Release generation seen when it stalled (whoever moved its bytes then).
  std::atomic<uint64_t> stalled_generation{0};
};

// First failure of a comm, visible to every request of it.
class CommHealth {
 public:
  void Fail(const Status& status);
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  Status error() const;

 private:
  std::atomic<bool> failed_{false};
  mutable std::mutex mutex_;
  Status first_;
};

enum class Direction { kSend, kRecv };

// Counters with a single writer (the worker): plain relaxed stores, no locked instructions on
// the hot path; other threads read them when the comm closes or a benchmark asks.
struct WorkerCounters {
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> syscalls{0};
  std::atomic<uint64_t> polls{0};
  static void Add(std::atomic<uint64_t>& counter, uint64_t n) {
    counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
};

// Moves the bytes of one socket's front task as far as the socket allows without blocking;
// the worker threads and the proxy thread each own one (scratch buffers, counters).
class SocketMover {
 public:
  // kAwaitCompletions: a zero-copy socket has the most sends in flight it may: wait for its
  // error queue (POLLERR), not for room in the socket.
  enum class Outcome { kDone, kBlocked, kStalled, kFailed, kAwaitCompletions };
  SocketMover(Direction direction, CommHealth* health, DevmemShared* devmem,
              WorkerCounters* counters);
  Outcome Advance(DataSocket* socket, SocketTask* task, bool* moved);

 private:
  Outcome AdvanceFrags(DataSocket* socket, SocketTask* task, bool* moved);

  const Direction direction_;
  CommHealth* health_;
  DevmemShared* devmem_;
  WorkerCounters* counters_;
  std::vector<StreamSegment> segments_;  // scratch for one FragReceiver call
  OffsetTable immediate_;                // scratch: frags scattered right after they arrive
  std::vector<uint32_t> immediate_tokens_;
  std::vector<char> discard_;  // receive: bytes of a truncated message
};

class WorkerThread final {
 public:
  WorkerThread(Direction direction, std::vector<DataSocket*> sockets, CommHealth* health,
               DevmemShared* devmem = nullptr);
  WorkerThread(const WorkerThread&) = delete;
  WorkerThread& operator=(const WorkerThread&) = delete;
  ~WorkerThread();  // stops and joins

  Status Start(const std::string& name);
  // Called by the producer after pushing tasks; a syscall only when the worker sleeps.
  void Wake();
  const WorkerCounters& counters() const { return counters_; }

 private:
  using Outcome = SocketMover::Outcome;
  void Run();

  const Direction direction_;
  std::vector<DataSocket*> sockets_;
  CommHealth* health_;
  DevmemShared* devmem_;
  WorkerCounters counters_;
  SocketMover mover_;
  UniqueFd wake_fd_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> sleeping_{false};
  std::thread thread_;
};

}  // namespace devmem
