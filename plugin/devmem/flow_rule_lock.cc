#include "plugin/devmem/flow_rule_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <thread>

#include "plugin/core/log.h"

namespace devmem {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kFirstPause{1};
constexpr std::chrono::milliseconds kLongestPause{50};

// A directory the lock file may live in: created 0755 when missing (whatever the umask), and
// when it exists, a real directory that nobody but root or us can write (the /tmp fallback is
// world-writable: a directory planted there by another user must not take our lock file).
Status PrepareDirectory(const std::string& dir) {
  if (mkdir(dir.c_str(), 0755) == 0) {
    if (chmod(dir.c_str(), 0755) != 0) return Status::Errno(errno, "chmod 0755 %s", dir.c_str());
    return Status::Ok();
  }
  if (errno != EEXIST) return Status::Errno(errno, "creating %s", dir.c_str());
  struct stat st {};
  if (lstat(dir.c_str(), &st) != 0) return Status::Errno(errno, "stat %s", dir.c_str());
  if (!S_ISDIR(st.st_mode)) {
    return Status::Error(ErrorKind::kSystem, "%s exists and is not a directory", dir.c_str());
  }
  if ((st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return Status::Error(ErrorKind::kSystem,
                         "%s is not trusted for the lock (owner uid %u, mode %03o; expected root "
                         "or uid %u, not writable by group or others)",
                         dir.c_str(), static_cast<unsigned>(st.st_uid),
                         static_cast<unsigned>(st.st_mode & 07777),
                         static_cast<unsigned>(geteuid()));
  }
  return Status::Ok();
}

// Opens (creating 0644 when missing) the lock file. Read-only is enough for flock(2), so ranks
// of another user can share a file that root created.
Result<UniqueFd> OpenLockFile(const std::string& path) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    UniqueFd fd(open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (fd.valid()) {
      if (fchmod(fd.get(), 0644) != 0) return Status::Errno(errno, "chmod 0644 %s", path.c_str());
      return fd;
    }
    if (errno != EEXIST) return Status::Errno(errno, "creating lock file %s", path.c_str());
    fd.reset(open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (fd.valid()) return fd;
    if (errno != ENOENT) return Status::Errno(errno, "opening lock file %s", path.c_str());
    // Removed between the two opens: create it again.
  }
  return Status::Error(ErrorKind::kSystem, "lock file %s keeps disappearing", path.c_str());
}

void WarnFallbackOnce(const std::string& why, const std::string& dir) {
  static std::atomic<bool> warned{false};
  if (warned.exchange(true)) return;
  log::Warn(
      "flow rule lock: %s; using %s instead. Every rank process of this host must reach the same "
      "directory, or rules on NICs that take explicit locations (mlx5) can overwrite each other",
      why.c_str(), dir.c_str());
}

}  // namespace

Result<FlowRuleLock> FlowRuleLock::LockWithin(UniqueFd fd, std::string path,
                                              std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  Clock::duration pause = kFirstPause;
  while (true) {
    if (flock(fd.get(), LOCK_EX | LOCK_NB) == 0) {
      return FlowRuleLock(std::move(fd), std::move(path));
    }
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) return Status::Errno(errno, "flock(LOCK_EX) on %s", path.c_str());
    const Clock::time_point now = Clock::now();
    if (now >= deadline) {
      return Status::Error(ErrorKind::kSystem,
                           "flow rule lock %s is still held by another process after %lld ms "
                           "(another rank inserting flow rules, or a stuck one: `lslocks` names "
                           "the holder)",
                           path.c_str(), static_cast<long long>(timeout.count()));
    }
    std::this_thread::sleep_for(std::min(pause, deadline - now));
    pause = std::min<Clock::duration>(pause * 2, kLongestPause);
  }
}

FlowRuleLock::~FlowRuleLock() {
  if (fd_.valid()) flock(fd_.get(), LOCK_UN);
}

Result<FlowRuleLock> FlowRuleLock::AcquireFile(const std::string& path,
                                               std::chrono::milliseconds timeout) {
  Result<UniqueFd> fd = OpenLockFile(path);
  if (!fd.ok()) return fd.status();
  return LockWithin(std::move(fd).value(), path, timeout);
}

Result<FlowRuleLock> FlowRuleLock::Acquire(const std::string& ifname,
                                           const FlowRuleLockOptions& options) {
  if (ifname.empty() || ifname.find('/') != std::string::npos) {
    return Status::Error(ErrorKind::kInvalidArgument, "no flow rule lock for interface name '%s'",
                         ifname.c_str());
  }
  std::string failures;
  for (const std::string& dir : options.directories) {
    const std::string path = Format("%s/flowrules.%s.lock", dir.c_str(), ifname.c_str());
    Status usable = PrepareDirectory(dir);
    Result<UniqueFd> fd = usable.ok() ? OpenLockFile(path) : Result<UniqueFd>(usable);
    if (!fd.ok()) {
      if (!failures.empty()) failures += "; ";
      failures += fd.status().message();
      continue;
    }
    if (!failures.empty()) WarnFallbackOnce(failures, dir);
    return LockWithin(std::move(fd).value(), path, options.timeout);
  }
  return Status::Error(ErrorKind::kSystem, "no usable directory for the flow rule lock of %s: %s",
                       ifname.c_str(), failures.empty() ? "none configured" : failures.c_str());
}

}  // namespace devmem
