#include "plugin/transport/connection.h"

#include <netinet/tcp.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "plugin/core/log.h"
#include "plugin/core/nccl_contract.h"
#include "plugin/cuda/cuda_driver.h"
#include "plugin/devmem/rx_arena.h"
#include "plugin/setup/rx_setup.h"
#include "plugin/transport/source_route.h"

namespace devmem {
namespace {

uint64_t RandomNonZero() {
  uint64_t value = 0;
  while (value == 0) {
    if (getrandom(&value, sizeof(value), 0) != sizeof(value)) {
      // getrandom cannot fail for 8 bytes once the pool is ready; fall back to the clock.
      value = static_cast<uint64_t>(Clock::now().time_since_epoch().count()) * 0x9e3779b97f4a7c15;
    }
  }
  return value;
}

void SetNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Uint value of a /proc/sys file, 0 when unreadable.
uint64_t ReadSysctl(const char* path) {
  FILE* f = fopen(path, "re");
  if (f == nullptr) return 0;
  unsigned long long value = 0;
  if (fscanf(f, "%llu", &value) != 1) value = 0;
  fclose(f);
  return value;
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

}  // namespace

Result<UniqueFd> OpenStreamSocket(int family) {
  UniqueFd fd(socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid())
    return Status::Errno(errno, "socket(%s)", family == AF_INET6 ? "AF_INET6" : "AF_INET");
  SetNoDelay(fd.get());
  return fd;
}

// ---------------------------------------------------------------------------------------------

ListenComm::ListenComm(UniqueFd fd, const NetDevice& device, const Config& config, uint64_t nonce,
                       const SocketAddress& address)
    : fd_(std::move(fd)),
      device_name_(device.name),
      device_(device),
      address_(address),
      config_(config),
      nonce_(nonce),
      drops_(address.ToString(), [](const std::string& line) { log::Warn("%s", line.c_str()); }) {}

ListenComm::~ListenComm() {
  drops_.Flush(Clock::now());
  const size_t unidentified = admission_ != nullptr ? admission_->unidentified() : 0;
  if (unidentified > 0 || !connections_.empty()) {
    log::Info(log::kNet,
              "listen comm on %s closed with %zu unidentified sockets and %zu partial "
              "connections",
              address_.ToString().c_str(), unidentified, connections_.size());
  }
}

Result<std::unique_ptr<ListenComm>> ListenComm::Create(
    const NetDevice& device, const Config& config, uint8_t* handle128, RxPlan plan,
    const std::vector<NetDevice>& other_members) {
  const int family = device.address.family();
  if (other_members.size() > wire::ListenHandle::MaxExtraMembers(family)) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "a virtual NIC of %zu %s NICs: a listen handle names at most %zu",
                         other_members.size() + 1, family == AF_INET6 ? "IPv6" : "IPv4",
                         wire::ListenHandle::MaxExtraMembers(family) + 1);
  }
  for (const NetDevice& member : other_members) {
    if (member.address.family() != family) {
      return Status::Error(ErrorKind::kInvalidArgument,
                           "virtual NIC members %s (%s) and %s (%s) differ in address family",
                           device.name.c_str(), device.address.ToString().c_str(),
                           member.name.c_str(), member.address.ToString().c_str());
    }
  }
  Result<UniqueFd> fd = OpenStreamSocket(family);
  if (!fd.ok()) return fd.status();
  int one = 1;
  setsockopt(fd->get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  SocketAddress bind_address = device.address;
  if (!other_members.empty()) {
    // One port on every member: the wildcard address of the family (IPv6 only for IPv6, so
    // IPv4 peers cannot reach it through a mapped address). Who may use it is still decided
    // by the nonce every hello must carry (listener_admission.h).
    if (family == AF_INET6 &&
        setsockopt(fd->get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) {
      return Status::Errno(errno, "IPV6_V6ONLY on the listener of %s", device.name.c_str());
    }
    Result<SocketAddress> any = SocketAddress::FromString(family == AF_INET6 ? "::" : "0.0.0.0", 0);
    if (!any.ok()) return any.status();
    bind_address = any.value();
  }
  bind_address.set_port(0);
  if (bind(fd->get(), bind_address.get(), bind_address.length()) != 0) {
    return Status::Errno(errno, "bind to %s on %s", bind_address.ToString().c_str(),
                         device.name.c_str());
  }
  if (listen(fd->get(), SOMAXCONN) != 0)
    return Status::Errno(errno, "listen on %s", device.name.c_str());
  sockaddr_storage storage{};
  socklen_t len = sizeof(storage);
  if (getsockname(fd->get(), reinterpret_cast<sockaddr*>(&storage), &len) != 0) {
    return Status::Errno(errno, "getsockname on %s", device.name.c_str());
  }
  Result<SocketAddress> bound =
      SocketAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&storage), len);
  if (!bound.ok()) return bound.status();
  // The address peers dial first: the first member's, on the port the kernel gave us.
  SocketAddress advertised = bound.value();
  if (!other_members.empty()) {
    advertised = device.address;
    advertised.set_port(bound->port());
  }

