#include "plugin/devmem/flow_rule_lock.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <thread>

namespace devmem {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kFirstPause{1};
constexpr std::chrono::milliseconds kLongestPause{50};

}  // namespace

int BindAbstractName(int fd, const std::string& name) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  // Abstract: sun_path[0] is NUL and the name is the next addrlen - 1 bytes (unix(7)).
  if (name.empty() || name.size() + 1 > sizeof(address.sun_path)) return ENAMETOOLONG;
  memcpy(address.sun_path + 1, name.data(), name.size());
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (bind(fd, reinterpret_cast<const sockaddr*>(&address), length) != 0) return errno;
  return 0;
}

Result<FlowRuleLock> FlowRuleLock::Acquire(const std::string& ifname,
                                           const FlowRuleLockOptions& options) {
  if (ifname.empty() || ifname.find('/') != std::string::npos) {
    return Status::Error(ErrorKind::kInvalidArgument, "no flow rule lock for interface name '%s'",
                         ifname.c_str());
  }
  const std::string name = options.name_prefix + "/" + ifname;
  const std::string shown = "@" + name;
  const Clock::time_point deadline = Clock::now() + options.timeout;
  Clock::duration pause = kFirstPause;
  while (true) {
    UniqueFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return Status::Errno(errno, "socket(AF_UNIX) for the lock %s", shown.c_str());
    const int err = BindAbstractName(fd.get(), name);
    if (err == 0) return FlowRuleLock(std::move(fd), shown);
    if (err != EADDRINUSE) return Status::Errno(err, "binding the lock %s", shown.c_str());
    const Clock::time_point now = Clock::now();
    if (now >= deadline) {
      return Status::Error(ErrorKind::kSystem,
                           "flow rule lock %s is still held by another process of this network "
                           "namespace after %lld ms (another rank inserting flow rules, or a stuck "
                           "one: `ss -xlp | grep %s` names the holder)",
                           shown.c_str(), static_cast<long long>(options.timeout.count()),
                           name.c_str());
    }
    std::this_thread::sleep_for(std::min(pause, deadline - now));
    pause = std::min<Clock::duration>(pause * 2, kLongestPause);
  }
}

}  // namespace devmem
