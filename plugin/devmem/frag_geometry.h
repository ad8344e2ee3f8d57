// What sizes devmem frags can have, and so how many of them a number of stream bytes can take:
// the one owner of the page (niov) size, the driver's buffer size and the packet payload, for
// the recvmsg control buffer, the RX budget, the scatter consumer's limits and the NCCL unpack
// refusal alike.
//
// Kernel facts this encodes:
//   - A binding cuts its dmabuf into niovs of PAGE_SIZE, or of NETDEV_A_DMABUF_RX_PAGE_SIZE
//     where bind-rx carries it (torvalds/linux @001b5d34 net/core/netdev-genl.c
//     netdev_nl_bind_rx_doit: niov_shift = ilog2(rx_page_size); multipath-tcp/mptcp_net-next
//     @7ac14249 net/core/devmem.c net_devmem_bind_dmabuf: area.num_niovs = size >> niov_shift).
//   - Each SCM_DEVMEM_DMABUF cmsg describes one skb frag, and an skb frag lies in one netmem,
//     so a frag never crosses a niov boundary (net/core/devmem.h net_iov_virtual_addr:
//     idx << niov_shift in the rx-page-size series).
//   - A packet's payload lands in driver buffers of rx-buf-len (ethtool
//     ETHTOOL_A_RINGS_RX_BUF_LEN; gve's GVE_DEFAULT_RX_BUFFER_SIZE is 2048 at any MTU), so one
//     packet is ceil(payload / buffer) frags, plus one where a payload straddles a buffer or
//     niov boundary (drivers that pack payloads, mlx5 SHAMPO).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "plugin/core/config.h"

namespace devmem {

// PAGE_SIZE of the running kernel: the niov size of a binding without rx-page-size.
uint32_t KernelPageBytes();

// Why `rx_page_bytes` (NCCL_DEVMEM_RX_PAGE_SIZE, already a power of two in config's range)
// cannot be a niov size on a kernel of `kernel_page_bytes`; "" when it can. The netdev policy
// takes nothing below PAGE_SIZE (torvalds/linux @001b5d34 net/core/netdev-genl-gen.c
// netdev_a_dmabuf_rx_page_size_range .min = PAGE_SIZE).
std::string RxPageSizeRefusal(uint32_t rx_page_bytes, uint32_t kernel_page_bytes);

// Headers the smallest payload of one MTU leaves room for: IPv6 (40) + TCP (20) + the
// timestamp option (12).
inline constexpr uint32_t kTcpIpv6TimestampHeaderBytes = 72;
// The driver buffer assumed where the driver reports no rx-buf-len: gve's 2 KiB, the smallest
// a devmem driver uses (id 67251638382, GVE_DEFAULT_RX_BUFFER_SIZE).
inline constexpr uint32_t kUnreportedRxBufBytes = 2048;

class FragGeometry {
 public:
  // The emulated NIC of 4 KiB pages (what the plugin's emulation always used).
  FragGeometry() : FragGeometry(ForEmulation(4096)) {}
  // A real NIC: its MTU, the rx-buf-len ethtool reports (0: not reported) and the binding's
  // niov size (KernelPageBytes() or NCCL_DEVMEM_RX_PAGE_SIZE).
  static FragGeometry ForNic(uint32_t mtu, uint32_t rx_buf_len, uint32_t niov_bytes);
  // The emulated NIC (frag_receiver.h): whole pages and half pages at half-page offsets.
  static FragGeometry ForEmulation(uint32_t page_bytes);

  uint32_t niov_bytes() const { return niov_bytes_; }
  // Stream bytes of one unit (a packet's payload; for emulation half a page) and the most
  // frags one unit can become.
  uint32_t unit_bytes() const { return unit_bytes_; }
  uint32_t frags_per_unit() const { return frags_per_unit_; }
  // The most region frags `stream_bytes` of one TCP stream can arrive as, when they come as
  // `pieces` separate runs (a data socket's chunks; each run may start and end mid-unit).
  uint64_t MaxFrags(uint64_t stream_bytes, uint64_t pieces = 1) const;
  // Region bytes `stream_bytes` can pin if every frag pins a niov of its own (run edges aside:
  // the region check keeps the rule it always had, a step in half-page frags fits half the
  // pool).
  uint64_t MaxNiovBytesPinned(uint64_t stream_bytes) const;
  // Region bytes a stream byte can hold on to while its frags' tokens are out: every unit keeps
  // whole driver buffers (a half-used 4 KiB buffer holds 4 KiB). At least 1.
  double RegionBytesPerStreamByte() const;
  // One line for the log: "frags <= 2 per 1428-byte payload (MTU 1500, rx-buf-len 2048, niov
  // 4096)".
  std::string Describe() const;

 private:
  FragGeometry(uint32_t niov, uint32_t unit, uint32_t frags_per_unit, uint32_t buffer, uint32_t mtu,
               uint32_t reported_rx_buf_len)
      : niov_bytes_(niov),
        unit_bytes_(unit),
        frags_per_unit_(frags_per_unit),
        buffer_bytes_(buffer),
        mtu_(mtu),
        reported_rx_buf_len_(reported_rx_buf_len) {}
  uint32_t niov_bytes_;
  uint32_t unit_bytes_;
  uint32_t frags_per_unit_;
  uint32_t buffer_bytes_;  // what one unit's frags occupy per frag, for the region budget
  uint32_t mtu_;           // 0: emulation
  uint32_t reported_rx_buf_len_;
};

// recvmsg(MSG_SOCK_DEVMEM) control space for a receive of up to `iov_bytes`: a cmsg for every
// frag those bytes can be, plus a few linear ones, and an exact multiple of
// CMSG_SPACE(sizeof(dmabuf_cmsg)) (6.12/6.13 put_cmsg could write a truncated cmsg into a
// leftover; tcp_recvmsg_dmabuf ends the receive when the next cmsg does not fit).
size_t DevmemControlBytes(uint64_t iov_bytes, const FragGeometry& geometry);

}  // namespace devmem
