#include "plugin/transport/progress_engine.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "plugin/core/config.h"
#include "plugin/core/log.h"
#include "plugin/transport/data_socket.h"
#include "plugin/transport/request.h"

namespace devmem {
namespace {

constexpr int kEventsPerWait = 64;

void RemoveFrom(std::vector<DataSocket*>* list, DataSocket* socket) {
  auto it = std::find(list->begin(), list->end(), socket);
  if (it != list->end()) list->erase(it);
}

}  // namespace

EngineWorker::EngineWorker(int index) : index_(index) {}

EngineWorker::~EngineWorker() { Stop(); }

void EngineWorker::Stop() {
  if (!thread_.joinable()) return;
  stop_.store(true, std::memory_order_seq_cst);
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t ignored = write(wake_fd_.get(), &one, sizeof(one));
  thread_.join();
}

Status EngineWorker::Start() {
  const std::string name = Format("devmem-eng%d", index_);
  epoll_fd_.reset(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_fd_.valid()) return Status::Errno(errno, "epoll_create1 for %s", name.c_str());
  wake_fd_.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake_fd_.valid()) return Status::Errno(errno, "eventfd for %s", name.c_str());
  epoll_event wake{};
  wake.events = EPOLLIN;
  wake.data.ptr = nullptr;  // the wake-up eventfd: the only entry without a socket
  if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, wake_fd_.get(), &wake) != 0) {
    return Status::Errno(errno, "epoll_ctl(ADD) of %s's wake-up eventfd", name.c_str());
  }
  try {
    thread_ = std::thread([this] { Run(); });
  } catch (const std::system_error& e) {
    return Status::Error(ErrorKind::kSystem, "starting progress-engine thread %s: %s",
                         name.c_str(), e.what());
  }
  pthread_setname_np(thread_.native_handle(), name.c_str());
  return Status::Ok();
}

Status EngineWorker::Attach(DataSocket* socket) {
  // Registered disarmed (one-shot with no event left: the kernel adds only EPOLLERR and
  // EPOLLHUP, which fire at most once). A socket the proxy thread moves inline must not wake
  // this worker on every segment: an armed entry makes every arrival (or ACK freeing room) run
  // ep_poll_callback's wake-up of a sleeping worker, a context switch per edge on a small host
  // (the 4 MiB ping-pong spent 13% of its time in the socket lock against those wake-ups;
  // perf/RESULTS.md, "Engine wake-ups"). The worker arms the entry when it has to wait (Arm).
  epoll_event event{};
  event.events = EPOLLONESHOT;
  event.data.ptr = socket;
  socket->worker = this;
  if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, socket->fd.get(), &event) != 0) {
    return Status::Errno(errno, "epoll_ctl(ADD) of a data socket to devmem-eng%d", index_);
  }
  return Status::Ok();
}

bool EngineWorker::Arm(DataSocket* socket, Wait wait) {
  // One-shot and level-triggered: EPOLL_CTL_MOD polls the socket at once (fs/eventpoll.c
  // ep_modify: ep_item_poll, then the item is queued if ready), so room or bytes that came
  // between EAGAIN and this call are not missed; the event then disarms the entry again.
  // EPOLLERR (zero-copy completions on the error queue) and EPOLLHUP are added by the kernel:
  // a socket awaiting completions waits for those alone (room in the socket would fire and
  // disarm the entry without a completion).
  epoll_event event{};
  event.events = EPOLLONESHOT;
  if (wait == Wait::kSocket) {
    event.events |= socket->direction == Direction::kSend ? EPOLLOUT : (EPOLLIN | EPOLLRDHUP);
  }
  event.data.ptr = socket;
  return epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, socket->fd.get(), &event) == 0;
}

void EngineWorker::Detach(const std::vector<DataSocket*>& sockets) {
  // No event for these fds after this (the worker may still hold one from its last wait: it
  // handles those before it takes the request below, while the sockets still exist).
  for (DataSocket* socket : sockets) {
    epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, socket->fd.get(), nullptr);
  }
  std::unique_lock<std::mutex> lock(inbox_mutex_);
  detach_.insert(detach_.end(), sockets.begin(), sockets.end());
  const uint64_t ticket = ++detach_requested_;
  inbox_nonempty_.store(true, std::memory_order_seq_cst);
  lock.unlock();
  sleeping_.store(false, std::memory_order_seq_cst);
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t ignored = write(wake_fd_.get(), &one, sizeof(one));
  lock.lock();
  detached_.wait(lock, [&] { return detach_done_ >= ticket || exited_; });
}

void EngineWorker::Schedule(DataSocket* socket) {
  if (socket->scheduled.exchange(true, std::memory_order_seq_cst)) return;
  {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    inbox_.push_back(socket);
    inbox_nonempty_.store(true, std::memory_order_seq_cst);
  }
  Wake();
}

