// Which NIC a connection's sockets leave through. NCCL picks a NIC per connection, and the
// receiver steers (and, for devmem, binds) per NIC; so every control and data socket of a
// connection is bound to its NIC's address before connect, as the members of a virtual NIC
// already were. The source address fixes which NIC the peer's packets come back to, but not
// which device ours leave by: Linux picks the egress device by route, and with two NICs in
// one subnet the first connected route wins for both (a source bound to the second NIC's
// address still leaves through the first, unless a policy rule on the source says
// otherwise). So each path's route is looked up with its source at connect, and a path that
// leaves through another device is WARNed about once per process.
#pragma once

#include <string>

#include "plugin/core/net_device.h"
#include "plugin/core/socket_address.h"
#include "plugin/core/status.h"

namespace devmem {

// Empty when the kernel's route from `from` to `to` leaves through `ifindex`, else why not
// (naming the device it would use).
std::string RouteMismatch(const SocketAddress& from, const SocketAddress& to, int ifindex);

// The WARN for a path from `nic` to `to` whose route leaves through another device, the first
// time this process checks that path; empty when the route is right, or on every later check
// of the same path (NCCL connects the same pair of NICs many times), and for a peer on this
// host, which the kernel reaches through lo.
std::string RouteWarningOnce(const NetDevice& nic, const SocketAddress& to);

// bind() of `fd` to `nic`'s address, port 0, before connect.
Status BindSourceAddress(int fd, const NetDevice& nic);

// SO_BINDTODEVICE of `fd` to `nic`, for devmem TX data sockets (devmem.rst, "TX path", asks for
// it): the kernel sends a devmem TX skb only out of the bound NIC and refuses a sendmsg whose
// route leaves elsewhere (ENODEV, net/core/devmem.c net_devmem_get_binding); bound to the
// device, a later route change cannot move the flow. The first SO_BINDTODEVICE of a socket
// needs no capability since Linux 5.7 (net/core/sock.c sock_bindtoindex_locked: CAP_NET_RAW
// only `if (sk->sk_bound_dev_if && ...)`, commit c427bfec18f2), so on every devmem TX kernel
// (6.16+) a refusal is unexpected; the caller WARNs once and keeps the connect-time route check
// as the guard. The binding also holds for what arrives: TCP matches a device-bound socket only
// to segments that came in on that device (include/net/inet_hashtables.h inet_match ->
// inet_sk_bound_dev_eq), so the peer's ACKs must reach this host through the same NIC, as they
// do with one subnet per NIC (tests/transport/source_route_test.cc pins it for the same subnet).
Status BindToDevice(int fd, const NetDevice& nic);

}  // namespace devmem
