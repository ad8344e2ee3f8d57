// Flow steering rule locations chosen the way ethtool's rule manager chooses them, the host-wide
// lock around choose+insert, and what the real kernel answers on lo and on a veth.
//   unit:   RuleLocationTest (the pure chooser), FlowRuleLockTest (flock between processes).
//   kernel: FlowRuleKernelTest (lo, no root), VethFlowRuleTest (root and `ip`; skips otherwise).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/ethtool.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "plugin/core/socket_address.h"
#include "plugin/core/unique_fd.h"
#include "plugin/devmem/flow_rule_location.h"
#include "plugin/devmem/flow_rule_lock.h"
#include "plugin/devmem/nic_ethtool.h"

namespace devmem {
namespace {

using std::chrono::milliseconds;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// ---------------------------------------------------------------------------------------------
// The chooser.

// The answer by definition: the lowest location below `size` whose bit is clear in `used_mask`.
std::optional<uint32_t> LowestFree(uint32_t size, uint64_t used_mask) {
  for (uint32_t location = 0; location < size; ++location) {
    if ((used_mask & (uint64_t{1} << location)) == 0) return location;
  }
  return std::nullopt;
}

// uapi ethtool.h: RX_CLS_LOC_ANY is what the driver gets when it picks the location.
TEST(RuleLocationTest, LocationAnyIsTheKernelsConstant) {
  EXPECT_EQ(kRuleLocationAny, static_cast<uint32_t>(RX_CLS_LOC_ANY));
}

// ethtool rxclass.c rmgr_find_empty_slot ("leave this to the driver if possible") and
// rxclass_get_dev_info (driver_select = data & RX_CLS_LOC_SPECIAL); bnxt_ethtool.c
// bnxt_srxclsrlins returns -EINVAL for any location but RX_CLS_LOC_ANY.
TEST(RuleLocationTest, DriverThatSelectsLocationsGetsLocationAny) {
  const std::vector<uint32_t> some = {0, 1, 2};
  for (uint32_t size : {0u, 1u, 3u, 1024u}) {
    for (const std::vector<uint32_t>& used : {std::vector<uint32_t>{}, some}) {
      Result<uint32_t> location = ChooseRuleLocation(size, true, used);
      ASSERT_TRUE(location.ok()) << location.status().message();
      EXPECT_EQ(location.value(), kRuleLocationAny) << "size " << size;
    }
  }
}

// ethtool rxclass.c rmgr_init: a table size of 0 is "Invalid RX class rules table size".
TEST(RuleLocationTest, TableOfSizeZeroIsAnError) {
  Result<uint32_t> location = ChooseRuleLocation(0, false, {});
  ASSERT_FALSE(location.ok());
  EXPECT_EQ(location.status().kind(), ErrorKind::kSystem);
  EXPECT_TRUE(Contains(location.status().message(), "size 0")) << location.status().message();
}

// mlx5 en_fs_ethtool.c mlx5e_ethtool_get_all_flows reports a table of MAX_NUM_OF_ETHTOOL_RULES
// (1024) and validate_flow accepts locations below it: an empty table starts at 0.
TEST(RuleLocationTest, EmptyTableGivesLocationZero) {
  Result<uint32_t> location = ChooseRuleLocation(1024, false, {});
  ASSERT_TRUE(location.ok()) << location.status().message();
  EXPECT_EQ(location.value(), 0u);
}

// mlx5 en_fs_ethtool.c get_ethtool_rule deletes a rule already at the location it is given, so
// the chooser must never return a used location; holes left by deleted rules are reused first.
TEST(RuleLocationTest, FirstHoleIsChosen) {
  EXPECT_EQ(ChooseRuleLocation(1024, false, std::vector<uint32_t>{0, 1, 2, 4, 7}).value(), 3u);
  EXPECT_EQ(ChooseRuleLocation(1024, false, std::vector<uint32_t>{1, 2, 3}).value(), 0u);
  EXPECT_EQ(ChooseRuleLocation(1024, false, std::vector<uint32_t>{0, 1, 2, 3}).value(), 4u);
  EXPECT_EQ(ChooseRuleLocation(8, false, std::vector<uint32_t>{0, 1, 2, 3, 4, 5, 6}).value(), 7u);
}

// mlx5 en_fs_ethtool.c mlx5e_ethtool_get_all_flows lists locations in ascending order, but the
// uapi (ETHTOOL_GRXCLSRLALL) promises no order: the answer must not depend on it.
TEST(RuleLocationTest, UnsortedAndDuplicatedInputGiveTheSameAnswer) {
  const std::vector<uint32_t> sorted = {0, 1, 2, 3, 5, 6, 9};
  std::vector<uint32_t> shuffled = {9, 3, 0, 6, 2, 5, 1};
  std::vector<uint32_t> duplicated = {5, 5, 0, 9, 1, 0, 3, 2, 6, 6, 9};
  EXPECT_EQ(ChooseRuleLocation(16, false, sorted).value(), 4u);
  EXPECT_EQ(ChooseRuleLocation(16, false, shuffled).value(), 4u);
  EXPECT_EQ(ChooseRuleLocation(16, false, duplicated).value(), 4u);
}

// ethtool rxclass.c rmgr_find_empty_slot: "Cannot find appropriate slot to insert rule"; with
// mlx5 (en_fs_ethtool.c validate_flow) a location >= 1024 would be -ENOSPC anyway.
TEST(RuleLocationTest, FullTableIsAClearError) {
  std::vector<uint32_t> all(1024);
  for (uint32_t i = 0; i < all.size(); ++i) all[i] = i;
  std::shuffle(all.begin(), all.end(), std::mt19937(7));
  Result<uint32_t> location = ChooseRuleLocation(1024, false, all);
  ASSERT_FALSE(location.ok());
  EXPECT_EQ(location.status().kind(), ErrorKind::kSystem);
  const std::string& message = location.status().message();
  EXPECT_TRUE(Contains(message, "ntuple rule table full: all 1024 locations are in use"))
      << message;
  EXPECT_TRUE(Contains(message, "ethtool -N")) << message;
}

// ethtool rxclass.c rmgr_ins refuses locations >= size ("Location out of range"); a driver that
// reports one must not make us skip or pick a slot outside the table.
TEST(RuleLocationTest, LocationsPastTheTableBlockNothing) {
  EXPECT_EQ(ChooseRuleLocation(4, false, std::vector<uint32_t>{4, 1024, 0xffffffffu}).value(), 0u);
  EXPECT_FALSE(ChooseRuleLocation(4, false, std::vector<uint32_t>{3, 2, 1, 0, 4, 5}).ok());
}

// Every subset of used locations of every table up to 12 entries, fed sorted, reversed, and
// shuffled with duplicates and out-of-table entries, against the definition above.
TEST(RuleLocationTest, MatchesTheDefinitionForEverySubsetOfSmallTables) {
  std::mt19937 random(42);
  for (uint32_t size = 1; size <= 12; ++size) {
    for (uint64_t mask = 0; mask < (uint64_t{1} << size); ++mask) {
      std::vector<uint32_t> used;
      for (uint32_t location = 0; location < size; ++location) {
        if ((mask & (uint64_t{1} << location)) != 0) used.push_back(location);
      }
      std::vector<uint32_t> reversed(used.rbegin(), used.rend());
      std::vector<uint32_t> noisy = used;
      noisy.insert(noisy.end(), used.begin(), used.end());
      noisy.push_back(size);
      noisy.push_back(size + 17);
      std::shuffle(noisy.begin(), noisy.end(), random);
      const std::optional<uint32_t> expected = LowestFree(size, mask);
      for (const std::vector<uint32_t>* input : {&used, &reversed, &noisy}) {
        Result<uint32_t> location = ChooseRuleLocation(size, false, *input);
        ASSERT_EQ(location.ok(), expected.has_value()) << "size " << size << " mask " << mask;
        if (expected.has_value()) {
          ASSERT_EQ(location.value(), *expected) << "size " << size << " mask " << mask;
        } else {
          ASSERT_TRUE(Contains(location.status().message(), "full"));
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The host-wide lock.

class TempDir {
 public:
  TempDir() {
    char name[] = "/tmp/devmem-flowrule-XXXXXX";
    if (mkdtemp(name) != nullptr) path_ = name;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// One byte at a time between parent and child, with a deadline on every read.
class Pipe {
 public:
  Pipe() {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) == 0) {
      read_.reset(fds[0]);
      write_.reset(fds[1]);
    }
  }
  bool valid() const { return read_.valid() && write_.valid(); }
  bool Send(char c) { return write(write_.get(), &c, 1) == 1; }
  // The next byte, or 0 when none came within `timeout` (or the other end closed).
  char Receive(milliseconds timeout) {
    pollfd pfd{read_.get(), POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(timeout.count())) != 1) return 0;
    char c = 0;
    return read(read_.get(), &c, 1) == 1 ? c : 0;
  }
  void CloseWriteEnd() { write_.reset(); }

 private:
  UniqueFd read_;
  UniqueFd write_;
};

// A forked child that is killed and reaped if the test ends before it exits.
class Child {
 public:
  explicit Child(pid_t pid) : pid_(pid) {}
  ~Child() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  pid_t pid() const { return pid_; }
  // The child's exit code, -1 if it did not exit normally.
  int Wait() {
    int status = 0;
    pid_t waited = waitpid(pid_, &status, 0);
    pid_ = -1;
    return waited > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  pid_t pid_;
};

class FlowRuleLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty()) << "mkdtemp failed";
    lock_path_ = dir_.path() + "/flowrules.test.lock";
  }
  TempDir dir_;
  std::string lock_path_;
};

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0;
}

// mkdir(2)/open(2) apply the umask to the mode given; the lock must still be 0755/0644 so that
// ranks of other users can open it (flock(2) works on a read-only descriptor).
TEST_F(FlowRuleLockTest, AcquireCreatesDirectoryAndFileWithTheirModesWhateverTheUmask) {
  FlowRuleLockOptions options;
  options.directories = {dir_.path() + "/locks"};
  const mode_t old_umask = umask(077);
  Result<FlowRuleLock> lock = FlowRuleLock::Acquire("eth9", options);
  umask(old_umask);
  ASSERT_TRUE(lock.ok()) << lock.status().message();
  EXPECT_EQ(lock->path(), dir_.path() + "/locks/flowrules.eth9.lock");
  EXPECT_EQ(ModeOf(dir_.path() + "/locks"), 0755u);
  EXPECT_EQ(ModeOf(lock->path()), 0644u);
}

// flock(2): a second open file description conflicts with LOCK_EX even in the same process, and
// the lock goes with the descriptor, so destroying the owner frees it.
TEST_F(FlowRuleLockTest, DestroyingTheOwnerReleasesTheLock) {
  std::optional<FlowRuleLock> held;
  {
    Result<FlowRuleLock> first = FlowRuleLock::AcquireFile(lock_path_, milliseconds(0));
    ASSERT_TRUE(first.ok()) << first.status().message();
    held.emplace(std::move(first).value());
  }
  EXPECT_FALSE(FlowRuleLock::AcquireFile(lock_path_, milliseconds(0)).ok());
  held.reset();
  Result<FlowRuleLock> again = FlowRuleLock::AcquireFile(lock_path_, milliseconds(0));
  EXPECT_TRUE(again.ok()) << again.status().message();
}

// The child is forked while the parent holds the lock, so it also inherits the locked open file
// description: the release must unlock it (LOCK_UN), not just close the parent's descriptor.
TEST_F(FlowRuleLockTest, SecondProcessWaitsAndGetsTheLockOnceTheFirstReleases) {
  std::optional<FlowRuleLock> held;
  {
    Result<FlowRuleLock> first = FlowRuleLock::AcquireFile(lock_path_, milliseconds(0));
    ASSERT_TRUE(first.ok()) << first.status().message();
    held.emplace(std::move(first).value());
  }
  Pipe to_parent;
  ASSERT_TRUE(to_parent.valid());
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The child: no gtest here, only an exit code.
    if (!to_parent.Send('w')) _exit(3);
    Result<FlowRuleLock> second = FlowRuleLock::AcquireFile(lock_path_, milliseconds(10000));
    if (!second.ok()) _exit(2);
    to_parent.Send('g');
    _exit(0);
  }
  Child child(pid);
  ASSERT_EQ(to_parent.Receive(milliseconds(10000)), 'w');
  // While the parent holds the lock the child is still waiting.
  EXPECT_EQ(to_parent.Receive(milliseconds(300)), 0);
  held.reset();
  EXPECT_EQ(to_parent.Receive(milliseconds(10000)), 'g');
  EXPECT_EQ(child.Wait(), 0);
}

// flock(2): LOCK_NB fails with EWOULDBLOCK while another open file description holds LOCK_EX;
// polling it against a deadline turns a stuck holder into an error, never a hang.
TEST_F(FlowRuleLockTest, DeadlineExpiresWithAClearErrorWhileAnotherProcessHoldsIt) {
  Pipe to_parent;
  Pipe to_child;
  ASSERT_TRUE(to_parent.valid() && to_child.valid());
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    Result<FlowRuleLock> held = FlowRuleLock::AcquireFile(lock_path_, milliseconds(0));
    if (!held.ok()) _exit(2);
    to_parent.Send('h');
    to_child.CloseWriteEnd();
    to_child.Receive(milliseconds(30000));  // until the parent says so, or goes away
    _exit(0);
  }
  Child child(pid);
  ASSERT_EQ(to_parent.Receive(milliseconds(10000)), 'h');