void EngineWorker::Wake() {
  if (sleeping_.load(std::memory_order_seq_cst) && sleeping_.exchange(false)) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t ignored = write(wake_fd_.get(), &one, sizeof(one));
  }
}

void EngineWorker::TakeInbox() {
  if (!inbox_nonempty_.load(std::memory_order_seq_cst)) return;
  std::lock_guard<std::mutex> lock(inbox_mutex_);
  inbox_nonempty_.store(false, std::memory_order_relaxed);
  for (DataSocket* socket : inbox_) {
    // Scheduled by its producer: it was idle (only then is it posted).
    socket->stage = EngineStage::kActive;
    run_.push_back(socket);
  }
  inbox_.clear();
  if (detach_.empty()) return;
  for (DataSocket* socket : detach_) {
    switch (socket->stage) {
      case EngineStage::kActive:
        RemoveFrom(&run_, socket);
        break;
      case EngineStage::kStalled:
        RemoveFrom(&stalled_, socket);
        break;
      case EngineStage::kAwaiting:
        RemoveFrom(&awaiting_, socket);
        break;
      default:
        break;
    }
    socket->stage = EngineStage::kBroken;  // never touched again
  }
  detach_.clear();
  detach_done_ = detach_requested_;
  detached_.notify_all();
}

bool EngineWorker::Advance(DataSocket* socket) {
  using Outcome = SocketMover::Outcome;
  SocketMover& mover = SocketMover::ForThisThread();
  bool moved = false;
  for (;;) {
    SocketTask* task = socket->tasks.Front();
    if (task == nullptr) {
      // Out of work: unschedule, then look once more (the producer pushes, then tests the
      // flag; one of the two sees the other).
      socket->scheduled.store(false, std::memory_order_seq_cst);
      if (socket->tasks.Front() != nullptr &&
          !socket->scheduled.exchange(true, std::memory_order_seq_cst)) {
        continue;
      }
      socket->stage = EngineStage::kIdle;
      return moved;
    }
    const Outcome outcome = mover.Advance(socket, task, &moved);
    switch (outcome) {
      case Outcome::kDone: {
        Request* request = task->request;
        socket->tasks.Pop();
        request->pending_tasks.fetch_sub(1, std::memory_order_release);
        moved = true;
        continue;
      }
      case Outcome::kFailed:
        socket->stage = EngineStage::kBroken;
        return moved;
      case Outcome::kStalled:
        // No free page: wait for the consumer to return tokens, not for the socket.
        socket->stage = EngineStage::kStalled;
        stalled_.push_back(socket);
        return moved;
      case Outcome::kAwaitCompletions:
        socket->stage = EngineStage::kAwaiting;
        socket->awaited_completions = socket->completions_seen;
        awaiting_.push_back(socket);
        if (!Arm(socket, Wait::kCompletions)) {
          // Without the entry no completion edge wakes us: look again on every pass instead.
          socket->stage = EngineStage::kActive;
          RemoveFrom(&awaiting_, socket);
          run_.push_back(socket);
        }
        return moved;
      case Outcome::kBlocked:
        socket->stage = EngineStage::kBlocked;
        // An entry that cannot be armed (never seen: the fd is registered until Detach) would
        // leave the socket asleep forever: retry it on the next pass instead.
        if (!Arm(socket, Wait::kSocket)) {
          socket->stage = EngineStage::kActive;
          run_.push_back(socket);
        }
        return moved;
    }
  }
}

size_t EngineWorker::Recheck() {
  size_t woken = 0;
  for (size_t i = 0; i < stalled_.size();) {
    DataSocket* socket = stalled_[i];
    // Tokens returned since it stalled: its pages may be free again.
    const uint64_t released = socket->devmem->release_generation.load(std::memory_order_seq_cst);
    if (socket->stalled_generation.exchange(released, std::memory_order_relaxed) != released) {
      socket->stage = EngineStage::kActive;
      run_.push_back(socket);
      stalled_[i] = stalled_.back();
      stalled_.pop_back();
      ++woken;
    } else {
      ++i;
    }
  }
  for (size_t i = 0; i < awaiting_.size();) {
    DataSocket* socket = awaiting_[i];
    // NCCL's proxy thread drains the error queue in test() too, and may consume the edge this
    // worker would wait for (it then wakes us, and the count tells us).
    if (socket->zerocopy->completed() != socket->awaited_completions) {
      socket->stage = EngineStage::kActive;
      run_.push_back(socket);
      awaiting_[i] = awaiting_.back();
      awaiting_.pop_back();
      ++woken;
    } else {
      ++i;
    }
  }
  return woken;
}

void EngineWorker::Run() {
  RunLoop();
  std::lock_guard<std::mutex> lock(inbox_mutex_);
  exited_ = true;
  detached_.notify_all();
}

