#include "plugin/transport/listener_admission.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <utility>

#include "plugin/core/log.h"
#include "plugin/core/status.h"

namespace devmem {
namespace {

using std::chrono::milliseconds;

// A connection that sent nothing reaches accept() only after this (one SYN-ACK retransmit, about
// 1 s): churn and idle floods wait in the kernel, costing no descriptor. Longer would only move
// more of a flood into the SYN queue, where syncookies take over and nothing gets logged.
constexpr int kDeferAcceptSeconds = 1;
constexpr size_t kMinUnidentified = 16;
constexpr size_t kMaxUnidentified = 1024;
// New sockets per Poll, at most half the (current) cap: a socket accepted in one batch is read
// again (epoll) before newer arrivals could have pushed it out, and one call stays short.
constexpr size_t kAcceptBatch = 128;
constexpr size_t kShedOnExhaustion = 8;
constexpr milliseconds kExhaustedPause{100};
constexpr std::chrono::seconds kCapRestoreAfter{10};
constexpr int kEventsPerWait = 64;

std::string ErrnoText(int err) {
  char text[128];
  return strerror_r(err, text, sizeof(text));
}

long long Millis(Clock::duration duration) {
  return static_cast<long long>(std::chrono::duration_cast<milliseconds>(duration).count());
}

// accept4 reports some errors of the connection it was about to return; the next one is fine.
bool IsConnectionError(int err) {
  switch (err) {
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
    case EPERM:  // a firewall rule refused it
      return true;
    default:
      return false;
  }
}

}  // namespace

size_t Admission::MaxUnidentifiedFor(rlim_t soft_nofile) {
  if (soft_nofile == RLIM_INFINITY) return kMaxUnidentified;
  return static_cast<size_t>(
      std::clamp<rlim_t>(soft_nofile / 4, kMinUnidentified, kMaxUnidentified));
}

size_t Admission::MaxUnidentifiedForThisProcess() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return MaxUnidentifiedFor(1024);  // the usual
  return MaxUnidentifiedFor(limit.rlim_cur);
}

std::unique_ptr<Admission> Admission::Create(int listen_fd, uint64_t nonce, Limits limits,
                                             DropLog* log) {
  int defer = kDeferAcceptSeconds;
  if (setsockopt(listen_fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof(defer)) != 0) {
    // Only an optimisation: every connection then reaches accept() and the caps below apply.
    log::Info(log::kNet, "TCP_DEFER_ACCEPT on the listener: %s; idle connections are accepted",
              ErrnoText(errno).c_str());
  }
  limits.max_unidentified = std::max<size_t>(1, limits.max_unidentified);
  return std::unique_ptr<Admission>(new Admission(listen_fd, nonce, limits, log));
}

Admission::Admission(int listen_fd, uint64_t nonce, Limits limits, DropLog* log)
    : listen_fd_(listen_fd),
      nonce_(nonce),
      limits_(limits),
      log_(log),
      cap_(limits.max_unidentified),
      cap_now_(limits.max_unidentified) {}

void Admission::Poll(std::vector<IdentifiedSocket>* identified) {
  const Clock::time_point now = Clock::now();
  log_->Tick(now);
  if (cap_now_ < cap_ && now >= cap_restore_at_) cap_now_ = cap_;
  // Sockets already waiting first: one whose hello arrived is identified before new arrivals
  // could evict it.
  ReadReady(identified, now);
  AcceptWaiting(identified, now);
  Expire(now);
}

void Admission::ReadReady(std::vector<IdentifiedSocket>* identified, Clock::time_point now) {
  epoll_event events[kEventsPerWait];
  if (!epoll_.valid()) return;
  for (size_t seen = 0; !waiting_.empty() && seen <= cap_; seen += kEventsPerWait) {
    const int n = epoll_wait(epoll_.get(), events, kEventsPerWait, 0);
    if (n <= 0) return;  // nothing ready, or EINTR: the next Poll reads it
    for (int i = 0; i < n; ++i) {
      auto found = by_id_.find(events[i].data.u64);
      if (found != by_id_.end()) Read(found->second, identified, now);
    }
    if (n < kEventsPerWait) return;
  }
}