  const auto start = std::chrono::steady_clock::now();
  Result<FlowRuleLock> waited = FlowRuleLock::AcquireFile(lock_path_, milliseconds(300));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(waited.ok());
  EXPECT_EQ(waited.status().kind(), ErrorKind::kSystem);
  const std::string& message = waited.status().message();
  EXPECT_TRUE(Contains(
      message, "flow rule lock " + lock_path_ + " is still held by another process after 300 ms"))
      << message;
  EXPECT_TRUE(Contains(message, "lslocks")) << message;
  EXPECT_GE(elapsed, milliseconds(300));

  // The holder lets go: the lock is free again.
  to_child.Send('r');
  EXPECT_EQ(child.Wait(), 0);
  Result<FlowRuleLock> after = FlowRuleLock::AcquireFile(lock_path_, milliseconds(0));
  EXPECT_TRUE(after.ok()) << after.status().message();
}

// flock(2): the lock belongs to the open file description, which the kernel closes when the
// holder dies: a crashed rank never leaves the lock taken.
TEST_F(FlowRuleLockTest, AHolderThatIsKilledReleasesTheLock) {
  Pipe to_parent;
  ASSERT_TRUE(to_parent.valid());
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    Result<FlowRuleLock> held = FlowRuleLock::AcquireFile(lock_path_, milliseconds(0));
    if (!held.ok()) _exit(2);
    to_parent.Send('h');
    pause();
    _exit(0);
  }
  Child child(pid);
  ASSERT_EQ(to_parent.Receive(milliseconds(10000)), 'h');
  EXPECT_FALSE(FlowRuleLock::AcquireFile(lock_path_, milliseconds(0)).ok());
  kill(child.pid(), SIGKILL);
  EXPECT_EQ(child.Wait(), -1);
  Result<FlowRuleLock> after = FlowRuleLock::AcquireFile(lock_path_, milliseconds(0));
  EXPECT_TRUE(after.ok()) << after.status().message();
}

