#include "plugin/setup/rx_setup.h"

#include <sys/socket.h>

#include <cerrno>
#include <map>
#include <mutex>
#include <utility>

#include "plugin/core/log.h"
#include "plugin/core/socket_address.h"
#include "plugin/core/unique_fd.h"
#include "plugin/cuda/dmabuf_export.h"
#include "plugin/devmem/flow_rule_lock.h"
#include "plugin/devmem/flow_steering.h"
#include "plugin/devmem/frag_receiver.h"
#include "plugin/devmem/host_registry.h"
#include "plugin/devmem/netdev_netlink.h"
#include "plugin/devmem/nic_ethtool.h"
#include "plugin/devmem/rx_arena.h"
#include "plugin/devmem/steering_miss_warning.h"
#include "plugin/setup/rx_queue_plan.h"

namespace devmem {
namespace {

struct NicGpuBinding {
  std::shared_ptr<RxRegion> region;  // this NIC's slice of the GPU's arena
  UniqueFd dmabuf;                   // the slice exported (the kernel holds its own reference)
  RxQueueBinding binding;
  std::vector<uint32_t> queues;  // this binder's share of the NIC's devmem pool
};

struct BoundQueues {
  RxQueueBinding binding;
  std::vector<uint32_t> queues;
};

// The NIC's rule table and the host registry, one per NIC for the process. The first use reaps
// what dead ranks left on the NIC (their rules, their queue claims) before anything is chosen.
Result<SteeringContext> SteeringFor(const NetDevice& nic) {
  static std::mutex mutex;
  static auto& contexts = *new std::map<int, SteeringContext>();  // NOLINT: lives for the process
  std::lock_guard<std::mutex> lock(mutex);
  if (auto it = contexts.find(nic.ifindex); it != contexts.end()) return it->second;
  Result<std::shared_ptr<HostRegistry>> registry = HostRegistry::Open();
  if (!registry.ok()) return registry.status();
  SteeringContext context{std::make_shared<EthtoolNtupleTable>(nic.name), registry.value(), {}};
  // A cleanup that fails (a lock held too long, an ioctl refused) costs the table some room,
  // not this process its devmem: say so, and go on.
  Result<ReapOutcome> reaped = ReapDeadOwners(context);
  if (!reaped.ok()) {
    log::Warn(
        "%s: cleaning up the flow rules of dead ranks: %s; going on without (a full rule "
        "table retries it, and so does devmem-doctor --cleanup)",
        nic.name.c_str(), reaped.status().message().c_str());
  } else if (!reaped->removed.empty() || !reaped->vanished.empty() || !reaped->released.empty()) {
    log::Info(log::kInit, "%s: %s", nic.name.c_str(), reaped->ToString().c_str());
  }
  contexts.emplace(nic.ifindex, context);
  return context;
}

// Binds the slice to this (NIC, GPU, process)'s share of the NIC's devmem queue pool (request.
// queues), chosen and bound under the NIC's lock so that no other rank of the netns takes the
// same queues (rx_queue_plan.h), and records the claim for the doctor.
Result<BoundQueues> BindFreeQueues(const DevmemRxRequest& request, int dmabuf_fd) {
  const NetDevice& nic = *request.nic;
  Result<SteeringContext> steering = SteeringFor(nic);
  if (!steering.ok()) return steering.status();
  HostRegistry& registry = *steering->registry;
  Result<FlowRuleLock> lock = FlowRuleLock::Acquire(nic.name, steering->locking);
  if (!lock.ok()) return lock.status();
  Result<NetdevNetlink> netdev = NetdevNetlink::Open();
  if (!netdev.ok()) return netdev.status();
  Result<std::vector<RxQueueInfo>> rx = netdev->RxQueues(nic.ifindex);
  if (!rx.ok()) return rx.status();
  const size_t share = QueuesPerBinder(request.queues.size(), GpusNearNic(nic.pci_path));
  Result<std::vector<uint32_t>> chosen =
      ChooseQueuesForBinder(registry, nic.name, request.queues, rx.value(), share);
  if (!chosen.ok()) return chosen.status();
  Result<RxQueueBinding> bound =
      RxQueueBinding::Bind(nic.ifindex, dmabuf_fd, chosen.value(), request.rx_page_bytes);
  if (!bound.ok()) return bound.status();
  if (Status recorded = RecordQueueClaims(registry, nic.name, chosen.value(), request.gpu);
      !recorded.ok()) {
    log::Warn(
        "%s: recording the claim of RX queue(s) %s: %s (devmem-doctor will not name their "
        "holder)",
        nic.name.c_str(), JoinQueueIds(chosen.value()).c_str(), recorded.message().c_str());
  }
  log::Info(log::kInit, "%s: GPU %d takes RX queue(s) %s of the devmem pool %s", nic.name.c_str(),
            request.gpu, JoinQueueIds(chosen.value()).c_str(),
            JoinQueueIds(request.queues).c_str());
  return BoundQueues{std::move(bound).value(), chosen.value()};
}

// Bindings live for the process: the NIC's page pool then keeps its memory across comms, and
// a queue is never rebound (which restarts it) while other comms receive on it. The map is
// never destroyed: freeing GPU memory from a static destructor could run after the CUDA
// driver's own teardown; at exit the kernel unbinds when the netlink sockets close and the
// driver releases the memory.
Result<std::shared_ptr<NicGpuBinding>> BindingFor(const DevmemRxRequest& request) {
  static std::mutex mutex;
  static auto& bindings =
      *new std::map<std::pair<int, int>, std::shared_ptr<NicGpuBinding>>();  // NOLINT
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(request.nic->ifindex, request.gpu);
  if (auto it = bindings.find(key); it != bindings.end()) return it->second;
  Result<std::shared_ptr<RxArena>> arena = RxArena::Of(request.gpu, request.arena_bytes);
  if (!arena.ok()) return arena.status();
  Result<std::unique_ptr<RxRegion>> slice =
      arena.value()->Carve(request.region_bytes, /*writable=*/false);
  if (!slice.ok()) return slice.status().WithContext("devmem RX region for " + request.nic->name);
  std::shared_ptr<RxRegion> region(std::move(slice).value());
  // Each dmabuf mapping in turn until bind-rx attaches one (N2, plugin/cuda/dmabuf_export.h);
  // each attempt binds this binder's share of the free queues under the host-wide lock (N4).
  Result<DmabufExporter> exporter = DmabufExporter::ForNicReceive(
      request.gpu, region->device_base(), region->bytes(),
      "GPU " + std::to_string(request.gpu) + "'s RX region for " + request.nic->name);
  if (!exporter.ok()) {
    return exporter.status().WithContext("dmabuf of the RX region for " + request.nic->name);
  }
  Result<AttachedDmabuf<BoundQueues>> bound = AttachDmabuf<BoundQueues>(
      std::move(exporter).value(),
      [&request](int fd) { return BindFreeQueues(request, fd); });
  if (!bound.ok()) {
    return bound.status().WithContext(
        "bind-rx on " + request.nic->name +
        (request.rx_page_bytes != 0
             ? Format(" with NCCL_DEVMEM_RX_PAGE_SIZE=%u (kernels before 7.x refuse the "
                      "attribute; a driver without the queue setting refuses the size)",
                      request.rx_page_bytes)
             : std::string()));
  }
  auto entry = std::make_shared<NicGpuBinding>(
      NicGpuBinding{std::move(region), std::move(bound->dmabuf),
                    std::move(bound->attachment.binding), bound->attachment.queues});
  log::Info(log::kInit,
            "%s: bytes [%llu, +%llu) of GPU %d's %llu-byte RX arena bound to RX queue(s) as "
            "dmabuf id %u; %s",
            request.nic->name.c_str(),
            static_cast<unsigned long long>(entry->region->bounce_offset()),
            static_cast<unsigned long long>(entry->region->bytes()), request.gpu,
            static_cast<unsigned long long>(arena.value()->bytes()), entry->binding.dmabuf_id(),
            request.budget.c_str());
  bindings.emplace(key, entry);
  return entry;
}

Result<SocketAddress> Endpoint(int fd, bool peer) {
  sockaddr_storage storage{};
  socklen_t len = sizeof(storage);
  int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&storage), &len)
                : getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &len);
  if (rc != 0) return Status::Errno(errno, peer ? "getpeername" : "getsockname");
  return SocketAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&storage), len);
}

}  // namespace

