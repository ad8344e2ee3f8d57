// Flow steering rule locations chosen the way ethtool's rule manager chooses them, and what the
// real kernel answers on lo and on a veth (the ethtool seam, the default lock, the doctor).
//   unit:   RuleLocationTest (the pure chooser). The lock between processes and namespaces:
//           host_steering_test.cc.
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
#include "plugin/devmem/flow_steering.h"
#include "plugin/devmem/host_registry.h"
#include "plugin/devmem/nic_ethtool.h"
#include "tests/common/child_process.h"

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

// The real seam on lo: every ioctl refused with the driver's answer (reading a rule back goes
// through ethtool_get_rxnfc too), and the lock free again after a failed install.
TEST(FlowRuleKernelTest, EthtoolTableOnLoopbackRefusesEveryCallAndInstallLeavesTheLockFree) {
  testing::TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  RegistryOptions options;
  options.directories = {dir.path()};
  options.owner_prefix = "nccl-net-devmem-test/owner/" + std::to_string(getpid());
  Result<std::shared_ptr<HostRegistry>> registry = HostRegistry::Open(options);
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  SteeringContext context{std::make_shared<EthtoolNtupleTable>("lo"), registry.value(), {}};
  context.locking.name_prefix = "nccl-net-devmem-test/lock/" + std::to_string(getpid());
  Result<SocketAddress> local = SocketAddress::FromString("127.0.0.1", 5000);
  Result<SocketAddress> remote = SocketAddress::FromString("127.0.0.1", 6000);
  ASSERT_TRUE(local.ok() && remote.ok());
  for (int attempt = 0; attempt < 2; ++attempt) {
    Result<FlowSteeringRule> rule =
        FlowSteeringRule::Install(context, local.value(), remote.value(), 0);
    ASSERT_FALSE(rule.ok());
    EXPECT_EQ(rule.status().message(),
              "steering 127.0.0.1:6000 -> 127.0.0.1:5000 to RX queue 0: ETHTOOL_GRXCLSRLCNT (flow "
              "rule count) on lo: not supported by driver (EOPNOTSUPP)");
  }
  Result<std::optional<FlowMatch>> read = context.table->Read(0);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().message(),
            "ETHTOOL_GRXCLSRULE (read a flow rule) on lo: not supported by driver (EOPNOTSUPP)");
  Status removed = context.table->Remove(0);
  EXPECT_EQ(removed.message(),
            "ETHTOOL_SRXCLSRLDEL (location 0) on lo: not supported by driver (EOPNOTSUPP)");
  context.locking.timeout = std::chrono::milliseconds(0);
  Result<FlowRuleLock> free_again = FlowRuleLock::Acquire("lo", context.locking);
  EXPECT_TRUE(free_again.ok()) << free_again.status().message();
  EXPECT_TRUE(registry.value()->Rules("lo").value().empty());
}

// Our default lock name (flow_rule_lock.h FlowRuleLockOptions): "@nccl-net-devmem/lock/<ifname>",
// an abstract name, so no file appears anywhere.
TEST(FlowRuleKernelTest, DefaultLockIsAnAbstractNamePerInterface) {
  const std::string ifname = "dmfrdef" + std::to_string(getpid() % 100000);
  Result<FlowRuleLock> lock = FlowRuleLock::Acquire(ifname);
  ASSERT_TRUE(lock.ok()) << lock.status().message();
  EXPECT_EQ(lock->name(), "@nccl-net-devmem/lock/" + ifname);
}

TEST(FlowRuleKernelTest, InterfaceNamesThatAreNotNamePartsAreRefused) {
  for (const std::string& name : {std::string(), std::string("a/b")}) {
    Result<FlowRuleLock> lock = FlowRuleLock::Acquire(name);
    ASSERT_FALSE(lock.ok()) << name;
    EXPECT_EQ(lock.status().kind(), ErrorKind::kInvalidArgument);
  }
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

// devmem-doctor --cleanup on a NIC without records: nothing to do, said in JSON, exit 0; with
// --json the registry directory is named (the default one: root creates /run/nccl-net-devmem).
TEST_F(VethFlowRuleTest, DoctorCleanupWithNothingRecordedSaysSoAndSucceeds) {
  const std::string command =
      std::string(DEVMEM_DOCTOR_PATH) + " --cleanup --json --ifname " + name_ + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[512];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  const int status = pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), 0) << output;
  EXPECT_TRUE(Contains(output, "{\"nic\": \"" + name_ +
                                   "\", \"ok\": true, \"removed\": 0, \"dropped_records\": 0, "
                                   "\"released_queues\": 0, \"live_rules\": 0"))
      << output;
  EXPECT_TRUE(Contains(output, "\"registry\": \"/run/nccl-net-devmem/netns-") ||
              Contains(output, "\"registry\": \"/tmp/nccl-net-devmem/netns-"))
      << output;
}

}  // namespace
}  // namespace devmem
