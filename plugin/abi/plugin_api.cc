#include "plugin/abi/plugin_api.h"

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "plugin/abi/handles.h"
#include "plugin/consumers/unpack_queue.h"
#include "plugin/core/config.h"
#include "plugin/core/log.h"
#include "plugin/core/net_device.h"
#include "plugin/core/version.h"
#include "plugin/cuda/cuda_driver.h"
#include "plugin/devmem/rx_region.h"
#include "plugin/observe/metrics_writer.h"
#include "plugin/setup/device_table.h"
#include "plugin/setup/nccl_env_guards.h"
#include "plugin/setup/readiness.h"
#include "plugin/setup/rx_plan.h"
#include "plugin/setup/tx_setup.h"
#include "plugin/transport/comm.h"
#include "plugin/transport/connector.h"
#include "plugin/transport/listen_comm.h"

namespace devmem::api {
namespace {

struct PluginState {
  std::mutex mutex;
  bool ready = false;
  Config config;
  // Physical NICs (each with its receive plan: devmem RX, real or emulated, or plain TCP and
  // why), then the virtual NICs makeVDevice fused.
  DeviceTable devices;
  // Receive buffers may be CUDA memory (a GPU consumer reads the RX region).
  bool gpu_present = false;
};

PluginState& State() {
  static PluginState state;
  return state;
}

const char* EnvLookup(const char* name) { return getenv(name); }  // NOLINT(concurrency-mt-unsafe)

abi::Result ToResult(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kOk:
      return abi::kSuccess;
    case ErrorKind::kSystem:
      return abi::kSystemError;
    case ErrorKind::kInternal:
      return abi::kInternalError;
    case ErrorKind::kInvalidArgument:
      return abi::kInvalidArgument;
    case ErrorKind::kInvalidUsage:
      return abi::kInvalidUsage;
    case ErrorKind::kRemote:
      return abi::kRemoteError;
  }
  return abi::kInternalError;
}

// The single place an internal failure becomes a log line and an ncclResult_t.
abi::Result Report(const char* call, const Status& status) {
  if (status.ok()) return abi::kSuccess;
  log::Warn("%s failed: %s", call, status.message().c_str());
  return ToResult(status.kind());
}

abi::Result Invalid(const char* call, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
abi::Result Invalid(const char* call, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::string text = FormatV(fmt, args);
  va_end(args);
  return Report(call, Status::Error(ErrorKind::kInvalidArgument, "%s", text.c_str()));
}

// Checks the device index against the table; returns the entry or null. Entries never move
// and never change once made, so the pointer stays good after the lock is released.
const DeviceEntry* DeviceAt(int dev) {
  PluginState& state = State();
  std::lock_guard<std::mutex> lock(state.mutex);
  if (!state.ready) return nullptr;
  return state.devices.At(dev);
}

// A device's member NICs (one for a physical NIC).
std::vector<NetDevice> MembersOf(const DeviceEntry& entry) {
  PluginState& state = State();
  std::lock_guard<std::mutex> lock(state.mutex);
  std::vector<NetDevice> members;
  for (int m : entry.members) members.push_back(state.devices.Physical(m));
  return members;
}

}  // namespace

abi::Result Init(abi::DebugLogger logger, int table_version) {
  if (logger != nullptr) log::SetLogger(logger);
  PluginState& state = State();
  std::lock_guard<std::mutex> lock(state.mutex);
  if (state.ready) return abi::kSuccess;
  log::Info(log::kInit, "nccl-net-devmem %s: init through the v%d table", kVersion,
            table_version);
  Result<Config> config = Config::FromEnvironment(EnvLookup);
  if (!config.ok()) return Report("init", config.status());
  config->LogValues(EnvLookup);
  Result<std::vector<NetDevice>> devices =
      DiscoverDevices(config->socket_ifname, config->socket_family);
  if (!devices.ok()) return Report("init", devices.status());
  for (size_t i = 0; i < devices->size(); ++i) {
    const NetDevice& d = devices.value()[i];
    log::Info(log::kInit, "NIC %zu: %s %s, %d Mb/s, pci %s", i, d.name.c_str(),
              d.address.ToString().c_str(), d.speed_mbps,
              d.pci_path.empty() ? "(virtual)" : d.pci_path.c_str());
  }
  // NCCL 2.20-2.23 load at most ncclNetPlugin_v8 and never preset LL/LL128 receives with
  // NCCL_NET_OPTIONAL_RECV_COMPLETION (it first appears in src/transport/net.cc of 2.24.3, which
  // loads v9+): every LL receive would claim an unpack slot NCCL's kernel never reads.
  if (config->unpack == UnpackMode::kNccl && table_version < 9) {
    log::Warn(
        "NCCL_DEVMEM_UNPACK=nccl: NCCL loaded the plugin through ncclNetPlugin_v%d "
        "(NCCL < 2.24), which does not mark LL receives; NCCL's device unpack would read "
        "the wrong steps, so the plugin's scatter kernel consumes every receive instead",
        table_version);
    config->unpack = UnpackMode::kPlugin;
  }
  // Without this hint NCCL's LL/LL128 receives cannot be told from SIMPLE steps, and only the
  // latter are read by NCCL's unpack kernels.
  if (const char* hint = EnvLookup("NCCL_NET_OPTIONAL_RECV_COMPLETION");
      config->unpack == UnpackMode::kNccl && hint != nullptr && strcmp(hint, "0") == 0) {
    log::Warn(
        "NCCL_DEVMEM_UNPACK=nccl needs NCCL_NET_OPTIONAL_RECV_COMPLETION (it tells LL "
        "receives apart, which NCCL's unpack does not read); it is 0, so the plugin's "
        "scatter kernel consumes every receive instead");
    config->unpack = UnpackMode::kPlugin;
  }
  // Emulation puts its region in GPU memory where a GPU exists (readiness checks the GPUs of
  // the real path itself).
  bool gpu_present = false;
  if (config->emulate_devmem) {
    if (Result<const CudaDriver*> cuda = CudaDriver::Get(); cuda.ok()) {
      Result<int> count = cuda.value()->DeviceCount();
      gpu_present = count.ok() && count.value() > 0;
    }
  }
  // Mode selection: the same checks as devmem-doctor, once per process and NIC.
  std::vector<RxPlan> plans = PlanReceivePaths(&config.value(), devices.value(), gpu_present);
  // NCCL settings the GPU receive path cannot live with (see plugin/setup/nccl_env_guards.h).
  const bool gpu_rx = !config->emulate_devmem || gpu_present;
  // Devmem TX: per NIC, once (tx_setup.h); needs a GPU whose memory exports as a dmabuf.
  std::vector<std::string> tx_reasons = PlanTransmitPaths(devices.value());
  std::vector<NicEnvFacts> facts(devices->size());
  for (size_t i = 0; i < facts.size(); ++i) {
    const bool devmem_rx = i < plans.size() && plans[i].plain_reason.empty();
    facts[i].gpu_rx_region = devmem_rx && gpu_rx;
    facts[i].unpack = devmem_rx && config->unpack == UnpackMode::kNccl;
    facts[i].devmem_tx = i < tx_reasons.size() && tx_reasons[i].empty();
  }
  const NcclEnvNeeds needs = NeedsOf(facts);
  const NcclEnvPlan env_plan = PlanNcclEnvGuards(needs, EnvLookup);
  // A user value NCCL's unpack cannot live with: the plugin's consumer takes every receive.
  if (env_plan.unpack_unsafe) config->unpack = UnpackMode::kPlugin;
  ApplyNcclEnvGuards(env_plan);
  if (!config->metrics_file.empty()) {
    // Before any comm exists: every comm registers its counters from its start.
    Status started = observe::StartProcessMetrics(
        config->metrics_file, std::chrono::milliseconds(config->metrics_interval_ms));
    if (!started.ok()) return Report("init", started);
  }
  state.config = config.value();
  state.devices = DeviceTable(std::move(devices).value(), std::move(plans), config->rails,
                              std::move(tx_reasons));
  state.gpu_present = gpu_present;
  state.ready = true;
  return abi::kSuccess;
}

abi::Result InitContext(void** ctx, uint64_t comm_id, const abi::CommConfigV10* config,
                        abi::DebugLogger logger) {
  if (ctx == nullptr) return Invalid("init", "ctx output pointer is NULL");
  if (abi::Result r = Init(logger, 11); r != abi::kSuccess) return r;
  auto context = std::make_unique<PluginContext>();
  context->comm_id = comm_id;
  context->traffic_class = config != nullptr ? config->trafficClass : -1;
  Result<void*> handle = Publish(std::move(context));
  if (!handle.ok()) return Report("init", handle.status());
  *ctx = handle.value();
  return abi::kSuccess;
}

abi::Result FinalizeContext(void* ctx) {
  if (Withdraw<PluginContext>(ctx) == nullptr) {
    return Invalid("finalize", "unknown context %p (finalized already, or not a context)", ctx);
  }
  observe::RequestMetricsWrite();  // NCCL_DEVMEM_METRICS_FILE: the counts as NCCL leaves
  return abi::kSuccess;
}

abi::Result SetNetAttr(void* ctx, abi::NetAttrV11* attr) {
  const PluginContext* context = Find<PluginContext>(ctx);
  if (context == nullptr || attr == nullptr) {
    return Invalid("setNetAttr", "unknown context %p or NULL attributes", ctx);
  }
  // Hints only: our socket and thread counts come from NCCL_DEVMEM_* and stay fixed per comm.
  log::Trace("comm %llx: net attributes: send peers %d..%d, recv peers %d..%d",
             static_cast<unsigned long long>(context->comm_id),
             attr->sendCommAttr.minConcurrentPeers, attr->sendCommAttr.maxConcurrentPeers,
             attr->recvCommAttr.minConcurrentPeers, attr->recvCommAttr.maxConcurrentPeers);
  return abi::kSuccess;
}

abi::Result Devices(int* ndev) {
  if (ndev == nullptr) return Invalid("devices", "ndev is NULL");
  PluginState& state = State();
  std::lock_guard<std::mutex> lock(state.mutex);
  if (!state.ready) {
    return Report("devices", Status::Error(ErrorKind::kInvalidUsage, "called before init"));
  }
  *ndev = static_cast<int>(state.devices.size());  // physical, then virtual
  return abi::kSuccess;
}

abi::Result GetProperties(int dev, DeviceProperties* props) {
  const DeviceEntry* device = DeviceAt(dev);
  if (device == nullptr || props == nullptr) {
    return Invalid("getProperties", "device %d does not exist (or props is NULL)", dev);
  }
  const Config& config = State().config;
  const std::vector<NetDevice> members = MembersOf(*device);
  props->name = device->name.c_str();
  props->pci_path = device->pci_path.empty() ? nullptr : device->pci_path.c_str();
  // A virtual NIC's is its first member's, like NCCL's IB vNICs (v2.30.7
  // src/transport/net_ib/init.cc:579); NCCL tells devices apart by
  // index and name, and a physical NIC is in at most one virtual NIC.
  props->guid = static_cast<uint64_t>(members[0].ifindex);
  props->rail_id = device->rail;
  props->plane_id = device->plane;
  props->member_count = static_cast<int>(device->members.size());
  for (size_t i = 0; i < device->members.size() && i < kMaxMembers; ++i) {
    props->members[i] = device->members[i];
  }
  const RxPlan& plan = device->plan;
  const bool devmem_rx = plan.plain_reason.empty();
  // CUDA buffers only where a GPU consumer reads the RX region; on the plain path NCCL's own
  // host FIFO is cheaper than our staging.
  const bool gpu_rx = devmem_rx && (!config.emulate_devmem || State().gpu_present);
  // Devmem TX sends CUDA buffers from GPU memory: NCCL may keep its send buffers there.
  props->ptr_support = abi::kPtrHost | (gpu_rx || device->devmem_tx() ? abi::kPtrCuda : 0);
  props->speed_mbps = device->speed_mbps;  // a virtual NIC: its members' sum
  props->port = 0;
  props->latency_us = 0;
  props->max_comms = 65536;
  props->max_recvs = config.max_recvs;
  props->max_message_bytes = abi::kMaxNetSize;
  if (gpu_rx || (devmem_rx && config.unpack == UnpackMode::kNccl)) {
    // A GPU consumer holds a whole message in the RX region until it ran; a quarter of the
    // region per message keeps the page pool from deadlocking. NCCL splits p2p sends at
    // maxP2pBytes; maxCollBytes does not cap collective steps (NCCL 2.28 reads it only in
    // coll_net.cc), which is why init checks NCCL_BUFFSIZE against the region (rx_plan.cc).
    props->max_message_bytes = MaxHeldMessageBytes(plan.region_bytes);
  }
  if (devmem_rx && config.unpack == UnpackMode::kNccl) {
    // One receive per NCCL step, each within one unpack slot.
    props->net_device_type = abi::kDeviceUnpack;
    props->net_device_version = unpack::kDeviceVersion;
    props->max_recvs = 1;
    props->max_message_bytes = std::min<size_t>(props->max_message_bytes, unpack::kMaxSliceBytes);
  }
  return abi::kSuccess;
}

abi::Result Listen(int dev, void* handle, void** listen_comm) {
  const DeviceEntry* device = DeviceAt(dev);
  if (device == nullptr || handle == nullptr || listen_comm == nullptr) {
    return Invalid("listen", "device %d does not exist, or handle/listenComm is NULL", dev);
  }
  *listen_comm = nullptr;
  const RxPlan& plan = device->plan;
  const std::string& plain_reason = plan.plain_reason;
  if (State().config.require_devmem && !plain_reason.empty()) {
    return Report("listen", Status::Error(ErrorKind::kSystem,
                                          "NCCL_DEVMEM_REQUIRE=1 but devmem RX is unavailable on "
                                          "%s: %s",
                                          device->name.c_str(), plain_reason.c_str()));
  }
  std::vector<NetDevice> members = MembersOf(*device);
  const std::vector<NetDevice> others(members.begin() + 1, members.end());
  Result<std::unique_ptr<ListenComm>> comm =
      ListenComm::Create(members[0], State().config, static_cast<uint8_t*>(handle), plan, others);
  if (!comm.ok()) return Report("listen", comm.status());
  Result<void*> published = Publish(std::move(comm).value());
  if (!published.ok()) return Report("listen", published.status());
  *listen_comm = published.value();
  return abi::kSuccess;
}

abi::Result Connect(int dev, void* handle, void** send_comm, abi::DeviceHandleV7** /*dev_comm*/) {
  const DeviceEntry* device = DeviceAt(dev);
  if (device == nullptr || handle == nullptr || send_comm == nullptr) {
    return Invalid("connect", "device %d does not exist, or handle/sendComm is NULL", dev);
  }
  *send_comm = nullptr;
  auto* bytes = static_cast<uint8_t*>(handle);
  Result<wire::ListenHandle> decoded = wire::ListenHandle::Decode(bytes);
  if (!decoded.ok()) return Report("connect", decoded.status());

  // A connect still in progress parks its Connector in the handle NCCL calls us again with; a
  // slot that names no live connector (zeroed, copied from an old handle) starts a new one.
  void* parked = nullptr;
  memcpy(&parked, bytes + wire::ListenHandle::kConnectorSlotOffset, sizeof(parked));
  std::unique_ptr<Connector> connector = Withdraw<Connector>(parked);
  void* none = nullptr;
  memcpy(bytes + wire::ListenHandle::kConnectorSlotOffset, &none, sizeof(none));
  if (!connector) {
    // Every socket leaves from its NIC's address; a virtual NIC's from each member's in turn
    // (connector.h, DataSocketsFor).
    const std::vector<NetDevice> local = MembersOf(*device);
    TxChoice tx;
    if (device->devmem_tx()) {
      tx.ifindex = local[0].ifindex;
    } else {
      tx.reason = device->name + ": " + device->tx_reason;
    }
    Result<std::unique_ptr<Connector>> started =
        Connector::Start(decoded.value(), State().config, local, tx);
    if (!started.ok()) return Report("connect", started.status());
    connector = std::move(started).value();
  }
  Result<std::unique_ptr<SendComm>> comm = connector->Progress();
  if (!comm.ok()) return Report("connect", comm.status());
  if (comm.value() == nullptr) {
    Result<void*> handle = Publish(std::move(connector));
    if (!handle.ok()) return Report("connect", handle.status());
    memcpy(bytes + wire::ListenHandle::kConnectorSlotOffset, &handle.value(), sizeof(void*));
    return abi::kSuccess;
  }
  Result<void*> published = Publish(std::move(comm).value());
  if (!published.ok()) return Report("connect", published.status());
  *send_comm = published.value();
  return abi::kSuccess;
}

abi::Result Accept(void* listen_comm, void** recv_comm, abi::DeviceHandleV7** dev_comm) {
  ListenComm* listener = Find<ListenComm>(listen_comm);
  if (listener == nullptr || recv_comm == nullptr) {
    return Invalid("accept", "unknown listen comm %p or NULL recvComm", listen_comm);
  }
  *recv_comm = nullptr;
  Result<std::unique_ptr<RecvComm>> comm = listener->Accept();
  if (!comm.ok()) return Report("accept", comm.status());
  if (comm.value() == nullptr) return abi::kSuccess;  // no connection complete yet
  const RecvComm& accepted = *comm.value();
  if (dev_comm != nullptr && *dev_comm != nullptr) {
    // NCCL asks for device offload (we advertised UNPACK). NCCL copies this struct into the
    // channel by value once accept returns success, so it is final here.
    abi::DeviceHandleV7* handle = *dev_comm;
    handle->needsProxyProgress = 1;  // NCCL's proxy still posts irecv/test for us
    if (accepted.unpack_device_handle() != nullptr) {
      handle->netDeviceType = abi::kDeviceUnpack;
      handle->netDeviceVersion = abi::kDeviceUnpackVersion;
      handle->handle = accepted.unpack_device_handle();
      handle->size = accepted.unpack_device_handle_bytes();
    } else {
      // This connection fell back to plain TCP: its data lands in NCCL's buffer itself, so
      // NCCL's kernels must treat it as a host-type connection.
      handle->netDeviceType = abi::kDeviceHost;
      handle->netDeviceVersion = 0;
      handle->handle = nullptr;
      handle->size = 0;
      log::Info(log::kNet, "%s: no device unpack on this connection (plain TCP)",
                accepted.description().c_str());
    }
  }
  Result<void*> published = Publish(std::move(comm).value());
  if (!published.ok()) return Report("accept", published.status());
  *recv_comm = published.value();
  return abi::kSuccess;
}

abi::Result RegMr(void* comm, void* data, size_t size, int type, void** mhandle) {
  Comm* owner = AnyComm(comm);
  if (owner == nullptr || mhandle == nullptr) {
    return Invalid("regMr", "unknown comm %p or NULL mhandle", comm);
  }
  Result<MemoryRegion*> region = owner->Register(data, size, type);
  if (!region.ok()) return Report("regMr", region.status());
  // The comm's handle owns the registration: closing the comm removes it too.
  Result<void*> handle = Publish(std::unique_ptr<MemoryRegion>(region.value()), comm);
  if (!handle.ok()) return Report("regMr", handle.status());
  *mhandle = handle.value();
  return abi::kSuccess;
}

abi::Result RegMrDmaBuf(void* comm, void* data, size_t size, int type, uint64_t /*offset*/,
                        int /*fd*/, void** mhandle) {
  // We do not advertise NCCL_PTR_DMABUF on the plain path, so the buffer is reached through
  // its virtual address like regMr; the dmabuf fd is not needed (NCCL closes it afterwards).
  return RegMr(comm, data, size, type, mhandle);
}

abi::Result DeregMr(void* comm, void* mhandle) {
  if (AnyComm(comm) == nullptr) return Invalid("deregMr", "unknown comm %p", comm);
  // NCCL's deregister path (net.cc *ProxyDeregBuffer) forwards the handle of a registration that
  // failed, NULL, like free(NULL).
  if (mhandle == nullptr) return abi::kSuccess;
  auto* region = static_cast<MemoryRegion*>(Handles().Remove(mhandle, HandleKind::kMemory, comm));
  if (region == nullptr) {
    return Invalid("deregMr",
                   "mhandle %p is not a live registration of comm %p (deregistered already, "
                   "another comm's, or not an mhandle)",
                   mhandle, comm);
  }
  delete region;
  return abi::kSuccess;
}

abi::Result Isend(void* send_comm, void* data, size_t size, int tag, void* mhandle,
                  void** request, void* phandle) {
  SendComm* comm = Find<SendComm>(send_comm);
  if (comm == nullptr || request == nullptr) {
    return Invalid("isend", "unknown send comm %p or NULL request", send_comm);
  }
  *request = nullptr;
  const MemoryRegion* region = Find<MemoryRegion>(mhandle);
  if (mhandle != nullptr && region == nullptr) {
    return Invalid("isend", "unknown mhandle %p on send comm %p", mhandle, send_comm);
  }
  Result<Request*> posted = comm->PostSend(data, size, tag, region, phandle);
  if (!posted.ok()) return Report("isend", posted.status());
  if (posted.value() != nullptr) *request = RequestHandle(send_comm, comm, posted.value());
  return abi::kSuccess;
}

abi::Result Irecv(void* recv_comm, int n, void** data, const size_t* sizes, int* tags,
                  void** mhandles, void** request, void** phandles) {
  RecvComm* comm = Find<RecvComm>(recv_comm);
  if (comm == nullptr || request == nullptr || data == nullptr || sizes == nullptr ||
      tags == nullptr) {
    return Invalid("irecv", "unknown recv comm %p or NULL argument arrays", recv_comm);
  }
  if (n < 1 || n > kMaxRecvsLimit) {
    return Invalid("irecv", "n=%d outside [1, %d] on recv comm %p", n, kMaxRecvsLimit, recv_comm);
  }
  MemoryRegion* regions[kMaxRecvsLimit] = {};
  for (int i = 0; mhandles != nullptr && i < n; ++i) {
    regions[i] = Find<MemoryRegion>(mhandles[i]);
    if (mhandles[i] != nullptr && regions[i] == nullptr) {
      return Invalid("irecv", "unknown mhandle %p (buffer %d) on recv comm %p", mhandles[i], i,
                     recv_comm);
    }
  }
  // NCCL presets *request to 0x1 (NCCL_NET_OPTIONAL_RECV_COMPLETION) for LL/LL128 receives:
  // compared, never dereferenced. It tells NCCL-unpack comms which receives NCCL's unpack
  // kernels will not read.
  const bool ll_hint = *request == reinterpret_cast<void*>(abi::kOptionalRecvCompletion);
  *request = nullptr;
  Result<Request*> posted = comm->PostRecv(n, data, sizes, tags, regions, ll_hint, phandles);
  if (!posted.ok()) return Report("irecv", posted.status());
  if (posted.value() != nullptr) *request = RequestHandle(recv_comm, comm, posted.value());
  return abi::kSuccess;
}

abi::Result Iflush(void* recv_comm, int /*n*/, void** /*data*/, int* /*sizes*/, void** /*mhandles*/,
                   void** request) {
  if (Find<RecvComm>(recv_comm) == nullptr || request == nullptr) {
    return Invalid("iflush", "unknown recv comm %p or NULL request", recv_comm);
  }
  // NCCL asks once test() reported the receive done (v2.28.9 src/transport/net.cc:1510-1563),
  // and by then nothing the NIC wrote is unordered: the NIC never writes NCCL's buffers (plain
  // TCP reaches CUDA buffers through a synchronous copy; devmem RX lands in the plugin's RX
  // region), and the consumers that read the RX region on the GPU ran the GPU's NicWriteBarrier
  // (plugin/cuda/nic_write_ordering.h) before launching the scatter kernel or publishing an
  // unpack step, both before test() can report done. A flush here would flush the same writes
  // twice.
  *request = nullptr;
  return abi::kSuccess;
}

abi::Result Test(void* request, int* done, int* sizes) {
  LiveRequest live;
  if (!FindRequest(request, &live) || done == nullptr) {
    return Invalid("test",
                   "unknown request %p (its comm is closed, or it is not a request) or NULL done",
                   request);
  }
  Request* req = live.request;
  if (!req->in_use()) {
    return Report("test", Status::Error(ErrorKind::kInvalidUsage,
                                        "request %p was already completed", request));
  }
  bool finished = false;
  Status status = live.send != nullptr ? live.send->Test(req, &finished, sizes)
                                       : live.recv->Test(req, &finished, sizes);
  *done = finished ? 1 : 0;
  // NCCL never tests a failed request again: its profiler events end here.
  if (!status.ok()) req->comm->EndProfiledMessages(req, /*failed=*/true);
  return Report("test", status);
}

abi::Result CloseSend(void* send_comm) {
  if (Withdraw<SendComm>(send_comm) == nullptr) {
    return Invalid("closeSend", "unknown send comm %p (closed already, or not a send comm)",
                   send_comm);
  }
  return abi::kSuccess;  // the comm went with the unique_ptr, after its handle and requests
}

abi::Result CloseRecv(void* recv_comm) {
  if (Withdraw<RecvComm>(recv_comm) == nullptr) {
    return Invalid("closeRecv", "unknown recv comm %p (closed already, or not a recv comm)",
                   recv_comm);
  }
  return abi::kSuccess;
}

abi::Result CloseListen(void* listen_comm) {
  if (Withdraw<ListenComm>(listen_comm) == nullptr) {
    return Invalid("closeListen", "unknown listen comm %p (closed already, or not a listen comm)",
                   listen_comm);
  }
  return abi::kSuccess;
}

abi::Result GetDeviceMr(void* comm, void* mhandle, void** dptr_mhandle) {
  if (AnyComm(comm) == nullptr || dptr_mhandle == nullptr ||
      (mhandle != nullptr && Find<MemoryRegion>(mhandle) == nullptr)) {
    return Invalid("getDeviceMr", "unknown comm %p or mhandle %p, or NULL dptr_mhandle", comm,
                   mhandle);
  }
  *dptr_mhandle = nullptr;  // host device type: NCCL's kernels never read it
  return abi::kSuccess;
}

abi::Result IrecvConsumed(void* recv_comm, int /*n*/, void* request) {
  RecvComm* comm = Find<RecvComm>(recv_comm);
  if (comm == nullptr) return Invalid("irecvConsumed", "unknown recv comm %p", recv_comm);
  LiveRequest live;
  if (!FindRequest(request, &live) || live.recv != comm) {
    return Invalid("irecvConsumed", "request %p is not a receive of comm %p", request, recv_comm);
  }
  // Receives released in test() (every mode but NCCL unpack) make this a no-op.
  return Report("irecvConsumed", comm->Consumed(live.request));
}

abi::Result MakeVDevice(int* d, int ndevs, const int* devs, int max_devs) {
  if (d == nullptr || devs == nullptr) return Invalid("makeVDevice", "NULL argument");
  PluginState& state = State();
  std::lock_guard<std::mutex> lock(state.mutex);
  if (!state.ready) {
    return Report("makeVDevice", Status::Error(ErrorKind::kInvalidUsage, "called before init"));
  }
  Result<int> made = state.devices.MakeVirtual(devs, ndevs, max_devs, state.config.emulate_devmem);
  if (!made.ok()) {
    return Report("makeVDevice", Status::Error(made.status().kind(),
                                               "%s (NCCL_NET_MERGE_LEVEL=LOC keeps NICs "
                                               "separate)",
                                               made.status().message().c_str()));
  }
  *d = made.value();
  return abi::kSuccess;
}

}  // namespace devmem::api
