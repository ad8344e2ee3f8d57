// Descriptors that only the process that opened them may hold. A netdev netlink socket that
// made a bind-rx or bind-tx IS the binding: the kernel unbinds when the socket's last
// reference closes (net/core/netdev-genl.c netdev_nl_sock_priv_destroy, called as the netlink
// socket is released). A child created by fork() without exec (PyTorch DataLoader workers with
// the fork start method, multiprocessing) shares that socket and keeps the queue bound, and
// the GPU memory pinned, after the rank has exited; close-on-exec does not help, since there
// is no exec. Linux has no close-on-fork, so a pthread_atfork child handler does it: in every
// forked child, before fork() returns there, each registered descriptor is replaced (dup3) by
// a placeholder open on /dev/null. The number stays taken, so the child's copy of the owner
// closes the placeholder, never an unrelated descriptor that reused the number.
#pragma once

namespace devmem {

// Registers `fd` (at most 1024 at a time; beyond that the process WARNs once and children keep
// the rest). Call after the descriptor exists.
void KeepOutOfForkedChildren(int fd);
// Unregisters `fd`; call before closing it, so the handler never touches a reused number.
void StopKeepingOutOfForkedChildren(int fd);

}  // namespace devmem
