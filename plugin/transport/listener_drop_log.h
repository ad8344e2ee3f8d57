// What one listener tells the operator about the connections it drops before they identified
// themselves. Anyone who can reach the port can make thousands of those a second, so each
// listener writes a few detailed lines per interval and then one summary per interval with the
// counts by reason and the busiest sources ("dropped 2,995 unidentified connections in the last
// 10.0 s from 127.0.0.1 (2,995)"), instead of one WARN per stray socket.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>

#include "plugin/core/socket_address.h"

namespace devmem {

using Clock = std::chrono::steady_clock;

enum class DropReason : uint8_t {
  kClosedEarly,   // the peer closed before a full hello
  kInvalidHello,  // bytes that are not a hello, or a hello with impossible fields
  kWrongNonce,    // a hello for another listener (a stale handle, or a guess)
  kTimedOut,      // no full hello within the handshake timeout
  kEvicted,       // pushed out by newer sockets at the cap on unidentified sockets
  kShed,          // closed to free a file descriptor when accept ran out of them
  kSocketError,   // recv failed (reset, ...)
  kInconsistent,  // identified, but does not fit the rest of its connection
};
inline constexpr size_t kDropReasonCount = 8;

// The address part of a peer ("127.0.0.1", "::1"): drops are counted per host, not per port.
std::string HostOf(const SocketAddress& address);

// "2995" -> "2,995".
std::string WithThousands(uint64_t value);

class DropLog final {
 public:
  using Sink = std::function<void(const std::string& line)>;
  struct Policy {
    // Detailed lines (drops and listener problems together) per interval before the rest are
    // only counted; the interval is also how often a summary is written during a flood.
    int lines_per_interval = 5;
    Clock::duration interval = std::chrono::seconds(10);
    // Distinct hosts counted per interval; more are folded into "other hosts".
    size_t max_hosts = 256;
  };

  DropLog(std::string listener, Sink sink, Policy policy);
  DropLog(std::string listener, Sink sink) : DropLog(std::move(listener), std::move(sink), {}) {}

  // One dropped connection: a detailed line while this interval's budget lasts, counted always.
  void Dropped(DropReason reason, const SocketAddress& peer, const std::string& why,
               Clock::time_point now);
  // A drop that a Problem line already explains (sockets shed for descriptors): counted for the
  // summary, no line of its own.
  void Counted(DropReason reason, const SocketAddress& peer, Clock::time_point now);
  // A problem of the listener itself (accept out of file descriptors, ...), same budget.
  void Problem(const std::string& what, Clock::time_point now);
  // Writes the summary once the interval that began with the first counted event has run out.
  void Tick(Clock::time_point now);
  // Writes the summary of whatever was not logged individually (the listener is closing).
  void Flush(Clock::time_point now);

  uint64_t dropped_total() const { return dropped_total_; }

 private:
  // Starts an interval if none runs; false once its detailed-line budget is spent.
  bool TakeLine(Clock::time_point now);
  void CountHost(const SocketAddress& peer);
  void Summarise(Clock::time_point now);

  std::string listener_;
  Sink sink_;
  Policy policy_;
  uint64_t dropped_total_ = 0;

  // The current interval.
  std::optional<Clock::time_point> started_;
  int lines_ = 0;
  uint64_t dropped_ = 0;
  uint64_t unlogged_ = 0;  // drops and problems counted but not written individually
  std::array<uint64_t, kDropReasonCount> by_reason_ = {};
  std::unordered_map<std::string, uint64_t> by_host_;
  uint64_t other_hosts_ = 0;
  uint64_t problems_unlogged_ = 0;
  std::string last_problem_;
};

}  // namespace devmem