void Admission::AcceptWaiting(std::vector<IdentifiedSocket>* identified, Clock::time_point now) {
  if (now < accept_paused_until_) return;
  const size_t batch = std::min(kAcceptBatch, std::max<size_t>(1, cap_now_ / 2));
  size_t accepted = 0;
  for (size_t attempt = 0; accepted < batch && attempt < 2 * batch; ++attempt) {
    sockaddr_storage storage{};
    socklen_t length = sizeof(storage);
    UniqueFd fd(accept4(listen_fd_, reinterpret_cast<sockaddr*>(&storage), &length,
                        SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd.valid()) {
      const int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      if (IsConnectionError(err)) continue;
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        if (OnExhausted(err, now)) continue;
        return;
      }
      accept_paused_until_ = now + kExhaustedPause;
      log_->Problem(Format("accept: %s (errno %d); pausing accepts for %lld ms",
                           ErrnoText(err).c_str(), err, Millis(kExhaustedPause)),
                    now);
      return;
    }
    ++accepted;
    Result<SocketAddress> peer =
        SocketAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&storage), length);
    Admit(std::move(fd), peer.ok() ? peer.value() : SocketAddress(), identified, now);
  }
}

bool Admission::OnExhausted(int err, Clock::time_point now) {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  const auto soft = static_cast<unsigned long long>(limit.rlim_cur);
  if (waiting_.empty()) {
    accept_paused_until_ = now + kExhaustedPause;
    log_->Problem(Format("accept: %s, and no unidentified socket to close; pausing accepts for "
                         "%lld ms (soft RLIMIT_NOFILE is %llu: raise it if this persists)",
                         ErrnoText(err).c_str(), Millis(kExhaustedPause), soft),
                  now);
    return false;
  }
  const size_t shed = std::min(kShedOnExhaustion, waiting_.size());
  // Hold no more than what fitted, so the descriptors freed now stay free for the comms.
  cap_now_ = std::max<size_t>(1, waiting_.size() - shed);
  cap_restore_at_ = now + kCapRestoreAfter;
  log_->Problem(Format("accept: %s (soft RLIMIT_NOFILE is %llu); closed the %zu stalest "
                       "unidentified sockets and hold at most %zu for the next %lld s",
                       ErrnoText(err).c_str(), soft, shed, cap_now_,
                       static_cast<long long>(kCapRestoreAfter.count())),
                now);
  for (size_t i = 0; i < shed; ++i) {
    log_->Counted(DropReason::kShed, waiting_.front().peer, now);
    Forget(waiting_.begin());
  }
  return true;
}

void Admission::Admit(UniqueFd fd, const SocketAddress& peer,
                      std::vector<IdentifiedSocket>* identified, Clock::time_point now) {
  Waiting& fresh = waiting_.emplace_back();
  const uint64_t id = fresh.id = next_id_++;
  fresh.fd = std::move(fd);
  fresh.peer = peer;
  fresh.accepted = fresh.progressed = now;
  by_id_.emplace(id, std::prev(waiting_.end()));
  // Most peers' hellos are already here: identify them before anything else happens.
  Read(std::prev(waiting_.end()), identified, now);
  auto found = by_id_.find(id);
  if (found == by_id_.end()) return;  // identified or dropped
  Waiting& socket = *found->second;
  if (!epoll_.valid()) {
    // Only now: most listeners never hold a socket that has to wait, so most never need one.
    epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_.valid()) {
      const int err = errno;
      return Drop(found->second, DropReason::kSocketError,
                  Format("epoll_create1 to wait for its hello: %s", ErrnoText(err).c_str()), now);
    }
  }
  epoll_event event{};
  event.events = EPOLLIN | EPOLLRDHUP;
  event.data.u64 = id;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, socket.fd.get(), &event) != 0) {
    const int err = errno;
    return Drop(found->second, DropReason::kSocketError,
                Format("epoll_ctl: %s", ErrnoText(err).c_str()), now);
  }
  socket.registered = true;
  if (waiting_.size() > cap_now_) {
    // The stalest is never the newcomer: it sits at the back and the cap is at least 1.
    const Waiting& stalest = waiting_.front();
    Drop(
        waiting_.begin(), DropReason::kEvicted,
        Format("evicted by newer connections at the cap of %zu unidentified sockets (%zu of %zu "
               "hello bytes, nothing new for %lld ms)",
               cap_now_, stalest.received, sizeof(stalest.hello), Millis(now - stalest.progressed)),
        now);
  }
}

