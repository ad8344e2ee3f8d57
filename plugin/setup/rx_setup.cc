#include "plugin/setup/rx_setup.h"

#include <sys/socket.h>

#include <cerrno>
#include <map>
#include <mutex>
#include <utility>

#include "plugin/core/log.h"
#include "plugin/core/socket_address.h"
#include "plugin/cuda/gpu_region.h"
#include "plugin/devmem/frag_receiver.h"
#include "plugin/devmem/netdev_netlink.h"
#include "plugin/devmem/nic_ethtool.h"

namespace devmem {
namespace {

struct NicGpuBinding {
  std::shared_ptr<GpuRegion> region;
  RxQueueBinding binding;
};

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
  Result<std::unique_ptr<GpuRegion>> region = GpuRegion::Create(request.gpu, request.region_bytes);
  if (!region.ok())
    return region.status().WithContext("devmem RX region on GPU " + std::to_string(request.gpu));
  std::shared_ptr<GpuRegion> shared_region(std::move(region).value());
  Result<RxQueueBinding> bound =
      RxQueueBinding::Bind(request.nic->ifindex, shared_region->dmabuf_fd(), request.queues);
  if (!bound.ok()) return bound.status().WithContext("bind-rx on " + request.nic->name);
  auto entry = std::make_shared<NicGpuBinding>(
      NicGpuBinding{std::move(shared_region), std::move(bound).value()});
  log::Info(log::kInit, "%s: %llu-byte GPU %d region bound to RX queue(s) as dmabuf id %u",
            request.nic->name.c_str(), static_cast<unsigned long long>(entry->region->bytes()),
            request.gpu, entry->binding.dmabuf_id());
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
  std::vector<std::unique_ptr<FragReceiver>> receivers;
  std::vector<std::shared_ptr<void>> rules;
  for (size_t i = 0; i < request.data_fds.size(); ++i) {
    const int fd = request.data_fds[i];
    Result<SocketAddress> local = Endpoint(fd, false);
    if (!local.ok()) return local.status();
    Result<SocketAddress> remote = Endpoint(fd, true);
    if (!remote.ok()) return remote.status();
    const uint32_t queue = request.queues[i % request.queues.size()];
    Result<FlowSteeringRule> rule =
        FlowSteeringRule::Install(request.nic->name, local.value(), remote.value(), queue);
    if (!rule.ok()) {
      return rule.status().WithContext("steering " + remote->ToString() + " -> " +
                                       local->ToString() + " to RX queue " + std::to_string(queue));
    }
    rules.push_back(std::make_shared<FlowSteeringRule>(std::move(rule).value()));
    RegionBinding region_binding;
    region_binding.dmabuf_id = binding.value()->binding.dmabuf_id();
    region_binding.region_bytes = binding.value()->region->bytes();
    receivers.push_back(std::make_unique<DevmemFragReceiver>(region_binding));
  }
  path->mode = RxPath::Mode::kDevmem;
  path->bound_region = WrapBoundGpuRegion(binding.value()->region, request.gpu);
  path->receivers = std::move(receivers);
  path->keep_alive = std::move(rules);
  path->keep_alive.push_back(binding.value());
  return Status::Ok();
}

}  // namespace devmem
