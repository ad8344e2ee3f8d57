// The sending side of connection setup: a Connector drives one connect() from the TCP
// handshakes of its sockets (connected concurrently) to the receiver's reply, then hands them
// to a SendComm.
#include "plugin/transport/connector.h"

#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "plugin/core/log.h"
#include "plugin/core/nccl_contract.h"
#include "plugin/transport/socket_setup.h"
#include "plugin/transport/source_route.h"

namespace devmem {

int DataSocketsFor(int configured, size_t local_members, size_t remote_members) {
  const int members = static_cast<int>(std::max<size_t>({local_members, remote_members, 1}));
  const int rounded = (configured + members - 1) / members * members;
  // Never above the limit a listener accepts: its largest multiple, so shares stay even.
  return std::min(rounded, kMaxDataSockets / members * members);
}

Result<std::unique_ptr<Connector>> Connector::Start(const wire::ListenHandle& handle,
                                                    const Config& config,
                                                    const std::vector<NetDevice>& local_members,
                                                    const TxChoice& tx) {
  if (local_members.empty()) {
    return Status::Error(ErrorKind::kInvalidArgument, "connect to %s: no local NIC",
                         handle.address.ToString().c_str());
  }
  if (config.require_tx && tx.ifindex <= 0) {
    return Status::Error(ErrorKind::kSystem,
                         "NCCL_DEVMEM_REQUIRE_TX=1, but devmem TX does not run on this NIC: %s",
                         tx.reason.empty() ? "unknown" : tx.reason.c_str());
  }
  std::unique_ptr<Connector> connector(new Connector());
  // Remote members: the handle's first address, then the others on the same port.
  std::vector<SocketAddress> remote = {handle.address};
  remote.insert(remote.end(), handle.extra_members.begin(), handle.extra_members.end());
  const bool is_virtual = local_members.size() > 1;
  // A NIC whose address is of the other family cannot be the source: then the kernel picks one
  // (a lone NIC), or the virtual NIC cannot connect at all.
  const bool bind_source = local_members.front().address.family() == handle.address.family();
  for (const NetDevice& local : local_members) {
    if (is_virtual && local.address.family() != handle.address.family()) {
      return Status::Error(ErrorKind::kInvalidArgument,
                           "local member NIC %s (%s) cannot reach %s: address families differ",
                           local.name.c_str(), local.address.ToString().c_str(),
                           handle.address.ToString().c_str());
    }
  }
  const int data_sockets = DataSocketsFor(config.data_sockets, local_members.size(), remote.size());
  connector->peer_ = handle.address;
  if (remote.size() > 1 || is_virtual) {
    connector->members_ = Format(", over %zu -> %zu member NICs, %s striping",
                                 local_members.size(), remote.size(),
                                 config.adaptive_stripes ? "adaptive" : "round-robin");
  }
  connector->nonce_ = handle.nonce;
  connector->connection_id_ = RandomNonZero();
  connector->params_.data_sockets = data_sockets;
  connector->params_.adaptive_stripes =
      config.adaptive_stripes && (remote.size() > 1 || is_virtual);
  connector->params_.zerocopy_tx = config.emulate_tx;
  connector->params_.devmem_tx_ifindex = std::max(tx.ifindex, 0);
  connector->params_.require_tx = config.require_tx;
  // The paths the sockets take (member k to remote member k, DataSocketsFor): a route that
  // leaves through another device than the path's NIC is WARNed about once per process.
  const size_t paths = bind_source ? std::max(local_members.size(), remote.size()) : 0;
  for (size_t pair = 0; pair < paths; ++pair) {
    const std::string warning = RouteWarningOnce(local_members[pair % local_members.size()],
                                                 remote[pair % remote.size()]);
    if (!warning.empty()) log::Warn("%s", warning.c_str());
  }
  if (tx.ifindex > 0) {
    // The kernel sends a devmem TX packet only out of the bound NIC and refuses the sendmsg
    // otherwise (ENODEV, net/core/devmem.c net_devmem_get_binding): check the route to every
    // remote member now, while the connection can still stage instead.
    SocketAddress from = local_members.front().address;
    from.set_port(0);
    for (const SocketAddress& to : remote) {
      const std::string why = bind_source ? RouteMismatch(from, to, tx.ifindex)
                                          : "the NIC's address family differs from the peer's";
      if (why.empty()) continue;
      if (config.require_tx) {
        return Status::Error(ErrorKind::kSystem, "NCCL_DEVMEM_REQUIRE_TX=1, but %s", why.c_str());
      }
      log::Warn(
          "no devmem TX on this connection to %s (%s): CUDA buffers stage through host "
          "memory",
          handle.address.ToString().c_str(), why.c_str());
      connector->params_.devmem_tx_ifindex = 0;
      break;
    }
  }
  connector->params_.worker_threads = config.worker_threads;
  connector->params_.chunk_bytes = config.chunk_bytes;
  connector->params_.inline_bytes = config.inline_bytes;
  connector->params_.queued_inline_bytes = config.queued_inline_bytes;
  connector->params_.proxy_bytes = config.proxy_bytes;
  connector->params_.gpu_work_limit = std::chrono::milliseconds(config.gpu_consumer_timeout_ms);
  connector->deadline_ = Clock::now() + std::chrono::milliseconds(config.handshake_timeout_ms);
  for (int i = 0; i <= data_sockets; ++i) {
    // The control socket (i == 0) pairs the first members, data socket i - 1 as documented
    // at DataSocketsFor.
    const size_t pair = i == 0 ? 0 : static_cast<size_t>(i - 1);
    const SocketAddress& to = remote[pair % remote.size()];
    Result<UniqueFd> fd = OpenStreamSocket(handle.address.family());
    if (!fd.ok()) return fd.status();
    SetLiveness(fd->get(), config);
    SetBuffers(fd->get(), config);  // before connect: the window scale is chosen from it
    if (i > 0 && (connector->params_.zerocopy_tx || connector->params_.devmem_tx_ifindex > 0)) {
      int one = 1;
      if (setsockopt(fd->get(), SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) != 0) {
        // Old kernels and some socket types refuse it: this connection sends by copy.
        const int err = errno;
        if (config.require_tx && connector->params_.devmem_tx_ifindex > 0) {
          return Status::Errno(err,
                               "NCCL_DEVMEM_REQUIRE_TX=1, but SO_ZEROCOPY (which devmem "
                               "TX needs) failed on a data socket to %s",
                               to.ToString().c_str());
        }
        log::Warn("SO_ZEROCOPY failed (%s): this connection to %s sends by copy%s", strerror(err),
                  to.ToString().c_str(),
                  connector->params_.devmem_tx_ifindex > 0
                      ? ", CUDA buffers staged through host memory (no devmem TX)"
                      : " (NCCL_DEVMEM_EMULATE_TX=1 asked for MSG_ZEROCOPY)");
        connector->params_.zerocopy_tx = false;
        connector->params_.devmem_tx_ifindex = 0;
      }
    }
    const NetDevice& member = local_members[pair % local_members.size()];
    if (i > 0 && connector->params_.devmem_tx_ifindex > 0) {
      if (Status bound = BindToDevice(fd->get(), local_members.front()); !bound.ok()) {
        static std::atomic<bool> warned{false};
        if (!warned.exchange(true)) {
          log::Warn(
              "%s on a devmem TX data socket failed: the connect-time route check stays the "
              "only guard, and a later route change fails its sends with ENODEV",
              bound.message().c_str());
        }
      }
    }
    if (bind_source) {
      // The source address picks the NIC the peer's packets come back to; with one subnet per
      // NIC (or source routing) also the one ours leave by.
      DEVMEM_RETURN_IF_ERROR(BindSourceAddress(fd->get(), member));
    }
    if (connect(fd->get(), to.get(), to.length()) != 0 && errno != EINPROGRESS) {
      return Status::Errno(errno, "connect to %s", to.ToString().c_str());
    }
    Socket socket;
    socket.fd = std::move(fd).value();
    socket.to = to;
    wire::Hello hello;
    hello.role = i == 0 ? wire::SocketRole::kControl : wire::SocketRole::kData;
    hello.socket_index = static_cast<uint16_t>(i == 0 ? 0 : i - 1);
    hello.data_sockets = static_cast<uint16_t>(data_sockets);
    hello.chunk_bytes = static_cast<uint32_t>(config.chunk_bytes);
    hello.inline_bytes = config.inline_bytes;
    hello.nonce = handle.nonce;
    hello.connection_id = connector->connection_id_;
    hello.Encode(socket.hello);
    connector->sockets_.push_back(std::move(socket));
  }
  return connector;
}

Result<std::unique_ptr<SendComm>> Connector::Progress() {
  const std::string peer = peer_.ToString();
  std::vector<pollfd> waits;
  for (Socket& socket : sockets_) {
    if (!socket.connected) waits.push_back({socket.fd.get(), POLLOUT, 0});
  }
  if (!waits.empty() && poll(waits.data(), waits.size(), 0) < 0 && errno != EINTR) {
    return Status::Errno(errno, "poll while connecting to %s", peer.c_str());
  }
  for (Socket& socket : sockets_) {
    if (!socket.connected) {
      auto it = std::find_if(waits.begin(), waits.end(),
                             [&](const pollfd& p) { return p.fd == socket.fd.get(); });
      if (it == waits.end() || it->revents == 0) continue;
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(socket.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        // Name the member that failed: with a virtual NIC it need not be the handle's first.
        return Status::Errno(err, "connect to %s", socket.to.ToString().c_str());
      }
      socket.connected = true;
    }
    while (socket.sent < sizeof(socket.hello)) {
      ssize_t n = send(socket.fd.get(), socket.hello + socket.sent,
                       sizeof(socket.hello) - socket.sent, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) {
        socket.sent += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      return Status::Errno(errno, "sending the handshake to %s", socket.to.ToString().c_str());
    }
  }
  bool all_sent = std::all_of(sockets_.begin(), sockets_.end(), [](const Socket& s) {
    return s.connected && s.sent == sizeof(s.hello);
  });
  if (all_sent) {
    while (reply_received_ < sizeof(reply_)) {
      ssize_t n = recv(sockets_[0].fd.get(), reply_ + reply_received_,
                       sizeof(reply_) - reply_received_, MSG_DONTWAIT);
      if (n > 0) {
        reply_received_ += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n == 0) {
        return Status::Error(ErrorKind::kRemote,
                             "%s closed the connection during the handshake: it could not set "
                             "the connection up (its log says why, e.g. out of file "
                             "descriptors) or does not accept our handle (stale nonce, or not a "
                             "devmem listener)",
                             peer.c_str());
      }
      return Status::Errno(errno, "receiving the handshake reply from %s", peer.c_str());
    }
  }
  if (reply_received_ < sizeof(reply_)) {
    if (Clock::now() > deadline_) {
      return Status::Error(ErrorKind::kRemote,
                           "no handshake reply from %s within the handshake timeout "
                           "(NCCL_DEVMEM_HANDSHAKE_TIMEOUT_MS)",
                           peer.c_str());
    }
    return std::unique_ptr<SendComm>();
  }
  Result<wire::HelloReply> reply = wire::HelloReply::Decode(reply_);
  if (!reply.ok()) return reply.status().WithContext("handshake with " + peer);
  if (reply->code != wire::HelloReply::kAccepted || reply->nonce != nonce_) {
    return Status::Error(ErrorKind::kRemote,
                         "%s rejected the handshake (code %u): the connect handle is stale or "
                         "belongs to another listener",
                         peer.c_str(), reply->code);
  }
  if (reply->inline_bytes > params_.inline_bytes) {
    return Status::Error(ErrorKind::kRemote,
                         "%s accepted %u inline bytes, above the %u this side offered", peer.c_str(),
                         reply->inline_bytes, params_.inline_bytes);
  }
  params_.inline_bytes = reply->inline_bytes;  // the receiver's data path decides
  std::vector<UniqueFd> data;
  for (size_t i = 1; i < sockets_.size(); ++i) data.push_back(std::move(sockets_[i].fd));
  std::string description =
      Format("send comm ->%s (%d data sockets, %d threads, %llu-byte chunks%s)", peer.c_str(),
             params_.data_sockets, params_.worker_threads,
             static_cast<unsigned long long>(params_.chunk_bytes), members_.c_str());
  if (params_.devmem_tx_ifindex > 0) {
    log::Info(log::kNet,
              "%s: devmem TX: CUDA send buffers are sent from GPU memory (bind-tx + "
              "MSG_ZEROCOPY), host buffers by plain TCP",
              description.c_str());
  } else if (params_.zerocopy_tx) {
    log::Info(log::kNet,
              "%s: EMULATED devmem TX (NCCL_DEVMEM_EMULATE_TX=1, a test mode): chunks go out "
              "with MSG_ZEROCOPY from the host buffer, and a send completes only after the "
              "kernel's zero-copy completions",
              description.c_str());
  } else {
    log::Info(log::kNet, "%s: plain-TCP data path", description.c_str());
  }
  return SendComm::Create(std::move(sockets_[0].fd), std::move(data), params_,
                          std::move(description));
}


}  // namespace devmem
