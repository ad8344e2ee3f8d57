// The plugin's one implementation of the NCCL net API, version-neutral. Each function validates
// its arguments, runs the C++ internals, and on failure logs one WARN naming the call and
// returns the matching ncclResult_t. plugin/abi/ adapts it to every exported table version.
// Every comm, request, context and mhandle it returns is a handle of the plugin's registry
// (handle_registry.h), not a pointer: a stale, foreign or wrong-kind one is ncclInvalidArgument.
#pragma once

#include <cstddef>
#include <cstdint>

#include "plugin/abi/net_abi.h"

namespace devmem::api {

inline constexpr const char* kPluginName = "devmem";
inline constexpr size_t kMaxMembers = abi::kMaxDevsPerNicV12;  // member NICs of a virtual NIC

// What getProperties reports, before each version's struct layout is applied.
struct DeviceProperties {
  const char* name = nullptr;
  const char* pci_path = nullptr;
  uint64_t guid = 0;
  int ptr_support = abi::kPtrHost;
  int speed_mbps = 0;
  int port = 0;
  float latency_us = 0;
  int max_comms = 0;
  int max_recvs = 1;
  size_t max_message_bytes = 0;
  abi::DeviceType net_device_type = abi::kDeviceHost;
  int net_device_version = 0;
  int16_t rail_id = abi::kNetIdUndef;   // v12
  int16_t plane_id = abi::kNetIdUndef;  // v12
  // The physical NICs behind the device: itself, or a virtual NIC's members.
  int member_count = 1;
  int members[kMaxMembers] = {};
};

// `table_version`: the ncclNetPlugin_vN table NCCL called through. NCCL presets LL/LL128
// receives with NCCL_NET_OPTIONAL_RECV_COMPLETION only from v9 on (2.24+), and NCCL's device
// unpack needs that hint, so a v8 caller never gets UNPACK.
abi::Result Init(abi::DebugLogger logger, int table_version);
// v11: one context per NCCL communicator.
abi::Result InitContext(void** ctx, uint64_t comm_id, const abi::CommConfigV10* config,
                        abi::DebugLogger logger);
abi::Result FinalizeContext(void* ctx);
abi::Result SetNetAttr(void* ctx, abi::NetAttrV11* attr);

abi::Result Devices(int* ndev);
abi::Result GetProperties(int dev, DeviceProperties* props);
abi::Result Listen(int dev, void* handle, void** listen_comm);
abi::Result Connect(int dev, void* handle, void** send_comm, abi::DeviceHandleV7** send_dev_comm);
abi::Result Accept(void* listen_comm, void** recv_comm, abi::DeviceHandleV7** recv_dev_comm);
abi::Result RegMr(void* comm, void* data, size_t size, int type, void** mhandle);
abi::Result RegMrDmaBuf(void* comm, void* data, size_t size, int type, uint64_t offset, int fd,
                        void** mhandle);
abi::Result DeregMr(void* comm, void* mhandle);
// `phandle(s)`: NCCL's profiler handles (v10+; nullptr: none, e.g. NCCL's bootstrap).
abi::Result Isend(void* send_comm, void* data, size_t size, int tag, void* mhandle, void** request,
                  void* phandle = nullptr);
abi::Result Irecv(void* recv_comm, int n, void** data, const size_t* sizes, int* tags,
                  void** mhandles, void** request, void** phandles = nullptr);
abi::Result Iflush(void* recv_comm, int n, void** data, int* sizes, void** mhandles,
                   void** request);
abi::Result Test(void* request, int* done, int* sizes);
abi::Result CloseSend(void* send_comm);
abi::Result CloseRecv(void* recv_comm);
abi::Result CloseListen(void* listen_comm);
abi::Result GetDeviceMr(void* comm, void* mhandle, void** dptr_mhandle);
abi::Result IrecvConsumed(void* recv_comm, int n, void* request);
// makeVDevice with the devices NCCL lists; `max_devs`: the calling table version's limit (4
// up to v11, 8 from v12).
abi::Result MakeVDevice(int* d, int ndevs, const int* devs, int max_devs);

}  // namespace devmem::api
