// Our own definitions of the NCCL network-plugin ABI, written from
// shared/specs/nccl-net-abi.md (layouts verified there against the NCCL 2.28.9 DWARF).
// No NCCL header is included: every type lives in devmem::abi so that a translation unit
// that also includes nccl.h (tests, benchmarks) does not clash.
#pragma once

#include <cstddef>
#include <cstdint>

#include "plugin/core/nccl_contract.h"

namespace devmem::abi {

// ncclResult_t: a C enum, 4 bytes.
enum Result : int {
  kSuccess = 0,
  kUnhandledCudaError = 1,
  kSystemError = 2,
  kInternalError = 3,
  kInvalidArgument = 4,
  kInvalidUsage = 5,
  kRemoteError = 6,
  kInProgress = 7,
};

// Shared with the layers below (plugin/core/nccl_contract.h): one definition of each.
using nccl::kMaxNetSize;
using nccl::kNetHandleMaxSize;
using nccl::kNetMaxRequests;
using nccl::kPtrCuda;
using nccl::kPtrDmaBuf;
using nccl::kPtrHost;
inline constexpr int kMaxDevsPerNic = 4;          // NCCL_NET_MAX_DEVS_PER_NIC in 2.28.9 (v9..v11)
inline constexpr int kMaxDevsPerNicV12 = 8;       // NCCL_NET_MAX_DEVS_PER_NIC_V12 (2.30)
inline constexpr int16_t kNetIdUndef = -1;        // NCCL_NET_ID_UNDEF: no rail / plane
inline constexpr int kDeviceUnpackVersion = 0x7;  // NCCL_NET_DEVICE_UNPACK_VERSION
// NCCL writes this into *request before irecv() as an LL/LL128 hint; never dereference it.
inline constexpr uintptr_t kOptionalRecvCompletion = 0x1;

using nccl::DebugLogger;
using nccl::kLogAbort;
using nccl::kLogInfo;
using nccl::kLogNone;
using nccl::kLogTrace;
using nccl::kLogVersion;
using nccl::kLogWarn;
using nccl::kSubsysAll;
using nccl::kSubsysEnv;
using nccl::kSubsysInit;
using nccl::kSubsysNet;
using nccl::LogLevel;
using nccl::LogSubsys;
using ProfilerCallback = Result (*)(void** eHandle, int type, void* pHandle, int64_t pluginId,
                                    void* extData);

enum DeviceType : int { kDeviceHost = 0, kDeviceUnpack = 1 };

struct DeviceHandleV7 {
  DeviceType netDeviceType;
  int netDeviceVersion;
  void* handle;
  size_t size;
  int needsProxyProgress;
};
static_assert(sizeof(DeviceHandleV7) == 32);

struct VDeviceProps {
  int ndevs;
  int devs[kMaxDevsPerNic];
};
static_assert(sizeof(VDeviceProps) == 20);

struct CommConfigV10 {
  int trafficClass;
};

struct CommAttrV11 {
  int32_t maxConcurrentPeers, minConcurrentPeers, maxFlowsPerPeer, minFlowsPerPeer;
};
struct NetAttrV11 {
  CommAttrV11 sendCommAttr;
  CommAttrV11 recvCommAttr;
  uint32_t op, algo, proto;
};
static_assert(sizeof(NetAttrV11) == 44);

struct PropertiesV8 {
  char* name;
  char* pciPath;
  uint64_t guid;
  int ptrSupport;
  int regIsGlobal;
  int speed;
  int port;
  float latency;
  int maxComms;
  int maxRecvs;
  DeviceType netDeviceType;
  int netDeviceVersion;
};
static_assert(sizeof(PropertiesV8) == 64);

struct PropertiesV9 {
  char* name;
  char* pciPath;
  uint64_t guid;
  int ptrSupport;
  int regIsGlobal;
  int forceFlush;
  int speed;
  int port;
  float latency;
  int maxComms;
  int maxRecvs;
  DeviceType netDeviceType;
  int netDeviceVersion;
  VDeviceProps vProps;
  size_t maxP2pBytes;
  size_t maxCollBytes;
};
static_assert(sizeof(PropertiesV9) == 104);
static_assert(offsetof(PropertiesV9, vProps) == 64 && offsetof(PropertiesV9, maxP2pBytes) == 88);
using PropertiesV10 = PropertiesV9;

struct PropertiesV11 {
  char* name;
  char* pciPath;
  uint64_t guid;
  int ptrSupport;
  int regIsGlobal;
  int forceFlush;
  int speed;
  int port;
  float latency;
  int maxComms;
  int maxRecvs;
  DeviceType netDeviceType;
  int netDeviceVersion;
  VDeviceProps vProps;
  size_t maxP2pBytes;
  size_t maxCollBytes;
  int maxMultiRequestSize;
};
static_assert(sizeof(PropertiesV11) == 112);
static_assert(offsetof(PropertiesV11, maxMultiRequestSize) == 104);

// v12 (NCCL 2.30, src/include/plugin/net/net_v12.h at v2.30.7-1): a virtual NIC holds up to 8
// devices, and the properties end with railId and planeId. Everything else is v11's.
struct VDevicePropsV12 {
  int ndevs;
  int devs[kMaxDevsPerNicV12];
};
static_assert(sizeof(VDevicePropsV12) == 36);

struct PropertiesV12 {
  char* name;
  char* pciPath;
  uint64_t guid;
  int ptrSupport;
  int regIsGlobal;
  int forceFlush;
  int speed;
  int port;
  float latency;
  int maxComms;
  int maxRecvs;
  DeviceType netDeviceType;
  int netDeviceVersion;
  VDevicePropsV12 vProps;
  size_t maxP2pBytes;
  size_t maxCollBytes;
  int maxMultiRequestSize;
  int16_t railId;
  int16_t planeId;
};
// Derived from the header's field order under the x86-64 SysV rules: eleven 4-byte fields
// after the three 8-byte ones end at 64, vProps (36 bytes, 4-aligned) at [64, 100), the size_t
// pair 8-aligned at 104 and 112, maxMultiRequestSize at 120, the two int16_t at 124 and 126,
// 128 bytes in all (no tail padding).
static_assert(offsetof(PropertiesV12, vProps) == 64 && offsetof(PropertiesV12, maxP2pBytes) == 104);
static_assert(offsetof(PropertiesV12, maxMultiRequestSize) == 120);
static_assert(offsetof(PropertiesV12, railId) == 124 && offsetof(PropertiesV12, planeId) == 126);
static_assert(sizeof(PropertiesV12) == 128);

struct NetV8 {
  const char* name;
  Result (*init)(DebugLogger logFunction);
  Result (*devices)(int* ndev);
  Result (*getProperties)(int dev, PropertiesV8* props);
  Result (*listen)(int dev, void* handle, void** listenComm);
  Result (*connect)(int dev, void* handle, void** sendComm, DeviceHandleV7** sendDevComm);
  Result (*accept)(void* listenComm, void** recvComm, DeviceHandleV7** recvDevComm);
  Result (*regMr)(void* comm, void* data, size_t size, int type, void** mhandle);
  Result (*regMrDmaBuf)(void* comm, void* data, size_t size, int type, uint64_t offset, int fd,
                        void** mhandle);
  Result (*deregMr)(void* comm, void* mhandle);
  Result (*isend)(void* sendComm, void* data, int size, int tag, void* mhandle, void** request);
  Result (*irecv)(void* recvComm, int n, void** data, int* sizes, int* tags, void** mhandles,
                  void** request);
  Result (*iflush)(void* recvComm, int n, void** data, int* sizes, void** mhandles, void** request);
  Result (*test)(void* request, int* done, int* sizes);
  Result (*closeSend)(void* sendComm);
  Result (*closeRecv)(void* recvComm);
  Result (*closeListen)(void* listenComm);
  Result (*getDeviceMr)(void* comm, void* mhandle, void** dptr_mhandle);
  Result (*irecvConsumed)(void* recvComm, int n, void* request);
};
static_assert(sizeof(NetV8) == 152);

struct NetV9 {
  const char* name;
  Result (*init)(DebugLogger logFunction);
  Result (*devices)(int* ndev);
  Result (*getProperties)(int dev, PropertiesV9* props);
  Result (*listen)(int dev, void* handle, void** listenComm);
  Result (*connect)(int dev, void* handle, void** sendComm, DeviceHandleV7** sendDevComm);
  Result (*accept)(void* listenComm, void** recvComm, DeviceHandleV7** recvDevComm);
  Result (*regMr)(void* comm, void* data, size_t size, int type, void** mhandle);
  Result (*regMrDmaBuf)(void* comm, void* data, size_t size, int type, uint64_t offset, int fd,
                        void** mhandle);
  Result (*deregMr)(void* comm, void* mhandle);
  Result (*isend)(void* sendComm, void* data, size_t size, int tag, void* mhandle, void** request);
  Result (*irecv)(void* recvComm, int n, void** data, size_t* sizes, int* tags, void** mhandles,
                  void** request);
  Result (*iflush)(void* recvComm, int n, void** data, int* sizes, void** mhandles, void** request);
  Result (*test)(void* request, int* done, int* sizes);
  Result (*closeSend)(void* sendComm);
  Result (*closeRecv)(void* recvComm);
  Result (*closeListen)(void* listenComm);
  Result (*getDeviceMr)(void* comm, void* mhandle, void** dptr_mhandle);
  Result (*irecvConsumed)(void* recvComm, int n, void* request);
  Result (*makeVDevice)(int* d, VDeviceProps* props);
};
static_assert(sizeof(NetV9) == 160);

struct NetV10 {
  const char* name;
  Result (*init)(DebugLogger logFunction, ProfilerCallback profFunction);
  Result (*devices)(int* ndev);
  Result (*getProperties)(int dev, PropertiesV10* props);
  Result (*listen)(int dev, void* handle, void** listenComm);
  Result (*connect)(int dev, CommConfigV10* config, void* handle, void** sendComm,
                    DeviceHandleV7** sendDevComm);
  Result (*accept)(void* listenComm, void** recvComm, DeviceHandleV7** recvDevComm);
  Result (*regMr)(void* comm, void* data, size_t size, int type, void** mhandle);
  Result (*regMrDmaBuf)(void* comm, void* data, size_t size, int type, uint64_t offset, int fd,
                        void** mhandle);
  Result (*deregMr)(void* comm, void* mhandle);
  Result (*isend)(void* sendComm, void* data, size_t size, int tag, void* mhandle, void* phandle,
                  void** request);
  Result (*irecv)(void* recvComm, int n, void** data, size_t* sizes, int* tags, void** mhandles,
                  void** phandles, void** request);
  Result (*iflush)(void* recvComm, int n, void** data, int* sizes, void** mhandles, void** request);
  Result (*test)(void* request, int* done, int* sizes);
  Result (*closeSend)(void* sendComm);
  Result (*closeRecv)(void* recvComm);
  Result (*closeListen)(void* listenComm);
  Result (*getDeviceMr)(void* comm, void* mhandle, void** dptr_mhandle);
  Result (*irecvConsumed)(void* recvComm, int n, void* request);
  Result (*makeVDevice)(int* d, VDeviceProps* props);
};
static_assert(sizeof(NetV10) == 160);

struct NetV11 {
  const char* name;
  Result (*init)(void** ctx, uint64_t commId, CommConfigV10* config, DebugLogger logFunction,
                 ProfilerCallback profFunction);
  Result (*devices)(int* ndev);
  Result (*getProperties)(int dev, PropertiesV11* props);
  Result (*listen)(void* ctx, int dev, void* handle, void** listenComm);
  Result (*connect)(void* ctx, int dev, void* handle, void** sendComm,
                    DeviceHandleV7** sendDevComm);
  Result (*accept)(void* listenComm, void** recvComm, DeviceHandleV7** recvDevComm);
  Result (*regMr)(void* comm, void* data, size_t size, int type, void** mhandle);
  Result (*regMrDmaBuf)(void* comm, void* data, size_t size, int type, uint64_t offset, int fd,
                        void** mhandle);
  Result (*deregMr)(void* comm, void* mhandle);
  Result (*isend)(void* sendComm, void* data, size_t size, int tag, void* mhandle, void* phandle,
                  void** request);
  Result (*irecv)(void* recvComm, int n, void** data, size_t* sizes, int* tags, void** mhandles,
                  void** phandles, void** request);
  Result (*iflush)(void* recvComm, int n, void** data, int* sizes, void** mhandles, void** request);
  Result (*test)(void* request, int* done, int* sizes);
  Result (*closeSend)(void* sendComm);
  Result (*closeRecv)(void* recvComm);
  Result (*closeListen)(void* listenComm);
  Result (*getDeviceMr)(void* comm, void* mhandle, void** dptr_mhandle);
  Result (*irecvConsumed)(void* recvComm, int n, void* request);
  Result (*makeVDevice)(int* d, VDeviceProps* props);
  Result (*finalize)(void* ctx);
  Result (*setNetAttr)(void* ctx, NetAttrV11* netAttr);
};
static_assert(sizeof(NetV11) == 176);

// The same 22 entries as v11; getProperties and makeVDevice take the v12 structs.
struct NetV12 {
  const char* name;
  Result (*init)(void** ctx, uint64_t commId, CommConfigV10* config, DebugLogger logFunction,
                 ProfilerCallback profFunction);
  Result (*devices)(int* ndev);
  Result (*getProperties)(int dev, PropertiesV12* props);
  Result (*listen)(void* ctx, int dev, void* handle, void** listenComm);
  Result (*connect)(void* ctx, int dev, void* handle, void** sendComm,
                    DeviceHandleV7** sendDevComm);
  Result (*accept)(void* listenComm, void** recvComm, DeviceHandleV7** recvDevComm);
  Result (*regMr)(void* comm, void* data, size_t size, int type, void** mhandle);
  Result (*regMrDmaBuf)(void* comm, void* data, size_t size, int type, uint64_t offset, int fd,
                        void** mhandle);
  Result (*deregMr)(void* comm, void* mhandle);
  Result (*isend)(void* sendComm, void* data, size_t size, int tag, void* mhandle, void* phandle,
                  void** request);
  Result (*irecv)(void* recvComm, int n, void** data, size_t* sizes, int* tags, void** mhandles,
                  void** phandles, void** request);
  Result (*iflush)(void* recvComm, int n, void** data, int* sizes, void** mhandles, void** request);
  Result (*test)(void* request, int* done, int* sizes);
  Result (*closeSend)(void* sendComm);
  Result (*closeRecv)(void* recvComm);
  Result (*closeListen)(void* listenComm);
  Result (*getDeviceMr)(void* comm, void* mhandle, void** dptr_mhandle);
  Result (*irecvConsumed)(void* recvComm, int n, void* request);
  Result (*makeVDevice)(int* d, VDevicePropsV12* props);
  Result (*finalize)(void* ctx);
  Result (*setNetAttr)(void* ctx, NetAttrV11* netAttr);
};
static_assert(sizeof(NetV12) == 176);

}  // namespace devmem::abi
