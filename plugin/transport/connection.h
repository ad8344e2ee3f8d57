// Connection setup, fully non-blocking as NCCL's proxy requires: a ListenComm accepts and
// validates incoming sockets and groups them into RecvComms; a Connector drives one connect()
// from TCP handshake to the receiver's reply.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "plugin/core/config.h"
#include "plugin/core/net_device.h"
#include "plugin/core/status.h"
#include "plugin/core/unique_fd.h"
#include "plugin/transport/comm.h"
#include "plugin/transport/wire.h"

namespace devmem {

using Clock = std::chrono::steady_clock;

// Socket helpers shared by both sides.
Result<UniqueFd> OpenStreamSocket(int family);
std::string PeerName(int fd);

// How a NIC's receive connections run, decided once at init by the readiness checks.
class ListenComm final {
 public:
  static constexpr uint32_t kMagic = 0x4c4e5344;  // "DSNL"
  // Binds a listening socket on the device's address and writes the handle for the peer.
  // `plan`: devmem RX or plain TCP for this NIC's receive connections.
  static Result<std::unique_ptr<ListenComm>> Create(const NetDevice& device, const Config& config,
                                                    uint8_t* handle128, RxPlan plan = RxPlan());
  ListenComm(const ListenComm&) = delete;
  ListenComm& operator=(const ListenComm&) = delete;
  ~ListenComm();

  // A RecvComm once every socket of one connection arrived and passed the handshake;
  // nullptr while none is complete. Stray or invalid sockets are dropped with a WARN.
  Result<std::unique_ptr<RecvComm>> Accept();

  uint32_t magic() const { return magic_; }
  const SocketAddress& address() const { return address_; }
  size_t pending_sockets() const { return pending_.size(); }

 private:
  struct PendingSocket {
    UniqueFd fd;
    std::string peer;
    uint8_t hello[wire::Hello::kSize] = {};
    size_t received = 0;
    Clock::time_point deadline;
  };
  struct PendingConnection {
    uint64_t connection_id = 0;
    wire::Hello first;  // parameters every socket of the group must repeat
    UniqueFd control;
    std::vector<UniqueFd> data;
    int arrived = 0;
    std::string peer;
    Clock::time_point deadline;
  };

  ListenComm(UniqueFd fd, const NetDevice& device, const Config& config, uint64_t nonce);
  void AcceptNewSockets();
  void ReadHellos();
  // Moves a validated socket into its connection group; false (with WARN) if inconsistent.
  void Group(PendingSocket socket, const wire::Hello& hello);
  void Reject(PendingSocket* socket, const wire::Hello* hello, const std::string& why);
  void ExpireConnections();
  // The receive path of an accepted connection: emulated, devmem (binding + flow rules), or
  // plain TCP with the reason. Fails only when NCCL_DEVMEM_REQUIRE=1 forbids the fallback.
  Result<RxPath> PlanRxPath(const PendingConnection& connection);

  const uint32_t magic_ = kMagic;
  UniqueFd fd_;
  std::string device_name_;
  NetDevice device_;
  SocketAddress address_;
  Config config_;
  uint64_t nonce_;
  RxPlan plan_;
  std::vector<PendingSocket> pending_;
  std::vector<PendingConnection> connections_;
};

class Connector final {
 public:
  static Result<std::unique_ptr<Connector>> Start(const wire::ListenHandle& handle,
                                                  const Config& config);
  // A SendComm once the receiver accepted us; nullptr while in progress.
  Result<std::unique_ptr<SendComm>> Progress();

 private:
  Connector() = default;
  SocketAddress peer_;
  uint64_t nonce_ = 0;
  uint64_t connection_id_ = 0;
  ConnectionParams params_;
  struct Socket {
    UniqueFd fd;
    bool connected = false;
    uint8_t hello[wire::Hello::kSize] = {};
    size_t sent = 0;
  };
  std::vector<Socket> sockets_;  // [0] control, then data sockets
  uint8_t reply_[wire::HelloReply::kSize] = {};
  size_t reply_received_ = 0;
  Clock::time_point deadline_;
};

}  // namespace devmem
