// NIC control over the generic-netlink "netdev" family (libnl-3 genl): device and RX queue
// queries, and bind-rx. A binding lives exactly as long as the netlink socket that created it,
// so RxQueueBinding owns that socket. Every kernel refusal carries errno text and the extack
// message or offending attribute when the kernel gives one; a bind refusal also what it means
// and where to look (bind_errors.h).
#pragma once

#include <netlink/netlink.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "plugin/core/status.h"

namespace devmem {

struct NlSocketDeleter {
  void operator()(nl_sock* sock) const;
};
using NlSocket = std::unique_ptr<nl_sock, NlSocketDeleter>;

struct RxQueueInfo {
  uint32_t id = 0;
  uint32_t napi_id = 0;    // 0 when the driver reports none
  uint32_t dmabuf_id = 0;  // non-zero when a dmabuf is bound to the queue
  bool io_uring = false;   // io_uring zcrx is the queue's memory provider
  bool af_xdp = false;     // an AF_XDP socket's pool is on the queue
};

class NetdevNetlink final {
 public:
  // Connects a genl socket and resolves the "netdev" family (fails on kernels without it).
  static Result<NetdevNetlink> Open();
  int family_id() const { return family_; }

  // dev-get: true when the kernel's netdev family knows the device.
  Result<bool> DeviceKnown(int ifindex);
  // queue-get dump, RX queues of one device.
  Result<std::vector<RxQueueInfo>> RxQueues(int ifindex);

 private:
  friend class RxQueueBinding;
  NetdevNetlink(NlSocket sock, int family) : sock_(std::move(sock)), family_(family) {}
  NlSocket sock_;
  int family_ = 0;
};

// One bind-rx: `dmabuf_fd` bound to `queues` of `ifindex`. Destroying it closes the netlink
// socket, which makes the kernel unbind (and restart the queues). `rx_page_bytes` != 0 asks
// for niovs of that size (NETDEV_A_DMABUF_RX_PAGE_SIZE; the extack names the attribute where a
// kernel or driver refuses it).
class RxQueueBinding final {
 public:
  static Result<RxQueueBinding> Bind(int ifindex, int dmabuf_fd,
                                     const std::vector<uint32_t>& queues,
                                     uint32_t rx_page_bytes = 0);
  uint32_t dmabuf_id() const { return dmabuf_id_; }
  int ifindex() const { return ifindex_; }

 private:
  RxQueueBinding(NlSocket sock, uint32_t id, int ifindex)
      : sock_(std::move(sock)), dmabuf_id_(id), ifindex_(ifindex) {}
  NlSocket sock_;
  uint32_t dmabuf_id_ = 0;
  int ifindex_ = 0;
};

// The kernel's own answer to a refused bind: its errno (positive) and extack message.
struct BindRefusal {
  int error = 0;
  std::string extack;
};

// One bind-tx (Linux 6.16+): `dmabuf_fd` bound for transmit on `ifindex`; sends then name its
// dmabuf_id in an SCM_DEVMEM_DMABUF cmsg. Destroying it closes the netlink socket, which makes
// the kernel unbind. Drivers without netmem TX refuse it ("Driver does not support netmem
// TX", EOPNOTSUPP); a kernel that predates bind-tx refuses the unknown command (EOPNOTSUPP
// without that message).
class TxBinding final {
 public:
  // `refusal`, when given, receives the kernel's errno and extack if it refuses.
  static Result<TxBinding> Bind(int ifindex, int dmabuf_fd, BindRefusal* refusal = nullptr);
  uint32_t dmabuf_id() const { return dmabuf_id_; }
  int ifindex() const { return ifindex_; }

 private:
  TxBinding(NlSocket sock, uint32_t id, int ifindex)
      : sock_(std::move(sock)), dmabuf_id_(id), ifindex_(ifindex) {}
  NlSocket sock_;
  uint32_t dmabuf_id_ = 0;
  int ifindex_ = 0;
};

}  // namespace devmem
