// The sockets of the pair check's control connection: the server's listener, which serves only
// the peer the operator named, the client's connect, and a channel of frames
// (tools/pair_protocol.h) in which every wait has a deadline.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "plugin/core/socket_address.h"
#include "plugin/core/status.h"
#include "plugin/core/unique_fd.h"
#include "tools/pair_protocol.h"

namespace devmem::doctor {

using Clock = std::chrono::steady_clock;

// The addresses `host` resolves to (an IP literal is itself); an error when it resolves to none.
Result<std::vector<SocketAddress>> ResolveHost(const std::string& host);
// Whether `address` is one of `allowed`, by IP (ports ignored; an IPv4-mapped IPv6 address is
// its IPv4 address).
bool IsOneOf(const SocketAddress& address, const std::vector<SocketAddress>& allowed);
// "198.18.0.1" or "fd00::1": an address without its port, for messages.
std::string HostText(const SocketAddress& address);

struct Frame {
  MessageType type;
  std::vector<uint8_t> payload;
};

class ControlChannel {
 public:
  ControlChannel(UniqueFd fd, SocketAddress peer);
  ControlChannel(ControlChannel&&) = default;
  ControlChannel& operator=(ControlChannel&&) = default;

  const SocketAddress& peer() const { return peer_; }
  Status Send(MessageType type, const std::vector<uint8_t>& payload, Clock::time_point deadline);
  // Reads whatever has arrived, without waiting, and queues the complete frames. An error as
  // soon as the bytes cannot be a valid frame, when the peer sent an Error or Reject (its text),
  // or when it closed the connection with nothing queued.
  Status Poll();
  // The next frame, which must be of `type`; `step` names what this side waits for. Waits until
  // `deadline`, then fails naming the step.
  Result<std::vector<uint8_t>> Expect(MessageType type, const char* step,
                                      Clock::time_point deadline);

 private:
  // A queued Error or Reject becomes this side's error.
  Status PeerFailure(const Frame& frame) const;
  UniqueFd fd_;
  SocketAddress peer_;
  std::vector<uint8_t> in_;  // bytes of the frame being received
  std::deque<Frame> frames_;
  bool closed_ = false;  // the peer closed its end
};

// --serve: listens on `port` and returns the first control connection from one of `allowed`.
// Any other caller is sent a Reject naming `peer_name` and closed, and `on_refused` is told why;
// at the deadline, an error.
Result<ControlChannel> AcceptPeer(uint16_t port, const std::vector<SocketAddress>& allowed,
                                  const std::string& peer_name, Clock::time_point deadline,
                                  const std::function<void(const std::string&)>& on_refused);
// --pair: connects to `port` at one of `addresses`, retrying while nothing listens there yet
// (the server may start second) until the deadline.
Result<ControlChannel> ConnectPeer(const std::vector<SocketAddress>& addresses, uint16_t port,
                                   Clock::time_point deadline);

}  // namespace devmem::doctor