Status PrepareDevmemRx(const DevmemRxRequest& request, RxPath* path) {
  if (request.nic == nullptr || request.queues.empty()) {
    return Status::Error(ErrorKind::kInternal, "devmem RX without a NIC or queues");
  }
  Result<std::shared_ptr<NicGpuBinding>> binding = BindingFor(request);
  if (!binding.ok()) return binding.status();
  Result<SteeringContext> steering = SteeringFor(*request.nic);
  if (!steering.ok()) return steering.status();
  std::vector<std::unique_ptr<FragReceiver>> receivers;
  std::vector<std::shared_ptr<void>> rules;
  // One for the comm: a steering miss WARNs once for all its data sockets (N8).
  auto steering_miss = std::make_shared<SteeringMissWarning>(request.data_fds.size());
  for (size_t i = 0; i < request.data_fds.size(); ++i) {
    const int fd = request.data_fds[i];
    Result<SocketAddress> local = Endpoint(fd, false);
    if (!local.ok()) return local.status();
    Result<SocketAddress> remote = Endpoint(fd, true);
    if (!remote.ok()) return remote.status();
    const std::vector<uint32_t>& bound = binding.value()->queues;
    const uint32_t queue = bound[i % bound.size()];
    Result<FlowSteeringRule> rule =
        FlowSteeringRule::Install(steering.value(), local.value(), remote.value(), queue);
    if (!rule.ok()) return rule.status();  // names the flow, the queue and the ioctl
    rules.push_back(std::make_shared<FlowSteeringRule>(std::move(rule).value()));
    RegionBinding region_binding;
    region_binding.dmabuf_id = binding.value()->binding.dmabuf_id();
    region_binding.region_bytes = binding.value()->region->bytes();
    region_binding.niov_bytes = request.geometry.niov_bytes();
    SteeringExpectation expected;
    expected.flow = local->ToString() + " <- " + remote->ToString();
    expected.nic = request.nic->name;
    expected.queue = queue;
    expected.required = request.require;
    expected.warning = steering_miss;
    receivers.push_back(std::make_unique<DevmemFragReceiver>(
        region_binding, request.geometry, TokenBatch::KernelRelease, std::move(expected)));
  }
  path->mode = RxPath::Mode::kDevmem;
  path->region = binding.value()->region;
  path->receivers = std::move(receivers);
  path->keep_alive = std::move(rules);
  path->keep_alive.push_back(binding.value());
  return Status::Ok();
}

}  // namespace devmem
