#include "plugin/transport/data_socket.h"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "plugin/devmem/devmem_tx.h"
#include "plugin/transport/request.h"

namespace devmem {

namespace {
constexpr uint64_t kNotAwaiting = ~uint64_t{0};
}  // namespace

void CommHealth::Fail(const Status& status) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (failed_.load(std::memory_order_relaxed)) return;
  first_ = status;
  failed_.store(true, std::memory_order_release);
}

Status CommHealth::error() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return first_;
}

SocketMover::SocketMover(Direction direction, CommHealth* health, DevmemShared* devmem,
                         WorkerCounters* counters)
    : direction_(direction), health_(health), devmem_(devmem), counters_(counters) {
  segments_.reserve(80);
  if (direction_ == Direction::kRecv) discard_.resize(256 << 10);
}

WorkerThread::WorkerThread(Direction direction, std::vector<DataSocket*> sockets,
                           CommHealth* health, DevmemShared* devmem)
    : direction_(direction),
      sockets_(std::move(sockets)),
      health_(health),
      devmem_(devmem),
      mover_(direction, health, devmem, &counters_) {}

WorkerThread::~WorkerThread() {
  if (!thread_.joinable()) return;
  stop_.store(true, std::memory_order_seq_cst);
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t ignored = write(wake_fd_.get(), &one, sizeof(one));
  thread_.join();
}

Status WorkerThread::Start(const std::string& name) {
  wake_fd_.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake_fd_.valid()) return Status::Errno(errno, "eventfd for worker %s", name.c_str());
  try {
    thread_ = std::thread([this] { Run(); });
  } catch (const std::system_error& e) {
    return Status::Error(ErrorKind::kSystem, "starting worker thread %s: %s", name.c_str(),
                         e.what());
  }
  pthread_setname_np(thread_.native_handle(), name.substr(0, 15).c_str());
  return Status::Ok();
}

void WorkerThread::Wake() {
  if (sleeping_.load(std::memory_order_seq_cst) && sleeping_.exchange(false)) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t ignored = write(wake_fd_.get(), &one, sizeof(one));
  }
}

SocketMover::Outcome SocketMover::AdvanceFrags(DataSocket* socket, SocketTask* task, bool* moved) {
  const int fd = socket->fd.get();
  const bool oldest =
      devmem_ == nullptr || task->seq == devmem_->oldest_seq.load(std::memory_order_acquire);
  while (task->next_chunk < task->chunk_count) {
    const uint64_t chunk_start = task->next_chunk * task->chunk_bytes;
    const uint64_t chunk_len = std::min(task->chunk_bytes, task->size - chunk_start);
    const uint64_t at = chunk_start + task->done_in_chunk;
    segments_.clear();
    uint64_t consumed = 0;
    Result<FragReceiver::State> state = socket->receiver->Receive(
        fd, chunk_len - task->done_in_chunk, oldest,
        task->base != nullptr ? task->base + at : nullptr, &segments_, &consumed);
    WorkerCounters::Add(counters_->syscalls, 1);
    if (!state.ok()) {
      health_->Fail(state.status());
      return Outcome::kFailed;
    }
    if (consumed > 0) {
      *moved = true;
      WorkerCounters::Add(counters_->bytes, consumed);
      if (task->scatter_now) {
        // Host destination: this thread is the consumer. Copy while the frags are still in
        // cache, then hand the tokens straight back.
        immediate_.Clear();
        immediate_tokens_.clear();
        immediate_.Append(segments_.data(), segments_.size(), at);
        for (const StreamSegment& s : segments_) {
          if (s.kind == StreamSegment::Kind::kRegion) immediate_tokens_.push_back(s.token);
        }
        Status done = task->base != nullptr
                          ? HostScatter(immediate_, socket->receiver->region_base(),
                                        socket->receiver->region_bytes(), task->base, task->size)
                          : Status::Ok();
        Status released =
            socket->receiver->Release(fd, immediate_tokens_.data(), immediate_tokens_.size());
        if (!done.ok() || !released.ok()) {
          health_->Fail(!done.ok() ? done : released);
          return Outcome::kFailed;
        }
        devmem_->release_generation.fetch_add(1, std::memory_order_seq_cst);
      } else {
        FragResult* result = task->result;
        result->used = true;
        result->table.Append(segments_.data(), segments_.size(), at);
        for (const StreamSegment& s : segments_) {
          if (s.kind == StreamSegment::Kind::kRegion) result->tokens.push_back(s.token);
        }
      }
      task->done_in_chunk += consumed;
      if (task->done_in_chunk == chunk_len) {
        task->next_chunk += task->stride;
        task->done_in_chunk = 0;
      }
      continue;
    }
    if (state.value() == FragReceiver::State::kStalled) {
      socket->stalled_generation.store(devmem_->release_generation.load(std::memory_order_acquire),
                                       std::memory_order_relaxed);
      return Outcome::kStalled;
    }
    return Outcome::kBlocked;
  }
  return Outcome::kDone;
}

