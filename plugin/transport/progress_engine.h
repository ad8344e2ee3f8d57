// The progress engine: one per process, shared by every comm of every NIC. A fixed set of
// worker threads (NCCL_DEVMEM_NTHREADS, chosen from the usable CPUs; never per comm) moves the
// bytes of the data sockets whose messages are too large for NCCL's proxy thread to move
// itself (ConnectionParams::proxy_bytes). Each data socket belongs to one worker for its life;
// the worker watches it with epoll (one-shot, armed) only while it waits for the socket, and
// sleeps in epoll_wait when nothing is pending, so idle comms cost no CPU and no thread.
//
// A socket is in one stage at a time, advanced only by its worker (EngineWorker::Advance):
//   idle      no task queued; the producer (the comm's proxy thread) schedules it on a push
//   active    in the worker's run list: its front task is being moved
//   blocked   the socket had no room / no bytes: its armed one-shot epoll event makes it active
//   stalled   devmem: no free RX page; active again once the comm returned tokens
//   awaiting  zero-copy: the most sends in flight; active again once completions arrive
//   broken    an I/O error failed the comm: never touched again
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "plugin/core/status.h"
#include "plugin/core/unique_fd.h"

namespace devmem {

struct DataSocket;

class EngineWorker final {
 public:
  explicit EngineWorker(int index);
  EngineWorker(const EngineWorker&) = delete;
  EngineWorker& operator=(const EngineWorker&) = delete;
  ~EngineWorker();  // stops and joins

  Status Start();
  // Stops and joins the thread (idempotent).
  void Stop();
  // Watches `socket` from now on (any thread; before its first Schedule).
  Status Attach(DataSocket* socket);
  // Forgets `sockets` and returns once the worker holds no pointer to any of them (any thread
  // but this worker's).
  void Detach(const std::vector<DataSocket*>& sockets);
  // Producer, after pushing a task on `socket`: makes it active unless it already is
  // scheduled (a lock and possibly a wake-up only on the idle -> scheduled edge).
  void Schedule(DataSocket* socket);
  // Something a stalled or awaiting socket waits for may have happened (tokens returned,
  // completions drained by another thread): look again. A syscall only when it sleeps.
  void Wake();

 private:
  void Run();
  void RunLoop();
  // What a socket's armed epoll entry waits for: room or bytes, or zero-copy completions.
  enum class Wait { kSocket, kCompletions };
  // Arms `socket`'s one-shot epoll entry; false if epoll_ctl failed.
  bool Arm(DataSocket* socket, Wait wait);
  // Moves `socket`'s tasks until it finishes them or has to wait; returns whether bytes moved.
  bool Advance(DataSocket* socket);
  // Takes what other threads posted: new active sockets, detach requests.
  void TakeInbox();
  // Makes the stalled / awaiting sockets whose condition changed active; returns how many.
  size_t Recheck();

  const int index_;
  UniqueFd epoll_fd_;
  UniqueFd wake_fd_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> sleeping_{false};

  // Posted by other threads (under inbox_mutex_).
  std::mutex inbox_mutex_;
  std::condition_variable detached_;
  std::atomic<bool> inbox_nonempty_{false};
  std::vector<DataSocket*> inbox_;
  std::vector<DataSocket*> detach_;
  uint64_t detach_requested_ = 0;
  uint64_t detach_done_ = 0;
  bool exited_ = false;  // Run() returned: nothing to wait for

  // Worker-only.
  std::vector<DataSocket*> run_;
  std::vector<DataSocket*> stalled_;
  std::vector<DataSocket*> awaiting_;
  std::vector<DataSocket*> scratch_;
};

class ProgressEngine final {
 public:
  // The process's engine. Its workers start with the first comm that needs them and stop
  // (joined, their fds closed) when the last comm detached: a process without comms has no
  // engine thread, and NCCL may unload the plugin (dlclose) once it closed every comm.
  static ProgressEngine& Process();

  // Assigns `sockets` to `threads` workers (socket s to the (s mod threads)-th of them, the
  // comms spread round-robin over the engine), starting workers on first need. `out[s]` is
  // socket s's worker.
  Status Attach(const std::vector<DataSocket*>& sockets, int threads,
                std::vector<EngineWorker*>* out);
  // A comm that attached gave its sockets back (EngineWorker::Detach): the last one stops the
  // workers.
  void Detached();
  // Stops and joins every worker without forgetting them (the library is being unloaded or
  // the process exits: no thread may run its code afterwards).
  void StopThreads();

 private:
  ProgressEngine() = default;
  Result<EngineWorker*> Worker(int index);

  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<EngineWorker>> workers_;
  uint32_t next_first_ = 0;
  size_t attached_comms_ = 0;
};

}  // namespace devmem
