// What this plugin holds on the NICs of a host, written down so that a later process (at init and
// when a rule table is full) and `devmem-doctor --cleanup` can undo what a crashed rank left: an
// ntuple rule is device state that no file descriptor owns (net/ethtool/ioctl.c
// ethtool_set_rxnfc stores it in the driver), so a SIGKILLed rank's rules stay, fill the table
// and can steer an unrelated later flow onto a devmem queue.
//
// Two halves, each with the scope it needs:
//   - Who is alive: every process that records something binds one abstract AF_UNIX name,
//     "@<owner_prefix>/<random token>", for its whole life. Abstract names are per network
//     namespace (net/unix/af_unix.c, net->unx.table), the kernel drops the name when the process
//     dies however it dies, and a random token is never reused, so the check "is the owner of
//     this record alive" is right across mount, pid and user namespaces and immune to pid reuse.
//     The pid and start time (/proc/<pid>/stat field 22) are kept beside it for the operator: a
//     pid alone is ambiguous across pid namespaces (two pods both have a rank with pid 17) and
//     after reuse, so they never decide anything.
//   - The records themselves must outlive their writer, and Linux has no writer-independent store
//     scoped by network namespace short of device state. They are files in a directory (the first
//     of RegistryOptions::directories that is usable), one subdirectory per network namespace
//     (named by the inode of /proc/self/ns/net, so two netns that share a /run never read each
//     other's records). Containers that share the host netns but not /run keep separate record
//     sets; they still never collide (the lock and the liveness above are per netns), and each
//     one's leftovers are cleaned by a process that sees its records (a rank of the same pod, or
//     the doctor run where the pod's /run is mounted; mount a hostPath at /run/nccl-net-devmem to
//     share them). docs/flow-steering.md says so.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "plugin/core/status.h"
#include "plugin/devmem/nic_ethtool.h"

namespace devmem {

struct RegistryOptions {
  // Tried in order: the first that can be created (0755) or is a directory only root or we may
  // write holds the records.
  std::vector<std::string> directories = {"/run/nccl-net-devmem", "/tmp/nccl-net-devmem"};
  std::string owner_prefix = "nccl-net-devmem/owner";
};

// A process that holds something on a NIC.
struct Owner {
  int64_t pid = 0;
  uint64_t start_ticks = 0;  // /proc/<pid>/stat field 22, clock ticks after boot
  std::string token;         // the abstract name's last component
  bool operator==(const Owner&) const = default;
  std::string ToString() const;  // "pid 1234 (started at tick 5678)"
};

// This process, registered under `owner_prefix` on first use (the name is bound for the life of
// the process; a child forked without exec shares it, and with it everything it recorded).
Result<Owner> ThisProcess(const RegistryOptions& options = {});

enum class Liveness { kAlive, kGone, kUnknown };
// kGone only when the kernel says nobody holds the owner's name (connect: ECONNREFUSED);
// anything unexpected is kUnknown, and nothing is removed for an owner in doubt.
Liveness OwnerLiveness(const Owner& owner, const RegistryOptions& options = {});
const char* LivenessName(Liveness liveness);

struct RuleRecord {
  std::string ifname;
  uint32_t location = 0;
  FlowMatch match;
  Owner owner;
};

struct QueueClaim {
  std::string ifname;
  uint32_t queue = 0;
  int gpu = 0;
  Owner owner;
};

// The record files of this network namespace. Writers hold the NIC's FlowRuleLock.
class HostRegistry final {
 public:
  static Result<std::shared_ptr<HostRegistry>> Open(const RegistryOptions& options = {});
  const std::string& directory() const { return directory_; }
  const RegistryOptions& options() const { return options_; }

  Status Add(const RuleRecord& record);
  Status Forget(const RuleRecord& record);  // by (ifname, location)
  Result<std::vector<RuleRecord>> Rules(const std::string& ifname) const;

  Status Add(const QueueClaim& claim);
  Status Forget(const QueueClaim& claim);  // by (ifname, queue)
  Result<std::vector<QueueClaim>> Queues(const std::string& ifname) const;

 private:
  HostRegistry(std::string directory, RegistryOptions options)
      : directory_(std::move(directory)), options_(std::move(options)) {}
  std::string directory_;
  RegistryOptions options_;
};

}  // namespace devmem