  std::unique_ptr<ListenComm> comm(
      new ListenComm(std::move(fd).value(), device, config, RandomNonZero(), advertised));
  comm->plan_ = std::move(plan);
  Admission::Limits limits;
  limits.max_unidentified = Admission::MaxUnidentifiedForThisProcess();
  limits.handshake_timeout = std::chrono::milliseconds(config.handshake_timeout_ms);
  comm->admission_ = Admission::Create(comm->fd_.get(), comm->nonce_, limits, &comm->drops_);
  wire::ListenHandle handle;
  handle.address = comm->address_;
  handle.nonce = comm->nonce_;
  for (const NetDevice& member : other_members) handle.extra_members.push_back(member.address);
  handle.Encode(handle128);
  std::string members;
  for (const NetDevice& member : other_members) {
    members += Format(", %s %s", member.name.c_str(), member.address.ToString().c_str());
  }
  log::Info(log::kNet, "listening on %s (%s%s); at most %zu unidentified connections held",
            comm->address_.ToString().c_str(), device.name.c_str(), members.c_str(),
            comm->admission_->max_unidentified());
  return comm;
}

void ListenComm::Group(IdentifiedSocket socket) {
  const wire::Hello& hello = socket.hello;
  auto it = std::find_if(connections_.begin(), connections_.end(),
                         [&](const auto& c) { return c.connection_id == hello.connection_id; });
  if (it == connections_.end()) {
    PendingConnection connection;
    connection.connection_id = hello.connection_id;
    connection.first = hello;
    connection.data.resize(hello.data_sockets);
    connection.peer = socket.peer;
    connection.deadline = socket.accepted + std::chrono::milliseconds(config_.handshake_timeout_ms);
    connections_.push_back(std::move(connection));
    it = connections_.end() - 1;
  }
  const wire::Hello& first = it->first;
  if (hello.data_sockets != first.data_sockets || hello.chunk_bytes != first.chunk_bytes ||
      hello.inline_bytes != first.inline_bytes) {
    drops_.Dropped(DropReason::kInconsistent, socket.peer,
                   "socket parameters differ from the rest of its connection", Clock::now());
    return;
  }
  UniqueFd* slot =
      hello.role == wire::SocketRole::kControl ? &it->control : &it->data[hello.socket_index];
  if (slot->valid()) {
    drops_.Dropped(
        DropReason::kInconsistent, socket.peer,
        Format("duplicate %s socket %u in one connection",
               hello.role == wire::SocketRole::kControl ? "control" : "data", hello.socket_index),
        Clock::now());
    return;
  }
  // Only now is the socket worth configuring: strays never cost these syscalls.
  SetNoDelay(socket.fd.get());
  SetLiveness(socket.fd.get(), config_);
  SetBuffers(socket.fd.get(), config_);
  *slot = std::move(socket.fd);
  ++it->arrived;
}

