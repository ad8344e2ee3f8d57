// The host-wide lock around choosing and inserting one ntuple rule. Every rank process of a host
// steers its flows on the same NICs at about the same time, and a driver that cannot choose
// locations itself (mlx5) silently replaces whatever rule sits at the location it is given: two
// processes that read the table and then insert at the same free slot would steal each other's
// flow. flock(2) on a file that all of them reach serialises choose+insert; the kernel drops the
// lock when its holder exits, so a crashed rank never wedges the others.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "plugin/core/status.h"
#include "plugin/core/unique_fd.h"

namespace devmem {

struct FlowRuleLockOptions {
  // Tried in order: the first one where the lock file can be opened (created 0755/0644 when
  // missing) holds the lock. Ranks of a host share the lock only if they all reach the same one.
  std::vector<std::string> directories = {"/run/nccl-net-devmem", "/tmp/nccl-net-devmem"};
  // How long to wait for another holder before giving up with an error (never a hang).
  std::chrono::milliseconds timeout{5000};
};

// flock(LOCK_EX) held from Acquire until destruction.
class FlowRuleLock final {
 public:
  // The lock for the rule table of `ifname`: <directory>/flowrules.<ifname>.lock.
  static Result<FlowRuleLock> Acquire(const std::string& ifname,
                                      const FlowRuleLockOptions& options = {});
  // The lock on one explicit, already existing or creatable, file.
  static Result<FlowRuleLock> AcquireFile(const std::string& path,
                                          std::chrono::milliseconds timeout);

  FlowRuleLock(FlowRuleLock&&) noexcept = default;
  FlowRuleLock& operator=(FlowRuleLock&&) = delete;
  FlowRuleLock(const FlowRuleLock&) = delete;
  FlowRuleLock& operator=(const FlowRuleLock&) = delete;
  // Unlocks explicitly: a process forked while the lock was held shares the locked open file
  // description, and closing our descriptor alone would leave the lock with that child.
  ~FlowRuleLock();

  const std::string& path() const { return path_; }

 private:
  FlowRuleLock(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  static Result<FlowRuleLock> LockWithin(UniqueFd fd, std::string path,
                                         std::chrono::milliseconds timeout);
  UniqueFd fd_;
  std::string path_;
};

}  // namespace devmem
