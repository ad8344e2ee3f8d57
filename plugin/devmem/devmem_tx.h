// One devmem TX send (Linux 6.16+; Documentation/networking/devmem.rst, "TX path"): the payload
// is named by its byte offset into a dmabuf bound with bind-tx (TxBinding), not by an address,
// and the call carries one SCM_DEVMEM_DMABUF cmsg with the binding's dmabuf id. The socket must
// have SO_ZEROCOPY and the call MSG_ZEROCOPY; completions arrive on the error queue like any
// MSG_ZEROCOPY send (plugin/transport/zerocopy.h), and only then may the bytes change.
//
// What the kernel refuses (net/core/sock.c __sock_cmsg_send, net/ipv4/tcp.c tcp_sendmsg_locked,
// net/core/devmem.c net_devmem_get_binding; shared/specs/devmem-uapi.md section 6):
//   EINVAL        no TX binding has the id (the ids are host-wide, net_devmem_dmabuf_bindings;
//                 an RX binding does not count), or the kernel predates devmem TX and rejects
//                 the unknown cmsg type, or MSG_ZEROCOPY / SO_ZEROCOPY is missing
//   ENODEV        the socket's route leaves through another device than the bound one
//   EHOSTUNREACH  the socket has no route any more
//   EFAULT        the offsets reach past the dmabuf (or, before the single-iovec fix, a
//                 one-iovec send: zerocopy_fill_skb_from_devmem took ITER_IOVEC only; we
//                 always send two)
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace devmem {

// The control buffer of one devmem TX sendmsg.
struct DevmemTxControl {
  alignas(cmsghdr) char bytes[CMSG_SPACE(sizeof(uint32_t))];
};

// Fills `msg` (with `iov[2]` and `control`, which must outlive it) for `length` bytes at byte
// `dmabuf_offset` of the dmabuf bound as `dmabuf_id`: always two iovecs, the payload and an
// empty one after it. sendmsg turns exactly one iovec into ITER_UBUF (lib/iov_iter.c
// __import_iovec, nr_segs == 1), and the devmem TX path as merged (bd61848900bf "net: devmem:
// Implement TX path") refused every iterator but ITER_IOVEC with EFAULT in
// zerocopy_fill_skb_from_devmem (net/core/datagram.c) until "net: devmem: support single IOV
// with sendmsg" (May 2025) dropped the check; two entries are ITER_IOVEC on every kernel, and
// an empty entry adds no frag (the loop there runs while bytes are left).
void BuildDevmemTxMessage(uint32_t dmabuf_id, uint64_t dmabuf_offset, size_t length, iovec iov[2],
                          DevmemTxControl* control, msghdr* msg);

// sendmsg(MSG_ZEROCOPY | MSG_DONTWAIT | MSG_NOSIGNAL) of such a message; returns what sendmsg
// returns (errno set on -1).
ssize_t SendDevmemTx(int fd, uint32_t dmabuf_id, uint64_t dmabuf_offset, size_t length);

// What a refused devmem TX sendmsg means, for the comm's error (`err` is its errno).
std::string DescribeDevmemTxError(int err);

}  // namespace devmem
