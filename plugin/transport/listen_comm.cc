// The receiving side of connection setup: a ListenComm accepts and validates incoming sockets
// (listener_admission.h), groups them into connections and turns each into a RecvComm with its
// receive path (devmem, emulated or plain TCP).
#include "plugin/transport/listen_comm.h"

#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "plugin/core/log.h"
#include "plugin/core/nccl_contract.h"
#include "plugin/cuda/cuda_driver.h"
#include "plugin/devmem/rx_arena.h"
#include "plugin/setup/rx_setup.h"
#include "plugin/transport/socket_setup.h"
#include "plugin/transport/source_route.h"

namespace devmem {

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
    params.gpu_work_limit = std::chrono::milliseconds(config_.gpu_consumer_timeout_ms);
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
  path.gpu_work_limit = std::chrono::milliseconds(config_.gpu_consumer_timeout_ms);
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

}  // namespace devmem