void ListenComm::ExpireConnections() {
  const Clock::time_point now = Clock::now();
  for (size_t i = 0; i < connections_.size();) {
    if (now > connections_[i].deadline) {
      log::Warn(
          "dropping a partial connection from %s to %s: %d of %u sockets arrived within "
          "%d ms",
          connections_[i].peer.ToString().c_str(), address_.ToString().c_str(),
          connections_[i].arrived, connections_[i].first.data_sockets + 1u,
          config_.handshake_timeout_ms);
      connections_.erase(connections_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
}

Result<std::unique_ptr<RecvComm>> ListenComm::Accept() {
  identified_.clear();
  admission_->Poll(&identified_);
  for (IdentifiedSocket& socket : identified_) Group(std::move(socket));
  identified_.clear();
  ExpireConnections();
  for (size_t i = 0; i < connections_.size(); ++i) {
    PendingConnection& connection = connections_[i];
    if (connection.arrived != connection.first.data_sockets + 1) continue;
    PendingConnection ready = std::move(connection);
    connections_.erase(connections_.begin() + static_cast<std::ptrdiff_t>(i));

    // Flow rules must exist before the sender streams: set the path up before the reply.
    Result<RxPath> path = PlanRxPath(ready);
    if (!path.ok()) return path.status();
    ConnectionParams params;
    params.data_sockets = ready.first.data_sockets;
    params.worker_threads = std::min(config_.worker_threads, params.data_sockets);
    params.chunk_bytes = ready.first.chunk_bytes;
    // Inline payload arrives on the control stream, in host memory: a devmem RX connection
    // takes only small messages that way, so that the rest lands in the RX region.
    params.inline_bytes = path->mode == RxPath::Mode::kPlain
                              ? ready.first.inline_bytes
                              : std::min(ready.first.inline_bytes, kDevmemInlineBytes);
    params.proxy_bytes = config_.proxy_bytes;
    params.gpu_wait_limit = std::chrono::milliseconds(config_.gpu_consumer_timeout_ms);
    std::string description =
        Format("recv comm %s<-%s (%d data sockets, %d threads, %llu-byte chunks)",
               address_.ToString().c_str(), ready.peer.ToString().c_str(), params.data_sockets,
               params.worker_threads, static_cast<unsigned long long>(params.chunk_bytes));
    // The comm first, the reply after: a connection this side cannot turn into a comm (out
    // of fds, threads, memory) is closed unanswered, so the sender's connect fails as well and
    // both ends agree on which connections exist.
    const int control_fd = ready.control.get();
    Result<std::unique_ptr<RecvComm>> comm =
        RecvComm::Create(std::move(ready.control), std::move(ready.data), params,
                         std::move(description), std::move(path).value());
    if (!comm.ok()) {
      return comm.status().WithContext(
          Format("accepting the connection from %s (refused: the sender's connect fails too)",
                 ready.peer.ToString().c_str()));
    }
    wire::HelloReply reply;
    reply.code = wire::HelloReply::kAccepted;
    reply.nonce = nonce_;
    reply.inline_bytes = params.inline_bytes;
    uint8_t bytes[wire::HelloReply::kSize];
    reply.Encode(bytes);
    // A fresh socket's send buffer always has room for the 24-byte reply.
    if (send(control_fd, bytes, sizeof(bytes), MSG_DONTWAIT | MSG_NOSIGNAL) !=
        static_cast<ssize_t>(sizeof(bytes))) {
      return Status::Errno(errno, "sending the handshake reply to %s",
                           ready.peer.ToString().c_str());
    }
    return comm;
  }
  return std::unique_ptr<RecvComm>();
}

namespace {

// The GPU the calling thread works for (NCCL's proxy thread has its GPU's context current), or
// -1 without a CUDA driver, a device or a current context (then emulation uses host memory).
int ProxyGpu() {
  Result<const CudaDriver*> driver = CudaDriver::Get();
  if (!driver.ok()) return -1;
  Result<int> count = driver.value()->DeviceCount();
  if (!count.ok() || count.value() == 0) return -1;
  Result<int> current = driver.value()->CurrentDevice();
  return current.ok() ? current.value() : -1;
}

}  // namespace

Result<RxPath> ListenComm::PlanRxPath(const PendingConnection& connection) {
  RxPath path;
  path.unpack = config_.unpack;
  // NCCL keeps NCCL_STEPS (8) receives in flight, each of up to maxRecvs messages.
  path.scatter_slots = nccl::kSteps * static_cast<size_t>(config_.max_recvs);
  path.consumer_timeout = std::chrono::milliseconds(config_.gpu_consumer_timeout_ms);
  // A fallback to plain TCP is per connection and logged by the comm; under
  // NCCL_DEVMEM_REQUIRE=1 it is an error instead.
  auto fall_back = [&](const Status& why, const char* step) -> Result<RxPath> {
    if (config_.require_devmem) {
      return why.WithContext(std::string("NCCL_DEVMEM_REQUIRE=1 and ") + step + " failed for " +
                             connection.peer.ToString());
    }
    RxPath plain;
    plain.unpack = config_.unpack;
    plain.plain_reason = std::string(step) + " failed: " + why.message();
    return plain;
  };
  if (!plan_.plain_reason.empty()) {
    path.plain_reason = plan_.plain_reason;
    return path;
  }
  if (config_.emulate_devmem) {
    path.mode = RxPath::Mode::kEmulatedDevmem;
    path.mix.split_percent = config_.emulate_split_percent;
    path.mix.linear_percent = config_.emulate_linear_percent;
    path.geometry = plan_.geometry;
    // On a GPU host the region is GPU memory, like a NIC's; every comm of the GPU takes its
    // slice from the GPU's one arena, so NCCL's unpack sees one bounce buffer per GPU.
    const int gpu = ProxyGpu();
    Result<std::shared_ptr<RxArena>> arena = RxArena::Of(gpu, plan_.arena_bytes);
    if (!arena.ok()) return fall_back(arena.status(), "emulated devmem RX arena");
    Result<std::unique_ptr<RxRegion>> slice =
        arena.value()->Carve(plan_.region_bytes, /*writable=*/true);
    if (!slice.ok()) return fall_back(slice.status(), "emulated devmem RX region");
    path.region = std::move(slice).value();
    return path;
  }
  DevmemRxRequest request;
  request.nic = &device_;
  request.queues = plan_.queues;
  // The GPU whose memory receives: the one NCCL's proxy thread works for. Without a current
  // context nothing says which, and guessing GPU 0 would put another rank's payload there.
  request.gpu = ProxyGpu();
  if (request.gpu < 0) {
    return fall_back(Status::Error(ErrorKind::kSystem,
                                   "the accepting thread has no current CUDA context, so the "
                                   "GPU to receive into is unknown"),
                     "devmem RX setup");
  }
  request.region_bytes = plan_.region_bytes;
  request.arena_bytes = plan_.arena_bytes;
  request.budget = plan_.budget;
  request.geometry = plan_.geometry;
  request.rx_page_bytes = plan_.rx_page_bytes;
  request.require = config_.require_devmem;
  for (const UniqueFd& fd : connection.data) request.data_fds.push_back(fd.get());
  Status prepared = PrepareDevmemRx(request, &path);
  if (prepared.ok()) return path;
  return fall_back(prepared, "devmem RX setup");
}

// ---------------------------------------------------------------------------------------------

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
  connector->params_.proxy_bytes = config.proxy_bytes;
  connector->params_.gpu_wait_limit = std::chrono::milliseconds(config.gpu_consumer_timeout_ms);
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
