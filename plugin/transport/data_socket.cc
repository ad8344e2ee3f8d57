#include "plugin/transport/data_socket.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "plugin/devmem/devmem_tx.h"
#include "plugin/transport/request.h"

namespace devmem {

void CommHealth::Fail(const Status& status) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (failed_.load(std::memory_order_relaxed)) return;
  first_ = name_.empty() || status.message().rfind(name_, 0) == 0 ? status
                                                                   : status.WithContext(name_);
  failed_.store(true, std::memory_order_release);
}

Status CommHealth::error() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return first_;
}

SocketMover& SocketMover::ForThisThread() {
  thread_local SocketMover mover;
  return mover;
}

std::vector<char>& SocketMover::Discard() {
  if (discard_.empty()) discard_.resize(256 << 10);
  return discard_;
}

SocketMover::Outcome SocketMover::AdvanceFrags(DataSocket* socket, SocketTask* task, bool* moved) {
  const int fd = socket->fd.get();
  CommHealth* health = socket->health;
  DevmemShared* devmem = socket->devmem;
  const bool oldest =
      devmem == nullptr || task->seq == devmem->oldest_seq.load(std::memory_order_acquire);
  while (task->next_chunk < task->chunk_count) {
    const uint64_t chunk_start = task->next_chunk * task->chunk_bytes;
    const uint64_t chunk_len = std::min(task->chunk_bytes, task->size - chunk_start);
    const uint64_t at = chunk_start + task->done_in_chunk;
    segments_.clear();
    uint64_t consumed = 0;
    Result<FragReceiver::State> state = socket->receiver->Receive(
        fd, chunk_len - task->done_in_chunk, oldest,
        task->base != nullptr ? task->base + at : nullptr, &segments_, &consumed);
    socket->counters.syscalls += 1;
    if (!state.ok()) {
      health->Fail(state.status());
      return Outcome::kFailed;
    }
    if (consumed > 0) {
      *moved = true;
      socket->counters.bytes += consumed;
      if (task->arrival_consumer != nullptr) {
        // The consumer copies on this thread while the frags are still in cache; their tokens
        // go straight back.
        immediate_.Clear();
        immediate_tokens_.clear();
        immediate_.Append(segments_.data(), segments_.size(), at);
        for (const StreamSegment& s : segments_) {
          if (s.kind == StreamSegment::Kind::kRegion) immediate_tokens_.push_back(s.token);
        }
        Status done = task->base != nullptr ? task->arrival_consumer->ScatterOnArrival(
                                                  immediate_, task->base, task->size)
                                            : Status::Ok();
        Status released =
            socket->receiver->Release(fd, immediate_tokens_.data(), immediate_tokens_.size());
        if (!done.ok() || !released.ok()) {
          health->Fail(!done.ok() ? done : released);
          return Outcome::kFailed;
        }
        devmem->release_generation.fetch_add(1, std::memory_order_seq_cst);
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
      socket->stalled_generation.store(devmem->release_generation.load(std::memory_order_acquire),
                                       std::memory_order_relaxed);
      return Outcome::kStalled;
    }
    return Outcome::kBlocked;
  }
  return Outcome::kDone;
}

SocketMover::Outcome SocketMover::AdvanceBytes(DataSocket* socket, SocketTask* task,
                                              bool* moved) {
  if (socket->receiver != nullptr) return AdvanceFrags(socket, task, moved);
  const int fd = socket->fd.get();
  const Direction direction = socket->direction;
  CommHealth* health = socket->health;
  ZeroCopyTracker* zerocopy = socket->zerocopy.get();
  while (task->next_chunk < task->chunk_count) {
    const uint64_t chunk_start = task->next_chunk * task->chunk_bytes;
    const uint64_t chunk_len = std::min(task->chunk_bytes, task->size - chunk_start);
    const uint64_t remaining = chunk_len - task->done_in_chunk;
    ssize_t n;
    // Zero-copy only for what asked for it: devmem TX buffers, and every send under
    // NCCL_DEVMEM_EMULATE_TX; host buffers of a devmem TX comm go out by plain send.
    if (direction == Direction::kSend && zerocopy != nullptr && task->zerocopy) {
      // Reads the completions waiting on the error queue; false (comm failed) on an error.
      // Only a drain can lead to waiting for completions: the count before it is what the
      // decision to wait is based on. A completion counted after it, by this drain or by NCCL's
      // proxy thread draining in test(), means "look again" to the worker
      // (WorkerThread::Run), so none is lost between the drain and the poll.
      auto drain = [&] {
        socket->completions_seen = zerocopy->completed();
        Status drained = zerocopy->Drain(fd);
        if (!drained.ok()) health->Fail(drained);
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
          health->Fail(Status::Error(ErrorKind::kSystem,
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
        health->Fail(
            Status::Error(ErrorKind::kSystem, "%s", DescribeDevmemTxError(errno).c_str()));
        return Outcome::kFailed;
      }
    } else if (direction == Direction::kSend) {
      if (task->tx_dmabuf_id != 0) {
        // `base` is a dmabuf offset: never an address to send() from.
        health->Fail(Status::Error(ErrorKind::kInternal,
                                    "a devmem TX send reached a data socket without zero-copy "
                                    "tracking"));
        return Outcome::kFailed;
      }
      n = send(fd, task->base + chunk_start + task->done_in_chunk, remaining,
               MSG_DONTWAIT | MSG_NOSIGNAL);
    } else if (task->base != nullptr) {
      n = recv(fd, task->base + chunk_start + task->done_in_chunk, remaining, MSG_DONTWAIT);
    } else {
      std::vector<char>& discard = Discard();
      n = recv(fd, discard.data(), std::min<uint64_t>(remaining, discard.size()), MSG_DONTWAIT);
    }
    socket->counters.syscalls += 1;
    if (n > 0) {
      *moved = true;
      socket->counters.bytes += static_cast<uint64_t>(n);
      // One mover at a time per socket: a plain store, no locked add on the hot path.
      if (direction == Direction::kSend) {
        socket->moved_bytes += static_cast<uint64_t>(n);
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
      health->Fail(Status::Error(
          ErrorKind::kRemote,
          "peer closed a data connection with %llu bytes of a message "
          "still to arrive",
          static_cast<unsigned long long>(task->size - chunk_start - task->done_in_chunk)));
    } else {
      health->Fail(Status::PeerErrno(errno, "%s on a data connection",
                                  direction == Direction::kSend ? "send" : "recv"));
    }
    return Outcome::kFailed;
  }
  return Outcome::kDone;
}

}  // namespace devmem