void EngineWorker::RunLoop() {
  epoll_event events[kEventsPerWait];
  while (!stop_.load(std::memory_order_acquire)) {
    TakeInbox();
    bool moved = false;
    // Every active socket gets a turn (Advance leaves it idle, blocked, stalled, awaiting or
    // broken); the ones that become active meanwhile go in the next round.
    scratch_.swap(run_);
    run_.clear();
    for (DataSocket* socket : scratch_) {
      if (socket->stage != EngineStage::kActive) continue;  // detached meanwhile
      moved |= Advance(socket);
    }
    scratch_.clear();

    int timeout = 0;
    if (!moved && run_.empty()) {
      // Nothing to do. Announce that we sleep, then look once more for work posted meanwhile:
      // with the producers' seq_cst posts and Wake() checks, one side sees the other.
      sleeping_.store(true, std::memory_order_seq_cst);
      if (inbox_nonempty_.load(std::memory_order_seq_cst) || Recheck() > 0 ||
          stop_.load(std::memory_order_seq_cst)) {
        sleeping_.store(false, std::memory_order_relaxed);
        continue;
      }
      timeout = -1;
    }
    const int ready = epoll_wait(epoll_fd_.get(), events, kEventsPerWait, timeout);
    sleeping_.store(false, std::memory_order_relaxed);
    if (ready < 0 && errno != EINTR) {
      log::Warn("devmem-eng%d: epoll_wait failed: %s; the progress engine worker stops", index_,
                strerror(errno));
      return;
    }
    for (int i = 0; i < ready; ++i) {
      auto* socket = static_cast<DataSocket*>(events[i].data.ptr);
      if (socket == nullptr) {
        uint64_t drained;
        [[maybe_unused]] ssize_t ignored = read(wake_fd_.get(), &drained, sizeof(drained));
        continue;
      }
      if (socket->stage == EngineStage::kBlocked) {
        socket->stage = EngineStage::kActive;
        run_.push_back(socket);
      } else if (socket->stage == EngineStage::kAwaiting && (events[i].events & EPOLLERR)) {
        socket->stage = EngineStage::kActive;
        RemoveFrom(&awaiting_, socket);
        run_.push_back(socket);
      }
    }
    if (timeout != 0 || moved) Recheck();
  }
}

// ---------------------------------------------------------------------------------------------

ProgressEngine& ProgressEngine::Process() {
  // Never destroyed: comms NCCL never closed may still point at its workers at exit.
  static auto* engine = new ProgressEngine();  // NOLINT: on purpose
  return *engine;
}

namespace {
// Runs when the library is unloaded or the process exits: engine threads must not outlive the
// code they run. Comms left open keep their (stopped) workers' objects.
struct StopEngineAtUnload {
  ~StopEngineAtUnload() { ProgressEngine::Process().StopThreads(); }
} stop_engine_at_unload;
}  // namespace

void ProgressEngine::Detached() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (attached_comms_ > 0 && --attached_comms_ == 0) workers_.clear();
}

void ProgressEngine::StopThreads() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& worker : workers_) worker->Stop();
}

Result<EngineWorker*> ProgressEngine::Worker(int index) {
  while (static_cast<int>(workers_.size()) <= index) {
    auto worker = std::make_unique<EngineWorker>(static_cast<int>(workers_.size()));
    DEVMEM_RETURN_IF_ERROR(worker->Start());
    static std::atomic<bool> logged{false};
    if (!logged.exchange(true)) {
      log::Info(log::kNet,
                "progress engine: worker threads start with the first comm, at most "
                "NCCL_DEVMEM_NTHREADS per process, shared by every comm, and stop with the last");
    }
    workers_.push_back(std::move(worker));
  }
  return workers_[static_cast<size_t>(index)].get();
}

Status ProgressEngine::Attach(const std::vector<DataSocket*>& sockets, int threads,
                              std::vector<EngineWorker*>* out) {
  threads = std::clamp(threads, 1, kMaxWorkerThreads);
  std::lock_guard<std::mutex> lock(mutex_);
  Result<EngineWorker*> last = Worker(threads - 1);
  if (!last.ok()) {
    if (attached_comms_ == 0) workers_.clear();  // none serves a comm: start afresh next time
    return last.status().WithContext("progress engine");
  }
  // Comms take turns at which worker their first socket goes to, so that one-socket comms
  // spread over every worker the engine has.
  const auto total = static_cast<uint32_t>(workers_.size());
  const uint32_t first = next_first_++ % total;
  out->clear();
  for (size_t s = 0; s < sockets.size(); ++s) {
    EngineWorker* worker = workers_[(first + s % static_cast<uint32_t>(threads)) % total].get();
    Status attached = worker->Attach(sockets[s]);
    if (!attached.ok()) {
      // Undo what was attached: none of these sockets is known to any worker afterwards.
      for (size_t k = 0; k < s; ++k) (*out)[k]->Detach({sockets[k]});
      out->clear();
      if (attached_comms_ == 0) workers_.clear();
      return attached;
    }
    out->push_back(worker);
  }
  ++attached_comms_;
  return Status::Ok();
}

}  // namespace devmem
