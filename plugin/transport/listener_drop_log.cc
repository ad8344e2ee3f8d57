#include "plugin/transport/listener_drop_log.h"

#include <arpa/inet.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "plugin/core/status.h"

namespace devmem {
namespace {

// Most hosts a summary names; the rest are summed.
constexpr size_t kHostsNamed = 3;

// "850 ms", "2.5 s".
std::string Span(Clock::duration duration) {
  const double seconds = std::chrono::duration<double>(duration).count();
  if (seconds < 1) return Format("%d ms", static_cast<int>(seconds * 1000));
  return Format("%.1f s", seconds);
}

const char* Describe(DropReason reason) {
  switch (reason) {
    case DropReason::kClosedEarly:
      return "closed before a full hello";
    case DropReason::kInvalidHello:
      return "sent an invalid hello";
    case DropReason::kWrongNonce:
      return "presented another listener's nonce";
    case DropReason::kTimedOut:
      return "sent no full hello in time";
    case DropReason::kEvicted:
      return "evicted at the cap on unidentified sockets";
    case DropReason::kShed:
      return "closed to free file descriptors";
    case DropReason::kSocketError:
      return "failed with a socket error";
    case DropReason::kInconsistent:
      return "did not fit their connection";
  }
  return "dropped";
}

}  // namespace

std::string HostOf(const SocketAddress& address) {
  char text[INET6_ADDRSTRLEN] = "<unknown>";
  if (address.family() == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(address.get())->sin_addr, text,
              sizeof(text));
  } else if (address.family() == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(address.get())->sin6_addr, text,
              sizeof(text));
  }
  return text;
}

std::string WithThousands(uint64_t value) {
  std::string digits = std::to_string(value);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

DropLog::DropLog(std::string listener, Sink sink, Policy policy)
    : listener_(std::move(listener)), sink_(std::move(sink)), policy_(policy) {}

bool DropLog::TakeLine(Clock::time_point now) {
  if (!started_) started_ = now;
  if (lines_ >= policy_.lines_per_interval) return false;
  ++lines_;
  return true;
}

void DropLog::CountHost(const SocketAddress& peer) {
  std::string host = HostOf(peer);
  auto it = by_host_.find(host);
  if (it != by_host_.end()) {
    ++it->second;
  } else if (by_host_.size() < policy_.max_hosts) {
    by_host_.emplace(std::move(host), 1);
  } else {
    ++other_hosts_;
  }
}

void DropLog::Dropped(DropReason reason, const SocketAddress& peer, const std::string& why,
                      Clock::time_point now) {
  Tick(now);
  ++dropped_total_;
  ++dropped_;
  ++by_reason_[static_cast<size_t>(reason)];
  CountHost(peer);
  if (!TakeLine(now)) {
    ++unlogged_;
    return;
  }
  std::string line = Format("listen comm on %s: dropped a connection from %s: %s",
                            listener_.c_str(), peer.ToString().c_str(), why.c_str());
  if (lines_ == policy_.lines_per_interval) {
    line += Format(" (more drops on this listener are counted and summarised every %lld s)",
                   static_cast<long long>(
                       std::chrono::duration_cast<std::chrono::seconds>(policy_.interval).count()));
  }
  sink_(line);
}

void DropLog::Counted(DropReason reason, const SocketAddress& peer, Clock::time_point now) {
  Tick(now);
  if (!started_) started_ = now;
  ++dropped_total_;
  ++dropped_;
  ++unlogged_;
  ++by_reason_[static_cast<size_t>(reason)];
  CountHost(peer);
}

void DropLog::Problem(const std::string& what, Clock::time_point now) {
  Tick(now);
  if (!TakeLine(now)) {
    ++unlogged_;
    ++problems_unlogged_;
    last_problem_ = what;
    return;
  }
  sink_(Format("listen comm on %s: %s", listener_.c_str(), what.c_str()));
}

void DropLog::Tick(Clock::time_point now) {
  if (started_ && now - *started_ >= policy_.interval) Summarise(now);
}

void DropLog::Flush(Clock::time_point now) {
  if (started_) Summarise(now);
}

void DropLog::Summarise(Clock::time_point now) {
  if (unlogged_ > 0) {
    const std::string span = Span(now - *started_);
    std::string line = Format("listen comm on %s:", listener_.c_str());
    if (dropped_ > 0) {
      std::vector<std::pair<std::string, uint64_t>> hosts(by_host_.begin(), by_host_.end());
      std::sort(hosts.begin(), hosts.end(), [](const auto& a, const auto& b) {
        return a.second != b.second ? a.second > b.second : a.first < b.first;
      });
      uint64_t unnamed = other_hosts_;
      for (size_t i = kHostsNamed; i < hosts.size(); ++i) unnamed += hosts[i].second;
      hosts.resize(std::min(hosts.size(), kHostsNamed));
      line += Format(" dropped %s unidentified connection%s in the last %s from",
                     WithThousands(dropped_).c_str(), dropped_ == 1 ? "" : "s", span.c_str());
      for (size_t i = 0; i < hosts.size(); ++i) {
        line += Format("%s %s (%s)", i == 0 ? "" : ",", hosts[i].first.c_str(),
                       WithThousands(hosts[i].second).c_str());
      }
      if (unnamed > 0) line += Format(" and other hosts (%s)", WithThousands(unnamed).c_str());
      std::string reasons;
      for (size_t i = 0; i < kDropReasonCount; ++i) {
        if (by_reason_[i] == 0) continue;
        reasons +=
            Format("%s%s %s", reasons.empty() ? "" : ", ", WithThousands(by_reason_[i]).c_str(),
                   Describe(static_cast<DropReason>(i)));
      }
      line += Format(
          ": %s; %s not logged individually. A devmem peer presents this listener's "
          "handle at once: anything else is a port scan, a misdirected client or a "
          "flood from those hosts",
          reasons.c_str(), WithThousands(unlogged_ - problems_unlogged_).c_str());
    }
    if (problems_unlogged_ > 0) {
      line += Format("%s%s more listener problem%s in the last %s, the last: %s",
                     dropped_ > 0 ? "; " : " ", WithThousands(problems_unlogged_).c_str(),
                     problems_unlogged_ == 1 ? "" : "s", span.c_str(), last_problem_.c_str());
    }
    sink_(line);
  }
  started_.reset();
  lines_ = 0;
  dropped_ = 0;
  unlogged_ = 0;
  by_reason_ = {};
  by_host_.clear();
  other_hosts_ = 0;
  problems_unlogged_ = 0;
  last_problem_.clear();
}

}  // namespace devmem
