// A send and a receive comm built straight from loopback TCP pairs (no handshake), for tests
// that drive RecvComm's consumers directly.
#pragma once

#include <sys/socket.h>

#include <cerrno>
#include <memory>
#include <utility>
#include <vector>

#include "plugin/devmem/rx_arena.h"
#include "plugin/transport/comm.h"
#include "tests/common/tcp_pair.h"

namespace devmem::testing {

inline ConnectionParams TestParams(int sockets, int threads, uint64_t chunk_bytes) {
  ConnectionParams params;
  params.data_sockets = sockets;
  params.worker_threads = threads;
  params.chunk_bytes = chunk_bytes;
  params.inline_bytes = 1024;
  return params;
}

// Emulated devmem with a heavy frag mix: 30% half-page frags, 20% of receives with linear bytes.
// The region is the whole of a fresh arena on `gpu` (-1: host memory); without one (no GPU),
// path.region stays empty and RecvComm::Create says why.
inline RxPath EmulatedPath(uint64_t region_bytes, int gpu) {
  RxPath path;
  path.mode = RxPath::Mode::kEmulatedDevmem;
  path.mix.split_percent = 30;
  path.mix.linear_percent = 20;
  path.scatter_slots = 8 * kMaxRecvsLimit;
  Result<std::shared_ptr<RxArena>> arena = RxArena::CreateForTest(gpu, region_bytes);
  if (arena.ok()) {
    Result<std::unique_ptr<RxRegion>> region = arena.value()->Carve(region_bytes, true);
    if (region.ok()) path.region = std::move(region).value();
  }
  return path;
}

struct CommPair {
  std::unique_ptr<SendComm> send;
  std::unique_ptr<RecvComm> recv;
};

inline Result<CommPair> CreateCommPair(const ConnectionParams& params, RxPath path) {
  auto control = TcpPair();
  std::vector<UniqueFd> send_data, recv_data;
  for (int i = 0; i < params.data_sockets; ++i) {
    auto pair = TcpPair();
    send_data.push_back(std::move(pair.first));
    recv_data.push_back(std::move(pair.second));
  }
  CommPair pair;
  auto recv = RecvComm::Create(std::move(control.second), std::move(recv_data), params, "test recv",
                               std::move(path));
  if (!recv.ok()) return recv.status();
  pair.recv = std::move(recv).value();
  auto send = SendComm::Create(std::move(control.first), std::move(send_data), params, "test send");
  if (!send.ok()) return send.status();
  pair.send = std::move(send).value();
  return pair;
}

// A pair whose sender sends like the connector's zero-copy sockets (emulated or devmem TX):
// every sending data socket has SO_ZEROCOPY; `receiver_buffer` > 0 sets SO_RCVBUF of the
// receiving ones (a small one holds bytes, and so completions, back). The receiver gets
// `params`, the sender `send_params` (its zero-copy and TX settings).
inline Result<CommPair> CreateZeroCopyCommPair(const ConnectionParams& params,
                                               const ConnectionParams& send_params,
                                               int receiver_buffer = 0) {
  auto control = TcpPair();
  std::vector<UniqueFd> send_data, recv_data;
  for (int i = 0; i < params.data_sockets; ++i) {
    auto pair = TcpPair();
    int one = 1;
    if (setsockopt(pair.first.get(), SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) != 0) {
      return Status::Errno(errno, "SO_ZEROCOPY");
    }
    if (receiver_buffer > 0 && setsockopt(pair.second.get(), SOL_SOCKET, SO_RCVBUF,
                                          &receiver_buffer, sizeof(receiver_buffer)) != 0) {
      return Status::Errno(errno, "SO_RCVBUF");
    }
    send_data.push_back(std::move(pair.first));
    recv_data.push_back(std::move(pair.second));
  }
  CommPair pair;
  auto recv = RecvComm::Create(std::move(control.second), std::move(recv_data), params,
                               "zerocopy recv", RxPath());
  if (!recv.ok()) return recv.status();
  pair.recv = std::move(recv).value();
  auto send = SendComm::Create(std::move(control.first), std::move(send_data), send_params,
                               "zerocopy send");
  if (!send.ok()) return send.status();
  pair.send = std::move(send).value();
  return pair;
}

}  // namespace devmem::testing
