#include "plugin/devmem/host_registry.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>

#include "plugin/core/unique_fd.h"
#include "plugin/devmem/flow_rule_lock.h"

namespace devmem {
namespace {

// A directory the records may live in: created 0755 when missing (whatever the umask), and when
// it exists, a real directory that nobody but root or us can write (the /tmp fallback is
// world-writable: a directory planted there by another user must not receive our records).
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
                         "%s is not trusted for the registry (owner uid %u, mode %03o; expected "
                         "root or uid %u, not writable by group or others)",
                         dir.c_str(), static_cast<unsigned>(st.st_uid),
                         static_cast<unsigned>(st.st_mode & 07777),
                         static_cast<unsigned>(geteuid()));
  }
  return Status::Ok();
}

// The network namespace this process is in, as `ls -i /proc/self/ns/net` names it.
Result<uint64_t> NetnsInode() {
  struct stat st {};
  if (stat("/proc/self/ns/net", &st) != 0) {
    return Status::Errno(errno, "stat /proc/self/ns/net (the network namespace)");
  }
  return static_cast<uint64_t>(st.st_ino);
}

Result<uint64_t> StartTicks(pid_t pid) {
  const std::string path = Format("/proc/%d/stat", static_cast<int>(pid));
  FILE* f = fopen(path.c_str(), "re");
  if (f == nullptr) return Status::Errno(errno, "opening %s", path.c_str());
  char buffer[1024];
  const size_t n = fread(buffer, 1, sizeof(buffer) - 1, f);
  fclose(f);
  buffer[n] = '\0';
  // proc(5): field 2 (comm) is parenthesised and may hold blanks and ')': start after the last
  // ')'; field 22 is starttime, the 20th after it.
  const char* p = strrchr(buffer, ')');
  if (p == nullptr) return Status::Error(ErrorKind::kSystem, "unreadable %s", path.c_str());
  ++p;
  for (int field = 3; field < 22; ++field) {
    p = strchr(p + 1, ' ');
    if (p == nullptr) return Status::Error(ErrorKind::kSystem, "short %s", path.c_str());
  }
  return strtoull(p + 1, nullptr, 10);
}

std::string AddressText(int family, const std::array<uint8_t, 16>& address) {
  char text[INET6_ADDRSTRLEN] = "";
  inet_ntop(family, address.data(), text, sizeof(text));
  return text;
}

bool ParseAddress(int family, const std::string& text, std::array<uint8_t, 16>* address) {
  *address = {};
  return inet_pton(family, text.c_str(), address->data()) == 1;
}

// A record file: "key value" lines.
using Fields = std::map<std::string, std::string>;

std::string OwnerLines(const Owner& owner) {
  return Format("pid %lld\nstart %llu\ntoken %s\n", static_cast<long long>(owner.pid),
                static_cast<unsigned long long>(owner.start_ticks), owner.token.c_str());
}

bool ParseOwner(const Fields& fields, Owner* owner) {
  auto pid = fields.find("pid");
  auto start = fields.find("start");
  auto token = fields.find("token");
  if (pid == fields.end() || start == fields.end() || token == fields.end()) return false;
  owner->pid = strtoll(pid->second.c_str(), nullptr, 10);
  owner->start_ticks = strtoull(start->second.c_str(), nullptr, 10);
  owner->token = token->second;
  return !owner->token.empty();
}

Result<Fields> ReadFields(const std::string& path) {
  FILE* f = fopen(path.c_str(), "re");
  if (f == nullptr) return Status::Errno(errno, "opening %s", path.c_str());
  Fields fields;
  char line[512];
  while (fgets(line, sizeof(line), f) != nullptr) {
    std::string text(line);
    while (!text.empty() && text.back() == '\n') text.pop_back();
    const size_t blank = text.find(' ');
    if (blank != std::string::npos) fields[text.substr(0, blank)] = text.substr(blank + 1);
  }
  fclose(f);
  return fields;
}

// Written whole or not at all: a reader never sees half a record.
Status WriteAtomically(const std::string& path, const std::string& text) {
  const std::string temporary = Format("%s.%d.tmp", path.c_str(), static_cast<int>(getpid()));
  UniqueFd fd(open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!fd.valid()) return Status::Errno(errno, "creating %s", temporary.c_str());
  if (write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    const int err = errno;
    unlink(temporary.c_str());
    return Status::Errno(err, "writing %s", temporary.c_str());
  }
  fd.reset();
  if (rename(temporary.c_str(), path.c_str()) != 0) {
    const int err = errno;
    unlink(temporary.c_str());
    return Status::Errno(err, "renaming %s", temporary.c_str());
  }
  return Status::Ok();
}