// mkdir(2): ENOTDIR when a path component is a regular file (for root too); the next directory
// in the list (in production /tmp after /run) takes the lock.
TEST_F(FlowRuleLockTest, UnusableDirectoryFallsBackToTheNext) {
  // A regular file where a directory's parent should be: mkdir fails even for root.
  const std::string blocker = dir_.path() + "/not-a-dir";
  UniqueFd file(open(blocker.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(file.valid());
  FlowRuleLockOptions options;
  options.directories = {blocker + "/sub", dir_.path() + "/fallback"};
  Result<FlowRuleLock> lock = FlowRuleLock::Acquire("eth0", options);
  ASSERT_TRUE(lock.ok()) << lock.status().message();
  EXPECT_EQ(lock->path(), dir_.path() + "/fallback/flowrules.eth0.lock");
}

// Our own rule for the world-writable /tmp fallback (no upstream counterpart): a directory that
// others can write could be swapped under us, so it is skipped with the reason.
TEST_F(FlowRuleLockTest, DirectoryWritableByOthersIsNotTrusted) {
  const std::string open_dir = dir_.path() + "/world-writable";
  ASSERT_EQ(mkdir(open_dir.c_str(), 0755), 0);
  ASSERT_EQ(chmod(open_dir.c_str(), 0777), 0);
  FlowRuleLockOptions options;
  options.directories = {open_dir};
  Result<FlowRuleLock> refused = FlowRuleLock::Acquire("eth0", options);
  ASSERT_FALSE(refused.ok());
  const std::string& message = refused.status().message();
  EXPECT_TRUE(Contains(message, "no usable directory for the flow rule lock of eth0")) << message;
  EXPECT_TRUE(Contains(message, open_dir + " is not trusted for the lock")) << message;
  EXPECT_TRUE(Contains(message, "mode 777")) << message;

  options.directories = {open_dir, dir_.path() + "/private"};
  Result<FlowRuleLock> lock = FlowRuleLock::Acquire("eth0", options);
  ASSERT_TRUE(lock.ok()) << lock.status().message();
  EXPECT_EQ(lock->path(), dir_.path() + "/private/flowrules.eth0.lock");
}

// open(2) O_NOFOLLOW: ELOOP on a symlink, so a planted link never makes us create a file
// elsewhere.
TEST_F(FlowRuleLockTest, SymlinkedLockFileIsRefused) {
  const std::string target = dir_.path() + "/elsewhere";
  ASSERT_EQ(symlink(target.c_str(), lock_path_.c_str()), 0);
  Result<FlowRuleLock> lock = FlowRuleLock::AcquireFile(lock_path_, milliseconds(0));
  ASSERT_FALSE(lock.ok());
  EXPECT_TRUE(Contains(lock.status().message(), "lock file " + lock_path_))
      << lock.status().message();
  EXPECT_FALSE(std::filesystem::exists(target));
}

// net/core/dev.c dev_valid_name: a real interface name never holds '/' nor is empty; anything
// else must not become a path outside the lock directory.
TEST_F(FlowRuleLockTest, InterfaceNamesThatAreNotFileNamesAreRefused) {
  FlowRuleLockOptions options;
  options.directories = {dir_.path()};
  for (const char* name : {"", "../eth0", "a/b"}) {
    Result<FlowRuleLock> lock = FlowRuleLock::Acquire(name, options);
    ASSERT_FALSE(lock.ok()) << name;
    EXPECT_EQ(lock.status().kind(), ErrorKind::kInvalidArgument);
  }
}

// The lock comes before any ioctl, so this needs no NIC: while another process holds it,
// Install gives up with the lock's error after the deadline instead of hanging.
TEST_F(FlowRuleLockTest, InstallGivesUpWithTheLockErrorWhileAnotherProcessHoldsIt) {
  FlowRuleLockOptions options;
  options.directories = {dir_.path()};
  options.timeout = milliseconds(200);
  const std::string path = dir_.path() + "/flowrules.lo.lock";
  Pipe to_parent;
  ASSERT_TRUE(to_parent.valid());
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    Result<FlowRuleLock> held = FlowRuleLock::AcquireFile(path, milliseconds(0));
    if (!held.ok()) _exit(2);
    to_parent.Send('h');
    pause();
    _exit(0);
  }
  Child child(pid);
  ASSERT_EQ(to_parent.Receive(milliseconds(10000)), 'h');
  Result<SocketAddress> local = SocketAddress::FromString("127.0.0.1", 5000);
  Result<SocketAddress> remote = SocketAddress::FromString("127.0.0.1", 6000);
  ASSERT_TRUE(local.ok() && remote.ok());
  Result<FlowSteeringRule> rule =
      FlowSteeringRule::Install("lo", local.value(), remote.value(), 0, options);
  ASSERT_FALSE(rule.ok());
  const std::string& message = rule.status().message();
  EXPECT_TRUE(Contains(message,
                       "steering 127.0.0.1:6000 -> 127.0.0.1:5000 to RX queue 0: "
                       "flow rule lock " +
                           path + " is still held by another process after 200 ms"))
      << message;
}

// ---------------------------------------------------------------------------------------------
// The real kernel.

// drivers/net/loopback.c loopback_ethtool_ops has no get_rxnfc, and net/ethtool/ioctl.c
// ethtool_get_rxnfc returns -EOPNOTSUPP without one. GRXCLSRLCNT needs no privilege
// (net/ethtool/ioctl.c __dev_ethtool lists it among the unprivileged GET commands).
TEST(FlowRuleKernelTest, LoopbackHasNoRuleTable) {
  Result<FlowRuleTable> table = QueryFlowRuleTable("lo");
  ASSERT_FALSE(table.ok());
  EXPECT_EQ(table.status().message(),
            "ETHTOOL_GRXCLSRLCNT (flow rule count) on lo: not supported by driver (EOPNOTSUPP)");
}

// net/ethtool/ioctl.c dev_ethtool: no device of that name is -ENODEV.
TEST(FlowRuleKernelTest, MissingDeviceIsNamedWithTheErrnoText) {
  Result<FlowRuleTable> table = QueryFlowRuleTable("nosuchdev0");
  ASSERT_FALSE(table.ok());
  EXPECT_EQ(table.status().message(),
            "ETHTOOL_GRXCLSRLCNT (flow rule count) on nosuchdev0: No such device (errno 19)");
}

// As above for lo; the lock was taken and must be free again, its file left usable.
TEST(FlowRuleKernelTest, InstallOnLoopbackFailsAndLeavesTheLockFree) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  FlowRuleLockOptions options;
  options.directories = {dir.path()};
  Result<SocketAddress> local = SocketAddress::FromString("127.0.0.1", 5000);
  Result<SocketAddress> remote = SocketAddress::FromString("127.0.0.1", 6000);
  ASSERT_TRUE(local.ok() && remote.ok());
  for (int attempt = 0; attempt < 2; ++attempt) {
    Result<FlowSteeringRule> rule =
        FlowSteeringRule::Install("lo", local.value(), remote.value(), 0, options);
    ASSERT_FALSE(rule.ok());
    EXPECT_EQ(rule.status().message(),
              "steering 127.0.0.1:6000 -> 127.0.0.1:5000 to RX queue 0: ETHTOOL_GRXCLSRLCNT (flow "
              "rule count) on lo: not supported by driver (EOPNOTSUPP)");
  }
  const std::string path = dir.path() + "/flowrules.lo.lock";
  EXPECT_EQ(ModeOf(path), 0644u);
  Result<FlowRuleLock> free_again = FlowRuleLock::AcquireFile(path, milliseconds(0));
  EXPECT_TRUE(free_again.ok()) << free_again.status().message();
}

