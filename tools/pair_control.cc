#include "tools/pair_control.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <thread>

namespace devmem::doctor {
namespace {

// Frames a peer may queue ahead of this side: the protocol never has more than two in flight.
constexpr size_t kMaxQueuedFrames = 4;
// How long the client waits before trying again a server that is not listening yet.
constexpr std::chrono::milliseconds kConnectRetry{200};

int MillisecondsLeft(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left.count(), 1000));
}

// The 16 address bytes of an IPv6 address or of an IPv4 address mapped into IPv6.
void MappedBytes(const SocketAddress& address, uint8_t out[16]) {
  memset(out, 0, 16);
  if (address.family() == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(address.get());
    out[10] = 0xff;
    out[11] = 0xff;
    memcpy(out + 12, &v4->sin_addr, 4);
  } else if (address.family() == AF_INET6) {
    memcpy(out, &reinterpret_cast<const sockaddr_in6*>(address.get())->sin6_addr, 16);
  }
}

std::string AddressList(const std::vector<SocketAddress>& addresses) {
  std::string out;
  for (const SocketAddress& a : addresses) {
    if (!out.empty()) out += ", ";
    out += HostText(a);
  }
  return out;
}

Result<UniqueFd> Listen(uint16_t port, int family) {
  UniqueFd fd(socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Status::Errno(errno, "control listener: socket");
  const int on = 1;
  const int off = 0;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  sockaddr_storage storage{};
  socklen_t length = 0;
  if (family == AF_INET6) {
    // One socket for both families: an IPv4 peer arrives as ::ffff:a.b.c.d.
    setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
    v6->sin6_family = AF_INET6;
    v6->sin6_addr = in6addr_any;
    v6->sin6_port = htons(port);
    length = sizeof(sockaddr_in6);
  } else {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
    v4->sin_family = AF_INET;
    v4->sin_addr.s_addr = htonl(INADDR_ANY);
    v4->sin_port = htons(port);
    length = sizeof(sockaddr_in);
  }
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&storage), length) != 0) {
    return Status::Errno(errno, "control listener: bind to port %u (choose another with --port)",
                         port);
  }
  if (listen(fd.get(), 8) != 0) return Status::Errno(errno, "control listener: listen");
  return fd;
}

}  // namespace

Result<std::vector<SocketAddress>> ResolveHost(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (rc != 0) {
    return Status::Error(ErrorKind::kInvalidArgument, "cannot resolve host %s: %s", host.c_str(),
                         gai_strerror(rc));
  }
  std::vector<SocketAddress> out;
  for (const addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    Result<SocketAddress> address = SocketAddress::FromSockaddr(ai->ai_addr, ai->ai_addrlen);
    if (address.ok() && !IsOneOf(address.value(), out)) out.push_back(address.value());
  }
  freeaddrinfo(found);
  if (out.empty()) {
    return Status::Error(ErrorKind::kInvalidArgument, "host %s has no IPv4 or IPv6 address",
                         host.c_str());
  }
  return out;
}

bool IsOneOf(const SocketAddress& address, const std::vector<SocketAddress>& allowed) {
  uint8_t mine[16];
  MappedBytes(address, mine);
  for (const SocketAddress& other : allowed) {
    uint8_t theirs[16];
    MappedBytes(other, theirs);
    if (memcmp(mine, theirs, 16) == 0) return true;
  }
  return false;
}

std::string HostText(const SocketAddress& address) {
  char text[INET6_ADDRSTRLEN] = "?";
  if (address.family() == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(address.get())->sin_addr, text,
              sizeof(text));
  } else if (address.family() == AF_INET6) {
    const in6_addr& v6 = reinterpret_cast<const sockaddr_in6*>(address.get())->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&v6)) {
      inet_ntop(AF_INET, &v6.s6_addr[12], text, sizeof(text));
    } else {
      inet_ntop(AF_INET6, &v6, text, sizeof(text));
    }
  }
  return text;
}

ControlChannel::ControlChannel(UniqueFd fd, SocketAddress peer)
    : fd_(std::move(fd)), peer_(std::move(peer)) {}