SocketMover::Outcome SocketMover::Advance(DataSocket* socket, SocketTask* task, bool* moved) {
  if (socket->receiver != nullptr) return AdvanceFrags(socket, task, moved);
  const int fd = socket->fd.get();
  ZeroCopyTracker* zerocopy = socket->zerocopy.get();
  while (task->next_chunk < task->chunk_count) {
    const uint64_t chunk_start = task->next_chunk * task->chunk_bytes;
    const uint64_t chunk_len = std::min(task->chunk_bytes, task->size - chunk_start);
    const uint64_t remaining = chunk_len - task->done_in_chunk;
    ssize_t n;
    // Zero-copy only for what asked for it: devmem TX buffers, and every send under
    // NCCL_DEVMEM_EMULATE_TX; host buffers of a devmem TX comm go out by plain send.
    if (direction_ == Direction::kSend && zerocopy != nullptr && task->zerocopy) {
      // Reads the completions waiting on the error queue; false (comm failed) on an error.
      // Only a drain can lead to waiting for completions: the count before it is what the
      // decision to wait is based on. A completion counted after it, by this drain or by NCCL's
      // proxy thread draining in test(), means "look again" to the worker
      // (WorkerThread::Run), so none is lost between the drain and the poll.
      auto drain = [&] {
        socket->completions_seen = zerocopy->completed();
        Status drained = zerocopy->Drain(fd);
        if (!drained.ok()) health_->Fail(drained);
        return drained.ok();
      };
      if (!zerocopy->HasRoom()) {
        if (!drain()) return Outcome::kFailed;
        if (!zerocopy->HasRoom()) return Outcome::kAwaitCompletions;
      }
      const bool devmem_tx = task->tx_dmabuf_id != 0;
      zerocopy->WillSend(task->request);
      if (devmem_tx) {
        const auto offset = reinterpret_cast<uintptr_t>(task->base) + chunk_start;
        n = SendDevmemTx(fd, task->tx_dmabuf_id, offset + task->done_in_chunk, remaining);
      } else {
        n = send(fd, task->base + chunk_start + task->done_in_chunk, remaining,
                 MSG_DONTWAIT | MSG_NOSIGNAL | MSG_ZEROCOPY);
      }
      const int send_errno = errno;
      if (n <= 0) zerocopy->SendFailed();
      errno = send_errno;
      if (n < 0 && errno == ENOBUFS) {
        // optmem is full of notifications: completions free it.
        if (const size_t before = zerocopy->in_flight(); before > 0) {
          if (!drain()) return Outcome::kFailed;
          // Usually the notifications are queued already and the drain just freed optmem: try
          // again now. Only when nothing completed is there something to wait for (its
          // POLLERR comes with the next notification).
          if (zerocopy->in_flight() < before) continue;
          return Outcome::kAwaitCompletions;
        }
        if (devmem_tx) {
          // Device memory cannot be copied by send(): with nothing in flight no completion
          // will free optmem, so waiting would hang.
          health_->Fail(Status::Error(ErrorKind::kSystem,
                                      "devmem TX sendmsg: ENOBUFS with no zero-copy send in "
                                      "flight: net.core.optmem_max is too small for even one "
                                      "notification"));
          return Outcome::kFailed;
        }
        // With none in flight nothing would free optmem, so this one call copies instead of
        // failing or spinning.
        n = send(fd, task->base + chunk_start + task->done_in_chunk, remaining,
                 MSG_DONTWAIT | MSG_NOSIGNAL);
      } else if (n < 0 && devmem_tx && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        health_->Fail(
            Status::Error(ErrorKind::kSystem, "%s", DescribeDevmemTxError(errno).c_str()));
        return Outcome::kFailed;
      }
    } else if (direction_ == Direction::kSend) {
      if (task->tx_dmabuf_id != 0) {
        // `base` is a dmabuf offset: never an address to send() from.
        health_->Fail(Status::Error(ErrorKind::kInternal,
                                    "a devmem TX send reached a data socket without zero-copy "
                                    "tracking"));
        return Outcome::kFailed;
      }
      n = send(fd, task->base + chunk_start + task->done_in_chunk, remaining,
               MSG_DONTWAIT | MSG_NOSIGNAL);
    } else if (task->base != nullptr) {
      n = recv(fd, task->base + chunk_start + task->done_in_chunk, remaining, MSG_DONTWAIT);
    } else {
      n = recv(fd, discard_.data(), std::min<uint64_t>(remaining, discard_.size()), MSG_DONTWAIT);
    }
    WorkerCounters::Add(counters_->syscalls, 1);
    if (n > 0) {
      *moved = true;
      WorkerCounters::Add(counters_->bytes, static_cast<uint64_t>(n));
      // One mover at a time per socket: a plain store, no locked add on the hot path.
      if (direction_ == Direction::kSend) {
        WorkerCounters::Add(socket->moved_bytes, static_cast<uint64_t>(n));
      }
      task->done_in_chunk += static_cast<uint64_t>(n);
      if (task->done_in_chunk == chunk_len) {
        task->next_chunk += task->stride;
        task->done_in_chunk = 0;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Outcome::kBlocked;
    if (n == 0) {
      health_->Fail(Status::Error(
          ErrorKind::kRemote,
          "peer closed a data connection with %llu bytes of a message "
          "still to arrive",
          static_cast<unsigned long long>(task->size - chunk_start - task->done_in_chunk)));
    } else {
      health_->Fail(Status::Errno(errno, "%s on a data connection",
                                  direction_ == Direction::kSend ? "send" : "recv"));
    }
    return Outcome::kFailed;
  }
  return Outcome::kDone;
}

void WorkerThread::Run() {
  std::vector<pollfd> waits;
  std::vector<bool> waiting(sockets_.size());
  // Sockets waiting for zero-copy completions, and how many had completed then: NCCL's proxy
  // thread drains the error queue in test() too, and may consume the POLLERR this worker
  // would sleep on (it then wakes us, and the count tells us before we sleep).
  std::vector<uint64_t> awaited(sockets_.size(), kNotAwaiting);
  waits.reserve(sockets_.size() + 1);
  const short event = direction_ == Direction::kSend ? POLLOUT : POLLIN;
  while (!stop_.load(std::memory_order_acquire)) {
    bool moved = false;
    waits.clear();
    for (size_t i = 0; i < sockets_.size(); ++i) {
      DataSocket* socket = sockets_[i];
      waiting[i] = false;
      if (socket->broken) continue;
      while (SocketTask* task = socket->tasks.Front()) {
        Outcome outcome = mover_.Advance(socket, task, &moved);
        if (outcome == Outcome::kDone) {
          Request* request = task->request;
          socket->tasks.Pop();
          request->pending_tasks.fetch_sub(1, std::memory_order_release);
          moved = true;
          continue;
        }
        if (outcome == Outcome::kFailed) {
          socket->broken = true;
          break;
        }
        if (outcome == Outcome::kStalled) {
          // No free page: wait for the consumer to return tokens, not for the socket.
          waiting[i] = true;
          break;
        }
        if (outcome == Outcome::kAwaitCompletions) {
          awaited[i] = socket->completions_seen;
          // Only the error queue: poll reports POLLERR whatever the events asked.
          waits.push_back({socket->fd.get(), 0, 0});
          waiting[i] = true;
          break;
        }
        waits.push_back({socket->fd.get(), event, 0});
        waiting[i] = true;
        break;
      }
    }
    if (moved) continue;

    // Nothing moved. Announce that we sleep, then look once more for work pushed meanwhile:
    // with the producer's seq_cst push and Wake() check, one of the two sides sees the other.
    sleeping_.store(true, std::memory_order_seq_cst);
    bool fresh_work = false;
    for (size_t i = 0; i < sockets_.size(); ++i) {
      if (!waiting[i] && !sockets_[i]->broken && sockets_[i]->tasks.Front() != nullptr) {
        fresh_work = true;
      }
      if (awaited[i] != kNotAwaiting) {
        if (sockets_[i]->zerocopy->completed() != awaited[i]) fresh_work = true;
        awaited[i] = kNotAwaiting;
      }
      // Tokens returned since this socket stalled: its pages may be free again.
      if (devmem_ != nullptr && sockets_[i]->receiver != nullptr) {
        const uint64_t released = devmem_->release_generation.load(std::memory_order_seq_cst);
        if (sockets_[i]->stalled_generation.exchange(released, std::memory_order_relaxed) !=
            released) {
          fresh_work = true;
        }
      }
    }
    if (fresh_work || stop_.load(std::memory_order_seq_cst)) {
      sleeping_.store(false, std::memory_order_relaxed);
      continue;
    }
    waits.push_back({wake_fd_.get(), POLLIN, 0});
    WorkerCounters::Add(counters_.polls, 1);
    int ready = poll(waits.data(), waits.size(), -1);
    sleeping_.store(false, std::memory_order_relaxed);
    if (ready < 0 && errno != EINTR) {
      health_->Fail(Status::Errno(errno, "poll in a data worker"));
      return;
    }
    if (waits.back().revents & POLLIN) {
      uint64_t drained;
      [[maybe_unused]] ssize_t ignored = read(wake_fd_.get(), &drained, sizeof(drained));
    }
  }
}

}  // namespace devmem