// Our defaults (flow_rule_lock.h FlowRuleLockOptions; review F9 asks for a file under /run):
// /run/nccl-net-devmem where this process may create the file there, else /tmp.
TEST(FlowRuleKernelTest, DefaultLockLivesUnderRunOrTmp) {
  const std::string ifname = "dmfrdef" + std::to_string(getpid() % 100000);
  Result<FlowRuleLock> lock = FlowRuleLock::Acquire(ifname);
  ASSERT_TRUE(lock.ok()) << lock.status().message();
  const std::string path = lock->path();
  const std::string dir = path.substr(0, path.rfind('/'));
  EXPECT_TRUE(dir == "/run/nccl-net-devmem" || dir == "/tmp/nccl-net-devmem") << path;
  if (geteuid() == 0 && access("/run", W_OK) == 0) {
    EXPECT_EQ(dir, "/run/nccl-net-devmem");
  }
  EXPECT_EQ(path, dir + "/flowrules." + ifname + ".lock");
  EXPECT_EQ(ModeOf(dir), 0755u);
  EXPECT_EQ(ModeOf(path), 0644u);
  unlink(path.c_str());  // this test's own file; the directory is shared with real runs
}

// A veth pair in the test's namespace, removed at the end.
class VethFlowRuleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (CAP_NET_ADMIN) to create a veth";
    if (system("ip -V >/dev/null 2>&1") != 0) GTEST_SKIP() << "needs the `ip` command";
    name_ = "dmfr" + std::to_string(getpid() % 100000);
    const std::string add = "ip link add " + name_ + " type veth peer name " + name_ +
                            "p && ip link set " + name_ + " up";
    if (system(add.c_str()) != 0) {
      name_.clear();
      GTEST_SKIP() << "this kernel cannot create a veth (`" << add << "` failed)";
    }
  }
  void TearDown() override {
    if (name_.empty()) return;
    if (system(("ip link del " + name_ + " 2>/dev/null").c_str()) != 0) {
      ADD_FAILURE() << "could not remove veth " << name_;
    }
    unlink(("/run/nccl-net-devmem/flowrules." + name_ + ".lock").c_str());
    unlink(("/tmp/nccl-net-devmem/flowrules." + name_ + ".lock").c_str());
  }
  std::string name_;
};

