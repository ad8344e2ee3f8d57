#include "plugin/devmem/devmem_tx.h"

#include <cerrno>
#include <cstring>

#include "plugin/core/status.h"
#include "plugin/devmem/uapi.h"

namespace devmem {

void BuildDevmemTxMessage(uint32_t dmabuf_id, uint64_t dmabuf_offset, size_t length, iovec iov[2],
                          DevmemTxControl* control, msghdr* msg) {
  // The kernel reads iov_base as an offset into the bound dmabuf (devmem.rst: "the iov_base
  // ... is interpreted as an offset into the dmabuf"). The second, empty entry only makes the
  // iovec count 2 (see the header); the fill loop stops once `length` bytes are taken.
  iov[0].iov_base = reinterpret_cast<void*>(static_cast<uintptr_t>(dmabuf_offset));
  iov[0].iov_len = length;
  iov[1].iov_base = reinterpret_cast<void*>(static_cast<uintptr_t>(dmabuf_offset + length));
  iov[1].iov_len = 0;
  memset(control->bytes, 0, sizeof(control->bytes));
  *msg = msghdr{};
  msg->msg_iov = iov;
  msg->msg_iovlen = 2;
  msg->msg_control = control->bytes;
  msg->msg_controllen = sizeof(control->bytes);
  cmsghdr* cmsg = CMSG_FIRSTHDR(msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = uapi::kScmDevmemDmabuf;
  cmsg->cmsg_len = CMSG_LEN(sizeof(uint32_t));  // exactly: any other length is EINVAL
  memcpy(CMSG_DATA(cmsg), &dmabuf_id, sizeof(dmabuf_id));
}

ssize_t SendDevmemTx(int fd, uint32_t dmabuf_id, uint64_t dmabuf_offset, size_t length) {
  iovec iov[2];
  DevmemTxControl control;
  msghdr msg;
  BuildDevmemTxMessage(dmabuf_id, dmabuf_offset, length, iov, &control, &msg);
  return sendmsg(fd, &msg, MSG_ZEROCOPY | MSG_DONTWAIT | MSG_NOSIGNAL);
}

std::string DescribeDevmemTxError(int err) {
  switch (err) {
    case EINVAL:
      return Format(
          "devmem TX sendmsg refused (%s): no TX binding has that dmabuf id (ids are "
          "host-wide; an RX binding does not count), SO_ZEROCOPY is off on the socket, or the "
          "kernel predates devmem TX (Linux >= 6.16)",
          strerror(err));
    case ENODEV:
      return Format(
          "devmem TX sendmsg refused (%s): the data socket's route leaves through another "
          "device than the NIC the send buffers are bound to (check the routes and "
          "NCCL_SOCKET_IFNAME)",
          strerror(err));
    case EHOSTUNREACH:
      return Format("devmem TX sendmsg refused (%s): the data socket has no route any more",
                    strerror(err));
    case EFAULT:
      return Format(
          "devmem TX sendmsg refused (%s): the offsets reach past the bound dmabuf, or the "
          "kernel lacks the single-iovec fix of devmem TX (zerocopy_fill_skb_from_devmem took "
          "ITER_IOVEC only)",
          strerror(err));
    default:
      return Format("devmem TX sendmsg failed: %s (errno %d)", strerror(err), err);
  }
}

}  // namespace devmem
