// The receiving side of connection setup, fully non-blocking as NCCL's proxy requires: a
// ListenComm accepts and validates incoming sockets and groups them into RecvComms.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "plugin/core/config.h"
#include "plugin/core/net_device.h"
#include "plugin/core/status.h"
#include "plugin/core/unique_fd.h"
#include "plugin/setup/rx_plan.h"
#include "plugin/transport/comm.h"
#include "plugin/transport/listener_admission.h"
#include "plugin/transport/listener_drop_log.h"
#include "plugin/transport/wire.h"

namespace devmem {

// How a NIC's receive connections run, decided once at init by the readiness checks.
class ListenComm final {
 public:
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

}  // namespace devmem
