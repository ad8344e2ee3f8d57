// Connection setup, fully non-blocking as NCCL's proxy requires: a ListenComm accepts and
// validates incoming sockets and groups them into RecvComms; a Connector drives one connect()
// from TCP handshake to the receiver's reply.
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
#include "plugin/transport/listener_admission.h"
#include "plugin/transport/listener_drop_log.h"
#include "plugin/transport/wire.h"

namespace devmem {

// Socket helpers shared by both sides.
Result<UniqueFd> OpenStreamSocket(int family);

// How a NIC's receive connections run, decided once at init by the readiness checks.
class ListenComm final {
 public:
  static constexpr uint32_t kMagic = 0x4c4e5344;  // "DSNL"
  // Binds a listening socket on the device's address and writes the handle for the peer.
  // `plan`: devmem RX or plain TCP for this NIC's receive connections.
  // `other_members`: the other NICs of a virtual NIC whose first member is `device`. Then the
  // socket listens on the wildcard address of their family (one port for all members) and
  // the handle names every member (wire::ListenHandle), so the sender spreads its data
  // sockets over them; all members must share `device`'s address family.
  static Result<std::unique_ptr<ListenComm>> Create(
      const NetDevice& device, const Config& config, uint8_t* handle128, RxPlan plan = RxPlan(),
      const std::vector<NetDevice>& other_members = {});
  ListenComm(const ListenComm&) = delete;
  ListenComm& operator=(const ListenComm&) = delete;
  ~ListenComm();

  // A RecvComm once every socket of one connection arrived and passed the handshake;
  // nullptr while none is complete. Sockets that do not identify themselves are dropped (see
  // listener_admission.h) and reported through a rate-limited log (listener_drop_log.h).
  Result<std::unique_ptr<RecvComm>> Accept();

  uint32_t magic() const { return magic_; }
  const SocketAddress& address() const { return address_; }
  size_t unidentified_sockets() const { return admission_->unidentified(); }

 private:
  struct PendingConnection {
    uint64_t connection_id = 0;
    wire::Hello first;  // parameters every socket of the group must repeat
    UniqueFd control;
    std::vector<UniqueFd> data;
    int arrived = 0;
    SocketAddress peer;
    Clock::time_point deadline;
  };

  ListenComm(UniqueFd fd, const NetDevice& device, const Config& config, uint64_t nonce,
             const SocketAddress& address);
  // Moves an identified socket into its connection group; dropped (logged) if inconsistent.
  void Group(IdentifiedSocket socket);
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
  DropLog drops_;
  std::unique_ptr<Admission> admission_;      // borrows fd_ and drops_
  std::vector<IdentifiedSocket> identified_;  // reused by Accept
  std::vector<PendingConnection> connections_;
};

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
