#include "plugin/transport/zerocopy.h"

#include <linux/errqueue.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "plugin/transport/request.h"

namespace devmem {

bool ZeroCopyTracker::HasRoom() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return count_ < kMaxInFlight;
}

void ZeroCopyTracker::WillSend(Request* request) {
  std::lock_guard<std::mutex> lock(mutex_);
  // HasRoom() was checked by the only thread that sends on this socket.
  Entry& entry = entries_[(head_ + count_) % kMaxInFlight];
  entry.id = next_id_++;
  entry.request = request;
  entry.done = false;
  ++count_;
  ++sends_;
  request->zerocopy_pending.fetch_add(1, std::memory_order_relaxed);
}

void ZeroCopyTracker::SendFailed() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (count_ == 0) return;  // nothing recorded: a caller bug, but never an underflow
  // The newest entry: its id was never used, so no completion can have marked it done.
  Entry& entry = entries_[(head_ + count_ - 1) % kMaxInFlight];
  if (entry.done || entry.id != next_id_ - 1) return;
  entry.request->zerocopy_pending.fetch_sub(1, std::memory_order_relaxed);
  entry.request = nullptr;
  --count_;
  --sends_;
  --next_id_;
}

void ZeroCopyTracker::Complete(uint32_t lo, uint32_t hi, bool copied) {
  std::lock_guard<std::mutex> lock(mutex_);
  const uint32_t span = hi - lo;  // modulo 2^32: a range may wrap
  for (size_t k = 0; k < count_; ++k) {
    Entry& entry = entries_[(head_ + k) % kMaxInFlight];
    if (entry.done || entry.id - lo > span) continue;
    entry.done = true;
    ++completed_;
    if (copied) ++copied_;
    // Release: the request's owner reads zerocopy_pending == 0 and then reuses the buffer.
    entry.request->zerocopy_pending.fetch_sub(1, std::memory_order_release);
  }
  while (count_ > 0 && entries_[head_].done) {
    head_ = (head_ + 1) % kMaxInFlight;
    --count_;
  }
}

Status ZeroCopyTracker::Drain(int fd) {
  for (;;) {
    alignas(cmsghdr) char control[128];
    msghdr msg{};
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t n = recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Status::Ok();
      return Status::Errno(errno, "reading zero-copy completions (MSG_ERRQUEUE)");
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      const bool recverr = (c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR) ||
                           (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR);
      if (!recverr || c->cmsg_len < CMSG_LEN(sizeof(sock_extended_err))) continue;
      sock_extended_err err;
      memcpy(&err, CMSG_DATA(c), sizeof(err));
      if (err.ee_origin != SO_EE_ORIGIN_ZEROCOPY) {
        // Any other error-queue entry on a TCP socket is a real socket error.
        return Status::Error(ErrorKind::kSystem,
                             "unexpected error-queue entry on a data socket (origin %u, errno "
                             "%u)",
                             err.ee_origin, err.ee_errno);
      }
      Complete(err.ee_info, err.ee_data, (err.ee_code & SO_EE_CODE_ZEROCOPY_COPIED) != 0);
    }
  }
}

uint64_t ZeroCopyTracker::sends() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return sends_;
}
uint64_t ZeroCopyTracker::completed() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return completed_;
}
uint64_t ZeroCopyTracker::copied() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return copied_;
}
size_t ZeroCopyTracker::in_flight() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return count_;
}

}  // namespace devmem
