// The few NCCL constants and the logger signature that the layers below the ABI need. They are
// NCCL's (src/include/net.h, nccl_net.h, debug.h of 2.28.9; ../shared/specs/nccl-net-abi.md
// section 1) and live here so that the transport and the logger do not include plugin/abi/:
// the versioned ABI structs sit on top and re-export these names (plugin/abi/net_abi.h).
#pragma once

#include <cstddef>
#include <cstdint>

namespace devmem::nccl {

inline constexpr int kNetHandleMaxSize = 128;           // NCCL_NET_HANDLE_MAXSIZE
inline constexpr int kPtrHost = 0x1;                    // NCCL_PTR_HOST
inline constexpr int kPtrCuda = 0x2;                    // NCCL_PTR_CUDA
inline constexpr int kPtrDmaBuf = 0x4;                  // NCCL_PTR_DMABUF
inline constexpr int kNetMaxRequests = 32;              // NCCL_NET_MAX_REQUESTS
inline constexpr size_t kMaxNetSize = size_t{1} << 30;  // MAX_NET_SIZE
// NCCL_STEPS (v2.28.9-1 src/include/device.h:24): receives NCCL keeps in flight per connection.
inline constexpr size_t kSteps = 8;

// ncclDebugLogLevel.
enum LogLevel : int {
  kLogNone = 0,
  kLogVersion = 1,
  kLogWarn = 2,
  kLogInfo = 3,
  kLogAbort = 4,
  kLogTrace = 5
};
// ncclDebugLogSubSys bits the plugin logs under.
enum LogSubsys : unsigned long {
  kSubsysInit = 0x1,
  kSubsysNet = 0x10,
  kSubsysEnv = 0x80,
  kSubsysAll = ~0UL
};

// ncclDebugLogger_t.
using DebugLogger = void (*)(LogLevel level, unsigned long flags, const char* file, int line,
                             const char* fmt, ...);

}  // namespace devmem::nccl