// drivers/net/veth.c veth_ethtool_ops has no get_rxnfc: net/ethtool/ioctl.c ethtool_get_rxnfc
// answers -EOPNOTSUPP to ETHTOOL_GRXCLSRLCNT.
TEST_F(VethFlowRuleTest, RuleCountIsRefusedNamingTheIoctlAndTheErrno) {
  Result<FlowRuleTable> table = QueryFlowRuleTable(name_);
  ASSERT_FALSE(table.ok());
  EXPECT_EQ(table.status().kind(), ErrorKind::kSystem);
  EXPECT_EQ(table.status().message(), "ETHTOOL_GRXCLSRLCNT (flow rule count) on " + name_ +
                                          ": not supported by driver (EOPNOTSUPP)");
}

// As above, through the real creation path with its default lock: the error names the flow,
// the ioctl and the errno; the lock is free afterwards and a second try fails the same way.
TEST_F(VethFlowRuleTest, InstallFailsCleanlyAndLeavesNoLockHeld) {
  Result<SocketAddress> local = SocketAddress::FromString("198.18.0.1", 5000);
  Result<SocketAddress> remote = SocketAddress::FromString("198.18.0.2", 6000);
  ASSERT_TRUE(local.ok() && remote.ok());
  const std::string expected =
      "steering 198.18.0.2:6000 -> 198.18.0.1:5000 to RX queue 0: "
      "ETHTOOL_GRXCLSRLCNT (flow rule count) on " +
      name_ + ": not supported by driver (EOPNOTSUPP)";
  for (int attempt = 0; attempt < 2; ++attempt) {
    Result<FlowSteeringRule> rule =
        FlowSteeringRule::Install(name_, local.value(), remote.value(), 0);
    ASSERT_FALSE(rule.ok());
    EXPECT_EQ(rule.status().message(), expected);
  }
  std::string path = "/run/nccl-net-devmem/flowrules." + name_ + ".lock";
  if (access(path.c_str(), F_OK) != 0) path = "/tmp/nccl-net-devmem/flowrules." + name_ + ".lock";
  EXPECT_EQ(ModeOf(path), 0644u) << path;
  Result<FlowRuleLock> free_again = FlowRuleLock::AcquireFile(path, milliseconds(0));
  EXPECT_TRUE(free_again.ok()) << free_again.status().message();
}

}  // namespace
}  // namespace devmem