Status RemoveFile(const std::string& path) {
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Status::Errno(errno, "removing %s", path.c_str());
  }
  return Status::Ok();
}

// The record files of `kind` ("rule", "queue") on `ifname`: "<kind>.<ifname>.<number>".
Result<std::vector<std::string>> RecordFiles(const std::string& directory, const char* kind,
                                             const std::string& ifname) {
  std::unique_ptr<DIR, int (*)(DIR*)> dir(opendir(directory.c_str()), closedir);
  if (!dir) return Status::Errno(errno, "listing %s", directory.c_str());
  const std::string prefix = std::string(kind) + "." + ifname + ".";
  std::vector<std::string> out;
  while (dirent* entry = readdir(dir.get())) {
    const std::string name = entry->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string number = name.substr(prefix.size());
    if (number.empty() || number.find_first_not_of("0123456789") != std::string::npos) continue;
    out.push_back(directory + "/" + name);
  }
  return out;
}

}  // namespace

std::string Owner::ToString() const {
  return Format("pid %lld (started at tick %llu)", static_cast<long long>(pid),
                static_cast<unsigned long long>(start_ticks));
}

const char* LivenessName(Liveness liveness) {
  switch (liveness) {
    case Liveness::kAlive:
      return "alive";
    case Liveness::kGone:
      return "gone";
    case Liveness::kUnknown:
      break;
  }
  return "unknown";
}

Result<Owner> ThisProcess(const RegistryOptions& options) {
  // One name per prefix for the life of the process; never closed (the name is the liveness).
  static std::mutex mutex;
  static auto& owners = *new std::map<std::string, std::pair<Owner, int>>();  // NOLINT
  std::lock_guard<std::mutex> lock(mutex);
  const pid_t pid = getpid();
  if (auto it = owners.find(options.owner_prefix); it != owners.end()) {
    // A child forked without exec inherits the parent's socket, and with it the name.
    if (it->second.first.pid == pid) return it->second.first;
  }
  Result<uint64_t> start = StartTicks(pid);
  if (!start.ok()) return start.status();
  uint64_t random = 0;
  if (getrandom(&random, sizeof(random), 0) != static_cast<ssize_t>(sizeof(random))) {
    return Status::Errno(errno, "getrandom for the registry owner token");
  }
  Owner owner{pid, start.value(), Format("%016llx", static_cast<unsigned long long>(random))};
  UniqueFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Status::Errno(errno, "socket(AF_UNIX) for the registry owner");
  const std::string name = options.owner_prefix + "/" + owner.token;
  if (int err = BindAbstractName(fd.get(), name); err != 0) {
    return Status::Errno(err, "binding the registry owner name @%s", name.c_str());
  }
  owners[options.owner_prefix] = {owner, fd.release()};
  return owner;
}

Liveness OwnerLiveness(const Owner& owner, const RegistryOptions& options) {
  if (owner.token.empty()) return Liveness::kUnknown;
  UniqueFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Liveness::kUnknown;
  const std::string name = options.owner_prefix + "/" + owner.token;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (name.size() + 1 > sizeof(address.sun_path)) return Liveness::kUnknown;
  memcpy(address.sun_path + 1, name.data(), name.size());
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  // net/unix/af_unix.c unix_dgram_connect -> unix_find_other: no socket bound to the name in
  // this netns is -ECONNREFUSED.
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), length) == 0) {
    return Liveness::kAlive;
  }
  return errno == ECONNREFUSED ? Liveness::kGone : Liveness::kUnknown;
}

Result<std::shared_ptr<HostRegistry>> HostRegistry::Open(const RegistryOptions& options) {
  Result<uint64_t> netns = NetnsInode();
  if (!netns.ok()) return netns.status();
  std::string failures;
  for (const std::string& base : options.directories) {
    const std::string directory =
        Format("%s/netns-%llu", base.c_str(), static_cast<unsigned long long>(netns.value()));
    Status usable = PrepareDirectory(base);
    if (usable.ok()) usable = PrepareDirectory(directory);
    if (usable.ok()) {
      return std::shared_ptr<HostRegistry>(new HostRegistry(directory, options));
    }
    if (!failures.empty()) failures += "; ";
    failures += usable.message();
  }
  return Status::Error(ErrorKind::kSystem, "no usable directory for the flow rule registry: %s",
                       failures.empty() ? "none configured" : failures.c_str());
}

