// The exported ncclNetPlugin_vN tables: thin adapters from each ABI version onto plugin_api.
// Nothing here but argument conversion (sizes, properties layouts, per-version signatures).
#include <algorithm>
#include <climits>
#include <cstring>
#include <type_traits>

#include "plugin/abi/net_abi.h"
#include "plugin/abi/plugin_api.h"
#include "plugin/abi/profiler_events.h"
#include "plugin/core/log.h"

namespace devmem::abi {
namespace {

namespace api = ::devmem::api;

// Fields shared by every properties version.
template <typename Props>
Result FillCommon(int dev, Props* props) {
  if (props == nullptr) return api::GetProperties(dev, nullptr);
  api::DeviceProperties p;
  if (Result r = api::GetProperties(dev, &p); r != kSuccess) return r;
  memset(props, 0, sizeof(*props));
  props->name = const_cast<char*>(p.name);
  props->pciPath = const_cast<char*>(p.pci_path);
  props->guid = p.guid;
  props->ptrSupport = p.ptr_support;
  props->regIsGlobal = 0;
  props->speed = p.speed_mbps;
  props->port = p.port;
  props->latency = p.latency_us;
  props->maxComms = p.max_comms;
  props->maxRecvs = p.max_recvs;
  props->netDeviceType = p.net_device_type;
  props->netDeviceVersion = p.net_device_version;
  if constexpr (!std::is_same_v<Props, PropertiesV8>) {
    props->forceFlush = 0;
    // A virtual NIC lists its members (a physical NIC itself); makeVDevice of this table
    // version never made one with more than the struct holds.
    constexpr int kCapacity = static_cast<int>(sizeof(props->vProps.devs) / sizeof(int));
    props->vProps.ndevs = std::min(p.member_count, kCapacity);
    for (int i = 0; i < props->vProps.ndevs; ++i) props->vProps.devs[i] = p.members[i];
    if (p.member_count == 1) props->vProps.devs[0] = dev;
    props->maxP2pBytes = p.max_message_bytes;
    props->maxCollBytes = p.max_message_bytes;
  }
  if constexpr (std::is_same_v<Props, PropertiesV11> || std::is_same_v<Props, PropertiesV12>) {
    props->maxMultiRequestSize = 1;
  }
  if constexpr (std::is_same_v<Props, PropertiesV12>) {
    props->railId = p.rail_id;
    props->planeId = p.plane_id;
  }
  return kSuccess;
}

Result GetPropertiesV8(int dev, PropertiesV8* props) { return FillCommon(dev, props); }
Result GetPropertiesV9(int dev, PropertiesV9* props) { return FillCommon(dev, props); }
Result GetPropertiesV11(int dev, PropertiesV11* props) { return FillCommon(dev, props); }
Result GetPropertiesV12(int dev, PropertiesV12* props) { return FillCommon(dev, props); }

template <typename VProps>
Result MakeVDeviceOf(int* d, VProps* props) {
  if (props == nullptr) return api::MakeVDevice(d, 0, nullptr, 0);  // logs the NULL
  constexpr int kCapacity = static_cast<int>(sizeof(props->devs) / sizeof(int));
  return api::MakeVDevice(d, props->ndevs, props->devs, kCapacity);
}
Result MakeVDeviceV9(int* d, VDeviceProps* props) { return MakeVDeviceOf(d, props); }
Result MakeVDeviceV12(int* d, VDevicePropsV12* props) { return MakeVDeviceOf(d, props); }

Result InitV8(DebugLogger logger) { return api::Init(logger, 8); }
Result InitV9(DebugLogger logger) { return api::Init(logger, 9); }
// NCCL passes its profiler callback from v10 on (v2.28.9 src/plugin/net.cc:178).
Result InitV10(DebugLogger logger, ProfilerCallback profiler) {
  InstallNcclProfiler(profiler);
  return api::Init(logger, 10);
}
Result InitV11(void** ctx, uint64_t comm_id, CommConfigV10* config, DebugLogger logger,
               ProfilerCallback profiler) {
  InstallNcclProfiler(profiler);
  return api::InitContext(ctx, comm_id, config, logger);
}

Result ListenV8(int dev, void* handle, void** listen_comm) {
  return api::Listen(dev, handle, listen_comm);
}
Result ListenV11(void* /*ctx*/, int dev, void* handle, void** listen_comm) {
  return api::Listen(dev, handle, listen_comm);
}
Result ConnectV8(int dev, void* handle, void** send_comm, DeviceHandleV7** dev_comm) {
  return api::Connect(dev, handle, send_comm, dev_comm);
}
Result ConnectV10(int dev, CommConfigV10* /*config*/, void* handle, void** send_comm,
                  DeviceHandleV7** dev_comm) {
  return api::Connect(dev, handle, send_comm, dev_comm);
}
Result ConnectV11(void* /*ctx*/, int dev, void* handle, void** send_comm,
                  DeviceHandleV7** dev_comm) {
  return api::Connect(dev, handle, send_comm, dev_comm);
}

Result IsendV8(void* comm, void* data, int size, int tag, void* mhandle, void** request) {
  if (size < 0) {
    log::Warn("isend failed: negative size %d", size);
    return kInvalidArgument;
  }
  return api::Isend(comm, data, static_cast<size_t>(size), tag, mhandle, request);
}
Result IsendV9(void* comm, void* data, size_t size, int tag, void* mhandle, void** request) {
  return api::Isend(comm, data, size, tag, mhandle, request);
}
Result IsendV10(void* comm, void* data, size_t size, int tag, void* mhandle, void* phandle,
                void** request) {
  return api::Isend(comm, data, size, tag, mhandle, request, phandle);
}

Result IrecvV8(void* comm, int n, void** data, int* sizes, int* tags, void** mhandles,
               void** request) {
  if (n < 1 || n > 8 || sizes == nullptr) {
    log::Warn("irecv failed: n=%d outside [1, 8] or NULL sizes", n);
    return kInvalidArgument;
  }
  size_t wide[8];
  for (int i = 0; i < n; ++i) {
    if (sizes[i] < 0) {
      log::Warn("irecv failed: negative size %d for buffer %d", sizes[i], i);
      return kInvalidArgument;
    }
    wide[i] = static_cast<size_t>(sizes[i]);
  }
  return api::Irecv(comm, n, data, wide, tags, mhandles, request);
}
Result IrecvV9(void* comm, int n, void** data, size_t* sizes, int* tags, void** mhandles,
               void** request) {
  return api::Irecv(comm, n, data, sizes, tags, mhandles, request);
}
Result IrecvV10(void* comm, int n, void** data, size_t* sizes, int* tags, void** mhandles,
                void** phandles, void** request) {
  return api::Irecv(comm, n, data, sizes, tags, mhandles, request, phandles);
}

}  // namespace
}  // namespace devmem::abi

