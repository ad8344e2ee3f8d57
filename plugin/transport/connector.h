// The sending side of connection setup, fully non-blocking as NCCL's proxy requires: a
// Connector drives one connect() from TCP handshake to the receiver's reply.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "plugin/core/config.h"
#include "plugin/core/net_device.h"
#include "plugin/core/status.h"
#include "plugin/core/unique_fd.h"
#include "plugin/transport/comm.h"
#include "plugin/transport/listener_drop_log.h"  // Clock
#include "plugin/transport/wire.h"

namespace devmem {

// Data socket `index` of a connection between a virtual NIC of `local` members and one of
// `remote` members (1 for a physical NIC) goes from local member index % local to remote
// member index % remote: members pair up by position (rail k to rail k), and a connection
// gets DataSocketsFor(...) data sockets, a multiple of the larger member count, so that every
// member carries the same share.
int DataSocketsFor(int configured, size_t local_members, size_t remote_members);

// Whether a send connection's NIC runs devmem TX (DeviceEntry::tx_reason at init).
struct TxChoice {
  int ifindex = 0;     // > 0: devmem TX on this NIC
  std::string reason;  // ifindex 0: why not (NCCL_DEVMEM_REQUIRE_TX=1 fails with it)
};

class Connector final {
 public:
  // `local_members`: the sending NIC (one) or the members of the sending virtual NIC, at
  // least one. Every socket is bound to its member's address before connect (source_route.h),
  // and each path whose route leaves through another device is WARNed about once.
  // `tx`: whether this NIC runs devmem TX (DeviceEntry::tx_reason at init); its data sockets
  // are also bound to the device (SO_BINDTODEVICE).
  static Result<std::unique_ptr<Connector>> Start(const wire::ListenHandle& handle,
                                                  const Config& config,
                                                  const std::vector<NetDevice>& local_members,
                                                  const TxChoice& tx = TxChoice());
  // A SendComm once the receiver accepted us; nullptr while in progress.
  Result<std::unique_ptr<SendComm>> Progress();

 private:
  Connector() = default;
  SocketAddress peer_;
  std::string members_;  // virtual NICs: ", over 2 -> 3 member NICs" for the description
  uint64_t nonce_ = 0;
  uint64_t connection_id_ = 0;
  ConnectionParams params_;
  struct Socket {
    UniqueFd fd;
    SocketAddress to;  // the remote member this socket dials (errors name it)
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
