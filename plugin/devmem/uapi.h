// The devmem TCP user API, written from shared/specs/devmem-uapi.md (asm-generic values, as on
// x86_64 and aarch64). Defined here because glibc and Debian 12's kernel headers predate it.
#pragma once

#include <cstdint>

namespace devmem::uapi {

// Socket level (include/uapi/asm-generic/socket.h, include/linux/socket.h).
inline constexpr int kScmDevmemLinear = 78;       // SO_DEVMEM_LINEAR / SCM_DEVMEM_LINEAR
inline constexpr int kScmDevmemDmabuf = 79;       // SO_DEVMEM_DMABUF / SCM_DEVMEM_DMABUF
inline constexpr int kSoDevmemDontneed = 80;      // SO_DEVMEM_DONTNEED
inline constexpr int kMsgSockDevmem = 0x2000000;  // MSG_SOCK_DEVMEM (kernel-internal header)
inline constexpr int kMaxDontneedTokens = 128;    // entries per SO_DEVMEM_DONTNEED call
inline constexpr int kMaxDontneedFrags = 1024;    // frags inspected per call
inline constexpr int kEtooSmall = 525;            // ETOOSMALL: not even one cmsg fit

// struct dmabuf_cmsg (include/uapi/linux/uio.h): 24 bytes.
struct DmabufCmsg {
  uint64_t frag_offset;
  uint32_t frag_size;
  uint32_t frag_token;
  uint32_t dmabuf_id;
  uint32_t flags;
};
static_assert(sizeof(DmabufCmsg) == 24);

// struct dmabuf_token: tokens token_start .. token_start + token_count - 1.
struct DmabufToken {
  uint32_t token_start;
  uint32_t token_count;
};
static_assert(sizeof(DmabufToken) == 8);

// Generic netlink family "netdev" (include/uapi/linux/netdev.h).
inline constexpr const char* kNetdevFamilyName = "netdev";
inline constexpr int kNetdevFamilyVersion = 1;
enum NetdevCmd : uint8_t {
  kNetdevCmdDevGet = 1,
  kNetdevCmdQueueGet = 10,
  kNetdevCmdBindRx = 13,
  // Linux 6.16+: Documentation/netlink/specs/netdev.yaml appends bind-tx after napi-set (14);
  // genl op ids never renumber.
  kNetdevCmdBindTx = 15,
};
enum NetdevDevAttr : int { kDevIfindex = 1, kDevXdpFeatures = 3 };
enum NetdevQueueAttr : int {
  kQueueId = 1,
  kQueueIfindex = 2,
  kQueueType = 3,
  kQueueNapiId = 4,
  kQueueDmabuf = 5,
  kQueueIoUring = 6,  // empty nest: io_uring zcrx holds the queue (Linux 6.15+)
  kQueueXsk = 7,      // empty nest: an AF_XDP socket holds the queue
  kQueueAttrMax = 7,
};
enum NetdevDmabufAttr : int {
  kDmabufIfindex = 1,
  kDmabufQueues = 2,
  kDmabufFd = 3,
  kDmabufId = 4,
  // bind-rx only, kernels from 7.x (torvalds/linux @001b5d34 net/core/netdev-genl-gen.c
  // netdev_bind_rx_nl_policy: u32, at least PAGE_SIZE; netdev-genl.c: a power of two, else
  // EINVAL "rx-page-size must be a power of 2"). Older kernels' strict policy refuses the
  // unknown attribute (EINVAL, "Unknown attribute type").
  kDmabufRxPageSize = 5,
  kDmabufAttrMax = 5,
};
inline constexpr uint32_t kQueueTypeRx = 0;
inline constexpr uint32_t kQueueTypeTx = 1;

}  // namespace devmem::uapi