using namespace devmem::abi;  // NOLINT(google-build-using-namespace): table definitions only
namespace api = ::devmem::api;

#define DEVMEM_EXPORT extern "C" __attribute__((visibility("default")))

// Designated initializers: two slots of the same signature (closeSend/closeRecv, regMr/deregMr
// adapters) cannot be swapped without the compiler noticing, and a slot left out is an error
// under -Wmissing-field-initializers.

// NCCL 2.30 looks this one up first (railId/planeId, virtual NICs of up to 8 devices).
DEVMEM_EXPORT const NetV12 ncclNetPlugin_v12 = {
    .name = api::kPluginName,
    .init = InitV11,
    .devices = api::Devices,
    .getProperties = GetPropertiesV12,
    .listen = ListenV11,
    .connect = ConnectV11,
    .accept = api::Accept,
    .regMr = api::RegMr,
    .regMrDmaBuf = api::RegMrDmaBuf,
    .deregMr = api::DeregMr,
    .isend = IsendV10,
    .irecv = IrecvV10,
    .iflush = api::Iflush,
    .test = api::Test,
    .closeSend = api::CloseSend,
    .closeRecv = api::CloseRecv,
    .closeListen = api::CloseListen,
    .getDeviceMr = api::GetDeviceMr,
    .irecvConsumed = api::IrecvConsumed,
    .makeVDevice = MakeVDeviceV12,
    .finalize = api::FinalizeContext,
    .setNetAttr = api::SetNetAttr,
};

