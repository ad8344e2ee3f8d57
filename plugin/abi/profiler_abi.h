// NCCL's profiler contract for network plugins, written from NCCL v2.28.9-1's sources (no NCCL
// header is included), and the plugin's own event descriptor (docs/profiler.md).
//
// NCCL passes ncclProfilerCallback at init (src/plugin/net.cc:178, always non-NULL from v10 on)
// and calls it as (src/plugin/profiler.cc:687-715):
//   start:           callback(&eHandle, 0, pHandle, pluginId, &descr): when a profiler plugin is
//                    loaded and its activation mask has ncclProfileNetPlugin, *eHandle becomes
//                    the event; otherwise *eHandle is left as it was (so it must start NULL);
//                    pHandle must be one NCCL passed to isend/irecv (it is dereferenced).
//   stop:            callback(&eHandle, 1, NULL, 0, NULL)
//   update:          callback(&eHandle, 2, NULL, 0, &descr)
//   update and stop: callback(&eHandle, 3, NULL, 0, &descr)
// NCCL hands `descr` to the profiler plugin's startEvent / recordEventState as a pointer
// (eDescr.netPlugin.data, args.netPlugin.data), valid only during the call, and puts pluginId
// in eDescr.netPlugin.id: the plugin tells whose event it is and which descriptor version it
// holds from the id alone.
#pragma once

#include <cstddef>
#include <cstdint>

namespace devmem::abi {

// The callback's `type` argument (src/include/nccl_common.h:49-54).
enum ProfilerNetEvent : int {
  kProfilerNetEventStart = 0,          // ncclProfilerNetEventStart
  kProfilerNetEventStop = 1,           // ncclProfilerNetEventStop
  kProfilerNetEventUpdate = 2,         // ncclProfilerNetEventUpdate
  kProfilerNetEventUpdateAndStop = 3,  // ncclProfilerNetEventUpdateAndStop
};

// pluginId = type << 16 | descriptor version (src/include/plugin/nccl_profiler.h:80-87).
inline constexpr int kProfilerNetVerBits = 16;  // NCCL_PROFILER_NET_VER_BITS
inline constexpr uint32_t kProfilerNetVerMask = ~0U >> kProfilerNetVerBits;   // ..._VER_MASK
inline constexpr uint32_t kProfilerNetTypeMask = ~0U << kProfilerNetVerBits;  // ..._TYPE_MASK
inline constexpr uint32_t kProfilerNetTypeIb = 1U << kProfilerNetVerBits;     // ..._TYPE_IB
inline constexpr uint32_t kProfilerNetTypeSock = 2U << kProfilerNetVerBits;   // ..._TYPE_SOCK

// NCCL's socket transport's descriptor (src/include/plugin/profiler/net_socket_v1.h:10-30),
// emitted by src/transport/net_socket.cc:251-275 with pluginId NCCL_PROFILER_NET_TYPE_SOCK | 1.
inline constexpr uint32_t kProfilerNetSocketVersion = 1;  // NCCL_PROFILER_NET_SOCKET_VER
inline constexpr uint8_t kProfileSocket = 1 << 0;         // ncclProfileSocket
// `op` (src/include/socket.h:97-98).
inline constexpr int kSocketSend = 0;  // NCCL_SOCKET_SEND
inline constexpr int kSocketRecv = 1;  // NCCL_SOCKET_RECV
struct ProfilerNetSockFieldsV1 {
  int fd;         // the data socket
  int op;         // NCCL_SOCKET_SEND or NCCL_SOCKET_RECV
  size_t length;  // bytes of the transfer
};
// typedef struct { uint8_t type; union { struct { int fd; int op; size_t length; } sock; }; }
// ncclProfilerNetSockDescr_v1_t: the one-member union lays out as the struct itself.
struct ProfilerNetSockDescrV1 {
  uint8_t type;  // ncclProfileSocket
  ProfilerNetSockFieldsV1 sock;
};
static_assert(offsetof(ProfilerNetSockDescrV1, sock) == 8);
static_assert(offsetof(ProfilerNetSockDescrV1, sock.op) == 12);
static_assert(offsetof(ProfilerNetSockDescrV1, sock.length) == 16);
static_assert(sizeof(ProfilerNetSockDescrV1) == 24);
inline constexpr int64_t kSocketPluginId = kProfilerNetTypeSock | kProfilerNetSocketVersion;

// The plugin's own events (docs/profiler.md): type "DM" (0x444d), not one of NCCL's (1, 2).
inline constexpr uint32_t kProfilerNetTypeDevmem = 0x444dU << kProfilerNetVerBits;
inline constexpr uint32_t kDevmemProfilerVersion = 1;
inline constexpr int64_t kDevmemPluginId = kProfilerNetTypeDevmem | kDevmemProfilerVersion;
static_assert((kProfilerNetTypeDevmem & kProfilerNetTypeMask) == kProfilerNetTypeDevmem);
static_assert((kDevmemProfilerVersion & kProfilerNetVerMask) == kDevmemProfilerVersion);
// `type`, a bit like NCCL's descriptors' first byte.
inline constexpr uint8_t kDevmemEventRecv = 1 << 0;  // one buffer of an irecv
inline constexpr uint8_t kDevmemEventSend = 1 << 1;  // one isend
// `path`.
enum DevmemProfilerPath : uint8_t {
  kDevmemPathPlain = 0,     // TCP into or from host memory
  kDevmemPathDevmem = 1,    // devmem RX into a bound GPU region
  kDevmemPathEmulated = 2,  // NCCL_DEVMEM_EMULATE (recv) / NCCL_DEVMEM_EMULATE_TX (send)
  kDevmemPathDevmemTx = 3,  // devmem TX from GPU memory
};
// Version 1. Passed at start (type, path, bytes; the rest 0) and with update-and-stop (every
// field final). New fields only ever go at the end, with a new version.
struct DevmemProfilerDescrV1 {
  uint8_t type;              // kDevmemEventRecv or kDevmemEventSend
  uint8_t path;              // DevmemProfilerPath
  uint8_t failed;            // stop: 1 when an error or a close ended it before completion
  uint8_t reserved[5];       // 0
  uint64_t bytes;            // start: sent / posted bytes; stop: bytes carried
  uint64_t frags;            // recv, devmem paths: frags received into the RX region
  uint64_t linear_bytes;     // recv, devmem paths: bytes that arrived as host (linear) data
  uint64_t consumer_ns;      // recv with a consumer: last byte in -> consumer finished
  uint64_t tokens_returned;  // recv, devmem paths: frag tokens given back by the stop
};
static_assert(offsetof(DevmemProfilerDescrV1, bytes) == 8);
static_assert(offsetof(DevmemProfilerDescrV1, tokens_returned) == 40);
static_assert(sizeof(DevmemProfilerDescrV1) == 48);

}  // namespace devmem::abi