void Admission::Read(WaitingList::iterator it, std::vector<IdentifiedSocket>* identified,
                     Clock::time_point now) {
  Waiting& socket = *it;
  const size_t size = sizeof(socket.hello);
  const ssize_t n =
      recv(socket.fd.get(), socket.hello + socket.received, size - socket.received, MSG_DONTWAIT);
  if (n == 0) {
    return Drop(it, DropReason::kClosedEarly,
                Format("closed after %zu of %zu hello bytes", socket.received, size), now);
  }
  if (n < 0) {
    const int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) return;
    return Drop(it, DropReason::kSocketError, "recv: " + ErrnoText(err), now);
  }
  socket.received += static_cast<size_t>(n);
  socket.progressed = now;
  waiting_.splice(waiting_.end(), waiting_, it);  // now the freshest; `it` stays valid
  Status prefix = wire::Hello::CheckPrefix(socket.hello, socket.received);
  if (!prefix.ok()) return Drop(it, DropReason::kInvalidHello, prefix.message(), now);
  if (socket.received >= wire::Hello::kNonceOffset + sizeof(uint64_t)) {
    const uint64_t nonce = wire::GetU64(socket.hello + wire::Hello::kNonceOffset);
    if (nonce != nonce_) {
      if (socket.hello[wire::Hello::kRoleOffset] ==
          static_cast<uint8_t>(wire::SocketRole::kControl)) {
        // Tell a real but stale peer why, so its connect fails now instead of timing out.
        wire::HelloReply reply;
        reply.code = wire::HelloReply::kRejected;
        reply.nonce = nonce;
        uint8_t bytes[wire::HelloReply::kSize];
        reply.Encode(bytes);
        [[maybe_unused]] ssize_t ignored =
            send(socket.fd.get(), bytes, sizeof(bytes), MSG_DONTWAIT | MSG_NOSIGNAL);
      }
      return Drop(it, DropReason::kWrongNonce,
                  "hello for another listener (a stale or foreign handle)", now);
    }
  }
  if (socket.received < size) return;
  Result<wire::Hello> hello = wire::Hello::Decode(socket.hello);
  if (!hello.ok()) return Drop(it, DropReason::kInvalidHello, hello.status().message(), now);
  if (socket.registered) epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, socket.fd.get(), nullptr);
  socket.registered = false;
  identified->push_back(
      IdentifiedSocket{std::move(socket.fd), socket.peer, hello.value(), socket.accepted});
  Forget(it);
}

void Admission::Expire(Clock::time_point now) {
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    auto next = std::next(it);
    if (now - it->accepted > limits_.handshake_timeout) {
      Drop(it, DropReason::kTimedOut,
           Format("sent %zu of %zu hello bytes within %lld ms", it->received, sizeof(it->hello),
                  static_cast<long long>(limits_.handshake_timeout.count())),
           now);
    }
    it = next;
  }
}

void Admission::Forget(WaitingList::iterator it) {
  // Explicitly: a forked child holding a copy of the fd would keep the registration alive.
  if (it->registered) epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->fd.get(), nullptr);
  by_id_.erase(it->id);
  waiting_.erase(it);
}

void Admission::Drop(WaitingList::iterator it, DropReason reason, const std::string& why,
                     Clock::time_point now) {
  log_->Dropped(reason, it->peer, why, now);
  Forget(it);
}

}  // namespace devmem