Status ControlChannel::Send(MessageType type, const std::vector<uint8_t>& payload,
                            Clock::time_point deadline) {
  const std::vector<uint8_t> frame = EncodeFrame(type, payload);
  size_t sent = 0;
  while (sent < frame.size()) {
    const ssize_t n = send(fd_.get(), frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      const Status failed = Status::PeerErrno(errno, "sending the %s message to %s",
                                              MessageTypeName(type), HostText(peer_).c_str());
      // A peer that refused or failed said why before it closed: its words, not EPIPE.
      const Status said = Poll();
      return said.ok() ? failed : said;
    }
    if (Clock::now() >= deadline) {
      return Status::Error(ErrorKind::kRemote, "sending the %s message to %s: deadline passed",
                           MessageTypeName(type), HostText(peer_).c_str());
    }
    pollfd pfd{fd_.get(), POLLOUT, 0};
    poll(&pfd, 1, MillisecondsLeft(deadline));
  }
  return Status::Ok();
}

Status ControlChannel::PeerFailure(const Frame& frame) const {
  Result<std::string> text = DecodeText(frame.payload);
  const std::string why = text.ok() ? text.value() : text.status().message();
  if (frame.type == MessageType::kReject) {
    return Status::Error(ErrorKind::kRemote, "%s refused this control connection: %s",
                         HostText(peer_).c_str(), why.c_str());
  }
  return Status::Error(ErrorKind::kRemote, "the peer %s failed: %s", HostText(peer_).c_str(),
                       why.c_str());
}

Status ControlChannel::Poll() {
  while (!closed_) {
    uint8_t buffer[4096];
    // Never more than the frame in progress needs: a header, then exactly its payload.
    // (A complete frame never stays in in_, so `want` is at least 1.)
    size_t want = kFrameHeaderBytes - std::min(in_.size(), kFrameHeaderBytes);
    if (want == 0) {
      Result<FrameHeader> header = DecodeFrameHeader(in_.data());
      if (!header.ok()) return header.status().WithContext("control connection");
      want = kFrameHeaderBytes + header->length - in_.size();
    }
    const ssize_t n = recv(fd_.get(), buffer, std::min(want, sizeof(buffer)), 0);
    if (n == 0) {
      closed_ = true;
      break;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return Status::PeerErrno(errno, "control connection to %s", HostText(peer_).c_str());
    }
    in_.insert(in_.end(), buffer, buffer + n);
    if (in_.size() < kFrameHeaderBytes) continue;
    Result<FrameHeader> header = DecodeFrameHeader(in_.data());
    if (!header.ok()) return header.status().WithContext("control connection");
    if (in_.size() < kFrameHeaderBytes + header->length) continue;
    if (frames_.size() >= kMaxQueuedFrames) {
      return Status::Error(ErrorKind::kRemote,
                           "control connection: %s sends more messages than "
                           "the protocol has",
                           HostText(peer_).c_str());
    }
    Frame frame{header->type, std::vector<uint8_t>(in_.begin() + kFrameHeaderBytes, in_.end())};
    in_.clear();
    if (frame.type == MessageType::kError || frame.type == MessageType::kReject) {
      return PeerFailure(frame);
    }
    frames_.push_back(std::move(frame));
  }
  if (closed_ && frames_.empty()) {
    return Status::Error(ErrorKind::kRemote,
                         "%s closed the control connection%s (it failed or was stopped: its "
                         "output says why)",
                         HostText(peer_).c_str(), in_.empty() ? "" : " in the middle of a message");
  }
  return Status::Ok();
}

Result<std::vector<uint8_t>> ControlChannel::Expect(MessageType type, const char* step,
                                                    Clock::time_point deadline) {
  while (frames_.empty()) {
    DEVMEM_RETURN_IF_ERROR(Poll());
    if (!frames_.empty()) break;
    if (Clock::now() >= deadline) {
      return Status::Error(ErrorKind::kRemote, "deadline passed while waiting for %s from %s", step,
                           HostText(peer_).c_str());
    }
    pollfd pfd{fd_.get(), POLLIN, 0};
    poll(&pfd, 1, MillisecondsLeft(deadline));
  }
  Frame frame = std::move(frames_.front());
  frames_.pop_front();
  if (frame.type != type) {
    return Status::Error(ErrorKind::kRemote,
                         "control connection: %s sent a %s message while this "
                         "side waited for %s",
                         HostText(peer_).c_str(), MessageTypeName(frame.type), step);
  }
  return std::move(frame.payload);
}

