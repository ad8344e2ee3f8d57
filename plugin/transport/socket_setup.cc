// Socket options both ends of a connection set, and the nonces that identify a connection.
#include "plugin/transport/socket_setup.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdio>

#include "plugin/core/log.h"

namespace devmem {
namespace {

// Uint value of a /proc/sys file, 0 when unreadable.
uint64_t ReadSysctl(const char* path) {
  FILE* f = fopen(path, "re");
  if (f == nullptr) return 0;
  unsigned long long value = 0;
  if (fscanf(f, "%llu", &value) != 1) value = 0;
  fclose(f);
  return value;
}

}  // namespace

uint64_t RandomNonZero() {
  uint64_t value = 0;
  while (value == 0) {
    if (getrandom(&value, sizeof(value), 0) != sizeof(value)) {
      // getrandom cannot fail for 8 bytes once the pool is ready; fall back to the clock.
      value = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) * 0x9e3779b97f4a7c15;
    }
  }
  return value;
}

void SetNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Fixed socket buffers, when NCCL_DEVMEM_SOCKET_BUFFER_BYTES asks: on a fresh comm the kernel's
// autotuning grows each socket's buffers only with the traffic it sees (a cold 512 KiB
// ping-pong: 280-330 us autotuned, ~200 us with 4 MiB), but on long-lived comms autotuning
// won (32 MiB ping-pong 21 vs 35 ms): off by default (perf/RESULTS.md). Only where
// net.core.{w,r}mem_max allow the full size: a capped SO_RCVBUF would switch autotuning off
// and leave a smaller buffer than the kernel would have grown.
void SetBuffers(int fd, const Config& config) {
  const uint64_t want = config.socket_buffer_bytes;
  if (want == 0) return;
  const uint64_t wmem = ReadSysctl("/proc/sys/net/core/wmem_max");
  const uint64_t rmem = ReadSysctl("/proc/sys/net/core/rmem_max");
  if (wmem < want || rmem < want) {
    static std::atomic<bool> logged{false};
    if (!logged.exchange(true)) {
      log::Info(log::kNet,
                "NCCL_DEVMEM_SOCKET_BUFFER_BYTES=%llu not applied: net.core.wmem_max=%llu, "
                "rmem_max=%llu are lower (kernel autotuning stays on; raise them to apply it)",
                static_cast<unsigned long long>(want), static_cast<unsigned long long>(wmem),
                static_cast<unsigned long long>(rmem));
    }
    return;
  }
  const int bytes = static_cast<int>(want);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
}

// A peer that vanished (power loss, partition) must fail the comm rather than hang it. Keepalive
// finds it while a connection idles (probes are answered by the peer's kernel, so a slow but
// healthy peer never trips it); TCP_USER_TIMEOUT, when configured, bounds how long sent data
// may stay unacknowledged and also caps keepalive: probes then start after half the timeout.
void SetLiveness(int fd, const Config& config) {
  int one = 1, idle = 60, interval = 10, probes = 6;
  if (config.tcp_user_timeout_ms > 0) {
    idle = interval = std::max(1, config.tcp_user_timeout_ms / 2000);
  }
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof(probes));
  if (config.tcp_user_timeout_ms > 0) {
    unsigned timeout = static_cast<unsigned>(config.tcp_user_timeout_ms);
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout, sizeof(timeout));
  }
}

Result<UniqueFd> OpenStreamSocket(int family) {
  UniqueFd fd(socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid())
    return Status::Errno(errno, "socket(%s)", family == AF_INET6 ? "AF_INET6" : "AF_INET");
  SetNoDelay(fd.get());
  return fd;
}

}  // namespace devmem
