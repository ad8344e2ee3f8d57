#include "plugin/devmem/frag_geometry.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "plugin/core/status.h"
#include "plugin/devmem/uapi.h"

namespace devmem {
namespace {

uint64_t DivideUp(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

}  // namespace

uint32_t KernelPageBytes() {
  const long page = sysconf(_SC_PAGESIZE);
  return page > 0 ? static_cast<uint32_t>(page) : 4096;
}

std::string RxPageSizeRefusal(uint32_t rx_page_bytes, uint32_t kernel_page_bytes) {
  if (rx_page_bytes < kernel_page_bytes) {
    return Format(
        "NCCL_DEVMEM_RX_PAGE_SIZE=%u is below this kernel's %u-byte page, the smallest RX page "
        "size bind-rx takes",
        rx_page_bytes, kernel_page_bytes);
  }
  if ((rx_page_bytes & (rx_page_bytes - 1)) != 0 || rx_page_bytes > kMaxRxPageBytes) {
    return Format("NCCL_DEVMEM_RX_PAGE_SIZE=%u is not a power of two up to %llu", rx_page_bytes,
                  static_cast<unsigned long long>(kMaxRxPageBytes));
  }
  return "";
}

FragGeometry FragGeometry::ForNic(uint32_t mtu, uint32_t rx_buf_len, uint32_t niov_bytes) {
  niov_bytes = std::max<uint32_t>(niov_bytes, 1);
  // Below 512 B of payload the MTU is not one devmem runs on; the floor keeps the estimate
  // finite.
  const uint32_t payload = std::max<uint32_t>(
      mtu > kTcpIpv6TimestampHeaderBytes ? mtu - kTcpIpv6TimestampHeaderBytes : 0, 512);
  // Counting frags, the smaller buffer is the worse case; holding region, the larger one.
  const uint32_t count_buffer =
      std::min(rx_buf_len != 0 ? rx_buf_len : kUnreportedRxBufBytes, niov_bytes);
  const uint32_t space_buffer = std::min(rx_buf_len != 0 ? rx_buf_len : niov_bytes, niov_bytes);
  // One frag per buffer the payload fills, and one more where it straddles a boundary.
  const uint32_t frags = static_cast<uint32_t>(DivideUp(payload, count_buffer)) + 1;
  return FragGeometry(niov_bytes, payload, frags, space_buffer, mtu, rx_buf_len);
}

FragGeometry FragGeometry::ForEmulation(uint32_t page_bytes) {
  page_bytes = std::max<uint32_t>(page_bytes, 2);
  // frag_receiver.cc: a frag is a whole page, or the half page from the middle on; none is
  // smaller than half a page except where a receive ends inside it (a run's edges).
  return FragGeometry(page_bytes, page_bytes / 2, 1, page_bytes, 0, 0);
}

uint64_t FragGeometry::MaxFrags(uint64_t stream_bytes, uint64_t pieces) const {
  if (stream_bytes == 0) return 0;
  pieces = std::max<uint64_t>(pieces, 1);
  // Each piece may start and end inside a unit: two partial units per piece.
  return (DivideUp(stream_bytes, unit_bytes_) + 2 * pieces) * frags_per_unit_;
}

uint64_t FragGeometry::MaxNiovBytesPinned(uint64_t stream_bytes) const {
  return DivideUp(stream_bytes, unit_bytes_) * frags_per_unit_ * niov_bytes_;
}

double FragGeometry::RegionBytesPerStreamByte() const {
  if (mtu_ == 0) return static_cast<double>(buffer_bytes_) / unit_bytes_;  // a page per half
  const double held = static_cast<double>(DivideUp(unit_bytes_, buffer_bytes_) * buffer_bytes_);
  return std::max(1.0, held / unit_bytes_);
}

std::string FragGeometry::Describe() const {
  if (mtu_ == 0) {
    return Format("emulated %u-byte pages: frags of %u or %u bytes", niov_bytes_, niov_bytes_,
                  niov_bytes_ / 2);
  }
  return Format("frags <= %u per %u-byte payload (MTU %u, rx-buf-len %s, niov %u)", frags_per_unit_,
                unit_bytes_, mtu_,
                reported_rx_buf_len_ != 0 ? std::to_string(reported_rx_buf_len_).c_str()
                                          : "not reported, 2048 assumed",
                niov_bytes_);
}

size_t DevmemControlBytes(uint64_t iov_bytes, const FragGeometry& geometry) {
  // Linear cmsgs: one per packet at most, rare with header split and hds-thresh 0; eight more
  // cover the receives that start with one.
  constexpr uint64_t kLinearCmsgs = 8;
  const uint64_t cmsgs = geometry.MaxFrags(iov_bytes) + kLinearCmsgs;
  return static_cast<size_t>(cmsgs * CMSG_SPACE(sizeof(uapi::DmabufCmsg)));
}

}  // namespace devmem