Result<ControlChannel> AcceptPeer(uint16_t port, const std::vector<SocketAddress>& allowed,
                                  const std::string& peer_name, Clock::time_point deadline,
                                  const std::function<void(const std::string&)>& on_refused) {
  bool any_v6 = false;
  for (const SocketAddress& a : allowed) any_v6 = any_v6 || a.family() == AF_INET6;
  Result<UniqueFd> listener = Listen(port, any_v6 ? AF_INET6 : AF_INET);
  if (!listener.ok()) return listener.status();
  for (;;) {
    sockaddr_storage from{};
    socklen_t from_length = sizeof(from);
    UniqueFd fd(accept4(listener->get(), reinterpret_cast<sockaddr*>(&from), &from_length,
                        SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd.valid()) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
        return Status::Errno(errno, "control listener: accept");
      }
      if (Clock::now() >= deadline) {
        return Status::Error(ErrorKind::kRemote,
                             "no control connection from %s on port %u before the deadline "
                             "(--timeout): start `devmem-doctor --pair` there",
                             peer_name.c_str(), port);
      }
      pollfd pfd{listener->get(), POLLIN, 0};
      poll(&pfd, 1, MillisecondsLeft(deadline));
      continue;
    }
    Result<SocketAddress> peer =
        SocketAddress::FromSockaddr(reinterpret_cast<const sockaddr*>(&from), from_length);
    if (peer.ok() && IsOneOf(peer.value(), allowed)) {
      return ControlChannel(std::move(fd), peer.value());
    }
    const std::string who = peer.ok() ? HostText(peer.value()) : std::string("an unknown address");
    const std::string why = Format("this devmem-doctor --serve serves only %s (%s), not %s",
                                   peer_name.c_str(), AddressList(allowed).c_str(), who.c_str());
    // Best effort (one non-blocking send into an empty socket buffer): the refusal is also
    // reported on this side.
    const std::vector<uint8_t> frame = EncodeFrame(MessageType::kReject, EncodeText(why));
    send(fd.get(), frame.data(), frame.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    shutdown(fd.get(), SHUT_WR);  // the refusal, then FIN, ahead of the reset closing sends
    on_refused(Format("refused a control connection from %s: %s", who.c_str(), why.c_str()));
  }
}

Result<ControlChannel> ConnectPeer(const std::vector<SocketAddress>& addresses, uint16_t port,
                                   Clock::time_point deadline) {
  Status last = Status::Error(ErrorKind::kRemote, "no address to connect to");
  for (;;) {
    for (SocketAddress address : addresses) {
      address.set_port(port);
      UniqueFd fd(socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      if (!fd.valid()) return Status::Errno(errno, "control connection: socket");
      int rc = connect(fd.get(), address.get(), address.length());
      if (rc != 0 && errno == EINPROGRESS) {
        pollfd pfd{fd.get(), POLLOUT, 0};
        do {
          rc = poll(&pfd, 1, MillisecondsLeft(deadline));
        } while (rc == 0 && Clock::now() < deadline);
        int err = ETIMEDOUT;
        socklen_t len = sizeof(err);
        if (rc > 0) getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
        errno = err;
        rc = err == 0 ? 0 : -1;
      }
      if (rc == 0) {
        return ControlChannel(std::move(fd), address);
      }
      last = Status::Errno(errno, "control connection to %s", address.ToString().c_str());
    }
    if (Clock::now() + kConnectRetry >= deadline) {
      return last.WithContext("no devmem-doctor --serve answered before the deadline (--timeout)");
    }
    std::this_thread::sleep_for(kConnectRetry);
  }
}

}  // namespace devmem::doctor