Status HostRegistry::Add(const RuleRecord& record) {
  const FlowMatch& m = record.match;
  const std::string text =
      Format("ifname %s\nlocation %u\nfamily %d\nsrc %s\ndst %s\nsport %u\ndport %u\nqueue %u\n",
             record.ifname.c_str(), record.location, m.family,
             m.match_src_addr ? AddressText(m.family, m.src).c_str() : "*",
             AddressText(m.family, m.dst).c_str(), m.src_port, m.dst_port, m.queue) +
      OwnerLines(record.owner);
  return WriteAtomically(
      Format("%s/rule.%s.%u", directory_.c_str(), record.ifname.c_str(), record.location), text);
}

Status HostRegistry::Forget(const RuleRecord& record) {
  return RemoveFile(
      Format("%s/rule.%s.%u", directory_.c_str(), record.ifname.c_str(), record.location));
}

Result<std::vector<RuleRecord>> HostRegistry::Rules(const std::string& ifname) const {
  Result<std::vector<std::string>> files = RecordFiles(directory_, "rule", ifname);
  if (!files.ok()) return files.status();
  std::vector<RuleRecord> out;
  for (const std::string& path : files.value()) {
    Result<Fields> fields = ReadFields(path);
    if (!fields.ok()) continue;  // removed since the listing
    const Fields& f = fields.value();
    RuleRecord record;
    record.ifname = ifname;
    FlowMatch& m = record.match;
    auto get = [&](const char* key) {
      auto it = f.find(key);
      return it == f.end() ? std::string() : it->second;
    };
    record.location = static_cast<uint32_t>(strtoul(get("location").c_str(), nullptr, 10));
    m.family = atoi(get("family").c_str());
    if (m.family != AF_INET && m.family != AF_INET6) continue;
    m.match_src_addr = get("src") != "*";
    if (m.match_src_addr && !ParseAddress(m.family, get("src"), &m.src)) continue;
    if (!ParseAddress(m.family, get("dst"), &m.dst)) continue;
    m.src_port = static_cast<uint16_t>(strtoul(get("sport").c_str(), nullptr, 10));
    m.dst_port = static_cast<uint16_t>(strtoul(get("dport").c_str(), nullptr, 10));
    m.queue = static_cast<uint32_t>(strtoul(get("queue").c_str(), nullptr, 10));
    if (!ParseOwner(f, &record.owner)) continue;
    out.push_back(std::move(record));
  }
  return out;
}

Status HostRegistry::Add(const QueueClaim& claim) {
  const std::string text =
      Format("ifname %s\nqueue %u\ngpu %d\n", claim.ifname.c_str(), claim.queue, claim.gpu) +
      OwnerLines(claim.owner);
  return WriteAtomically(
      Format("%s/queue.%s.%u", directory_.c_str(), claim.ifname.c_str(), claim.queue), text);
}

Status HostRegistry::Forget(const QueueClaim& claim) {
  return RemoveFile(
      Format("%s/queue.%s.%u", directory_.c_str(), claim.ifname.c_str(), claim.queue));
}

Result<std::vector<QueueClaim>> HostRegistry::Queues(const std::string& ifname) const {
  Result<std::vector<std::string>> files = RecordFiles(directory_, "queue", ifname);
  if (!files.ok()) return files.status();
  std::vector<QueueClaim> out;
  for (const std::string& path : files.value()) {
    Result<Fields> fields = ReadFields(path);
    if (!fields.ok()) continue;
    QueueClaim claim;
    claim.ifname = ifname;
    auto queue = fields->find("queue");
    auto gpu = fields->find("gpu");
    if (queue == fields->end() || gpu == fields->end()) continue;
    claim.queue = static_cast<uint32_t>(strtoul(queue->second.c_str(), nullptr, 10));
    claim.gpu = atoi(gpu->second.c_str());
    if (!ParseOwner(fields.value(), &claim.owner)) continue;
    out.push_back(std::move(claim));
  }
  return out;
}

}  // namespace devmem
