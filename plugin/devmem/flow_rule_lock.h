// The host-wide lock around choosing and inserting (or reaping) ntuple rules and claiming RX
// queues. Every rank process of a host steers its flows on the same NICs at about the same time,
// and a driver that cannot choose locations itself (mlx5) silently replaces whatever rule sits at
// the location it is given: two processes that read the table and then insert at the same free
// slot would steal each other's flow.
//
// Scope: the lock must cover everyone who sees the same NIC, i.e. the NETWORK namespace, not a
// mount namespace (pods with hostNetwork share the NIC but not /run or /tmp, so a lock file there
// is a different lock in every pod). The lock is therefore the bind() of an abstract AF_UNIX name:
// abstract names live in the per-netns hash table (net/unix/af_unix.c: __unix_find_socket_byname
// walks net->unx.table, bind of a taken name fails with EADDRINUSE in unix_bind_abstract), so
// exactly one socket of the netns can hold "@<prefix>/<ifname>", whatever its mount, pid or user
// namespace, and the kernel frees the name when the holder's last descriptor closes (a crashed or
// SIGKILLed rank never wedges the others).
#pragma once

#include <chrono>
#include <string>

#include "plugin/core/status.h"
#include "plugin/core/unique_fd.h"

namespace devmem {

struct FlowRuleLockOptions {
  // The abstract name of NIC <ifname>'s lock is "@<name_prefix>/<ifname>" (tests use their own).
  std::string name_prefix = "nccl-net-devmem/lock";
  // How long to wait for another holder before giving up with an error (never a hang).
  std::chrono::milliseconds timeout{5000};
};

// The abstract name bound from Acquire until destruction.
class FlowRuleLock final {
 public:
  static Result<FlowRuleLock> Acquire(const std::string& ifname,
                                      const FlowRuleLockOptions& options = {});

  FlowRuleLock(FlowRuleLock&&) noexcept = default;
  FlowRuleLock& operator=(FlowRuleLock&&) = delete;
  FlowRuleLock(const FlowRuleLock&) = delete;
  FlowRuleLock& operator=(const FlowRuleLock&) = delete;
  // Closing the socket releases the name. A child forked (without exec) while the lock is held
  // shares the socket and keeps the name until it exits or closes it: the lock is held only for
  // the few ioctls of one insert, and the socket is SOCK_CLOEXEC.
  ~FlowRuleLock() = default;

  // "@nccl-net-devmem/lock/eth0": the name as `ss -xl` shows it.
  const std::string& name() const { return name_; }

 private:
  FlowRuleLock(UniqueFd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}
  UniqueFd fd_;
  std::string name_;
};

// Binds `fd` (an AF_UNIX socket) to the abstract name `name` (without the leading '@'); the
// errno of bind(2) on failure, 0 on success. Shared with the registry's owner sockets.
int BindAbstractName(int fd, const std::string& name);

}  // namespace devmem