DEVMEM_EXPORT const NetV11 ncclNetPlugin_v11 = {
    .name = api::kPluginName,
    .init = InitV11,
    .devices = api::Devices,
    .getProperties = GetPropertiesV11,
    .listen = ListenV11,
    .connect = ConnectV11,
    .accept = api::Accept,
    .regMr = api::RegMr,
    .regMrDmaBuf = api::RegMrDmaBuf,
    .deregMr = api::DeregMr,
    .isend = IsendV10,
    .irecv = IrecvV10,
    .iflush = api::Iflush,
    .test = api::Test,
    .closeSend = api::CloseSend,
    .closeRecv = api::CloseRecv,
    .closeListen = api::CloseListen,
    .getDeviceMr = api::GetDeviceMr,
    .irecvConsumed = api::IrecvConsumed,
    .makeVDevice = MakeVDeviceV9,
    .finalize = api::FinalizeContext,
    .setNetAttr = api::SetNetAttr,
};

DEVMEM_EXPORT const NetV10 ncclNetPlugin_v10 = {
    .name = api::kPluginName,
    .init = InitV10,
    .devices = api::Devices,
    .getProperties = GetPropertiesV9,
    .listen = ListenV8,
    .connect = ConnectV10,
    .accept = api::Accept,
    .regMr = api::RegMr,
    .regMrDmaBuf = api::RegMrDmaBuf,
    .deregMr = api::DeregMr,
    .isend = IsendV10,
    .irecv = IrecvV10,
    .iflush = api::Iflush,
    .test = api::Test,
    .closeSend = api::CloseSend,
    .closeRecv = api::CloseRecv,
    .closeListen = api::CloseListen,
    .getDeviceMr = api::GetDeviceMr,
    .irecvConsumed = api::IrecvConsumed,
    .makeVDevice = MakeVDeviceV9,
};

DEVMEM_EXPORT const NetV9 ncclNetPlugin_v9 = {
    .name = api::kPluginName,
    .init = InitV9,
    .devices = api::Devices,
    .getProperties = GetPropertiesV9,
    .listen = ListenV8,
    .connect = ConnectV8,
    .accept = api::Accept,
    .regMr = api::RegMr,
    .regMrDmaBuf = api::RegMrDmaBuf,
    .deregMr = api::DeregMr,
    .isend = IsendV9,
    .irecv = IrecvV9,
    .iflush = api::Iflush,
    .test = api::Test,
    .closeSend = api::CloseSend,
    .closeRecv = api::CloseRecv,
    .closeListen = api::CloseListen,
    .getDeviceMr = api::GetDeviceMr,
    .irecvConsumed = api::IrecvConsumed,
    .makeVDevice = MakeVDeviceV9,
};

DEVMEM_EXPORT const NetV8 ncclNetPlugin_v8 = {
    .name = api::kPluginName,
    .init = InitV8,
    .devices = api::Devices,
    .getProperties = GetPropertiesV8,
    .listen = ListenV8,
    .connect = ConnectV8,
    .accept = api::Accept,
    .regMr = api::RegMr,
    .regMrDmaBuf = api::RegMrDmaBuf,
    .deregMr = api::DeregMr,
    .isend = IsendV8,
    .irecv = IrecvV8,
    .iflush = api::Iflush,
    .test = api::Test,
    .closeSend = api::CloseSend,
    .closeRecv = api::CloseRecv,
    .closeListen = api::CloseListen,
    .getDeviceMr = api::GetDeviceMr,
    .irecvConsumed = api::IrecvConsumed,
};
