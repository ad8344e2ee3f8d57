// Host-wide steering: the rule shape (FlowMatch <-> ethtool_rx_flow_spec), the devmem queue plan,
// the host registry with owner liveness, rules that survive a SIGKILLed rank and are removed by
// the next process, the scope ladder and a full table on a fake fbnic (fake_ntuple_table.h), and
// queue claims across processes.
//   unit:  everything below except HostSteeringNamespaceTest (helpers are fork+exec'd processes;
//          names are abstract AF_UNIX names private to the test, records live in a temp dir).
//   netns: HostSteeringNamespaceTest (root: unshare(CLONE_NEWNS / CLONE_NEWNET) in a child).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/ethtool.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "plugin/core/config.h"
#include "plugin/core/socket_address.h"
#include "plugin/devmem/flow_steering.h"
#include "plugin/devmem/host_registry.h"
#include "plugin/setup/rx_queue_plan.h"
#include "tests/common/child_process.h"
#include "tests/common/fake_ntuple_table.h"

namespace devmem {
namespace {

using std::chrono::milliseconds;
using testing::Child;
using testing::FileNtupleTable;
using testing::Helper;
using testing::TempDir;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

SocketAddress Address(const char* text, uint16_t port) {
  Result<SocketAddress> address = SocketAddress::FromString(text, port);
  EXPECT_TRUE(address.ok()) << text;
  return address.ok() ? address.value() : SocketAddress();
}

// ---------------------------------------------------------------------------------------------
// The rule shape.

// uapi ethtool.h struct ethtool_rx_flow_spec: h_u holds the values, m_u the masks (a set bit
// compares), ports and addresses in network order, ring_cookie the queue.
TEST(FlowMatchTest, ExactIpv4RuleMatchesTheFullTupleInNetworkOrder) {
  const FlowMatch match = MatchConnection(Address("198.18.0.1", 5000), Address("198.18.0.2", 40001),
                                          7, FlowScope::kExact);
  ethtool_rx_flow_spec spec{};
  ToFlowSpec(match, &spec);
  EXPECT_EQ(spec.flow_type, static_cast<uint32_t>(TCP_V4_FLOW));
  EXPECT_EQ(spec.ring_cookie, 7u);
  EXPECT_EQ(spec.h_u.tcp_ip4_spec.ip4src, inet_addr("198.18.0.2"));
  EXPECT_EQ(spec.h_u.tcp_ip4_spec.ip4dst, inet_addr("198.18.0.1"));
  EXPECT_EQ(spec.h_u.tcp_ip4_spec.psrc, htons(40001));
  EXPECT_EQ(spec.h_u.tcp_ip4_spec.pdst, htons(5000));
  EXPECT_EQ(spec.m_u.tcp_ip4_spec.ip4src, 0xffffffffu);
  EXPECT_EQ(spec.m_u.tcp_ip4_spec.ip4dst, 0xffffffffu);
  EXPECT_EQ(spec.m_u.tcp_ip4_spec.psrc, 0xffff);
  EXPECT_EQ(spec.m_u.tcp_ip4_spec.pdst, 0xffff);
  EXPECT_EQ(match.ToString(), "198.18.0.2:40001 -> 198.18.0.1:5000 to RX queue 7");
  EXPECT_EQ(FromFlowSpec(spec), match);
}

// The coarser scope leaves the source address out entirely (mask 0: fbnic_set_cls_rule_ins
// takes a source-address TCAM entry only "if (mask4->s_addr)").
TEST(FlowMatchTest, AnySourceRuleHasAZeroSourceMaskAndStillMatchesBothPorts) {
  const FlowMatch match = MatchConnection(Address("fd00::1", 5000), Address("fd00::2", 40001), 3,
                                          FlowScope::kAnySourceAddress);
  ethtool_rx_flow_spec spec{};
  ToFlowSpec(match, &spec);
  EXPECT_EQ(spec.flow_type, static_cast<uint32_t>(TCP_V6_FLOW));
  const uint8_t zero[16] = {};
  EXPECT_EQ(memcmp(spec.m_u.tcp_ip6_spec.ip6src, zero, 16), 0);
  EXPECT_EQ(memcmp(spec.h_u.tcp_ip6_spec.ip6src, zero, 16), 0);
  EXPECT_EQ(spec.m_u.tcp_ip6_spec.psrc, 0xffff);
  EXPECT_EQ(spec.m_u.tcp_ip6_spec.pdst, 0xffff);
  EXPECT_EQ(match.ToString(), "*:40001 -> [fd00::1]:5000 to RX queue 3");
  EXPECT_EQ(FromFlowSpec(spec), match);
}

// What an operator or another tool installed is never taken for one of ours.
TEST(FlowMatchTest, RulesOfOtherShapesAreNotOurs) {
  const FlowMatch match = MatchConnection(Address("198.18.0.1", 5000), Address("198.18.0.2", 40001),
                                          7, FlowScope::kExact);
  ethtool_rx_flow_spec spec{};
  ToFlowSpec(match, &spec);
  ethtool_rx_flow_spec dst_port_only = spec;
  dst_port_only.m_u.tcp_ip4_spec.psrc = 0;
  EXPECT_FALSE(FromFlowSpec(dst_port_only).has_value());
  ethtool_rx_flow_spec partial_source = spec;
  partial_source.m_u.tcp_ip4_spec.ip4src = htonl(0xffffff00u);
  EXPECT_FALSE(FromFlowSpec(partial_source).has_value());
  ethtool_rx_flow_spec udp = spec;
  udp.flow_type = UDP_V4_FLOW;
  EXPECT_FALSE(FromFlowSpec(udp).has_value());
  ethtool_rx_flow_spec drop = spec;
  drop.ring_cookie = RX_CLS_FLOW_DISC;
  EXPECT_FALSE(FromFlowSpec(drop).has_value());
}

// ---------------------------------------------------------------------------------------------
// The queue plan.

std::vector<RxQueueInfo> Queues(uint32_t count,
                                std::vector<std::pair<uint32_t, uint32_t>> bound = {}) {
  std::vector<RxQueueInfo> rx(count);
  for (uint32_t i = 0; i < count; ++i) rx[i].id = i;
  for (auto [queue, dmabuf] : bound) rx[queue].dmabuf_id = dmabuf;
  return rx;
}

// `ethtool -X eth0 equal 8` on 16 queues: RSS spreads over 0-7, devmem gets 8-15.
TEST(QueuePlanTest, PoolIsTheQueuesTheRssTableLeavesOut) {
  std::vector<uint32_t> rss;
  for (int i = 0; i < 128; ++i) rss.push_back(static_cast<uint32_t>(i % 8));
  EXPECT_EQ(DevmemQueuePool({}, Queues(16), rss),
            (std::vector<uint32_t>{8, 9, 10, 11, 12, 13, 14, 15}));
}

TEST(QueuePlanTest, ConfiguredQueuesWinAndWithoutALayoutTheLastQueueIsThePool) {
  std::vector<uint32_t> all;
  for (int i = 0; i < 128; ++i) all.push_back(static_cast<uint32_t>(i % 4));
  EXPECT_EQ(DevmemQueuePool({2, 3}, Queues(4), all), (std::vector<uint32_t>{2, 3}));
  EXPECT_EQ(DevmemQueuePool({}, Queues(4), all), (std::vector<uint32_t>{3}));
  EXPECT_EQ(DevmemQueuePool({}, Queues(4), std::nullopt), (std::vector<uint32_t>{3}));
  EXPECT_TRUE(DevmemQueuePool({}, Queues(1), std::nullopt).empty());
}

TEST(QueuePlanTest, EachGpuNearTheNicGetsItsShareAndAtLeastOneQueue) {
  EXPECT_EQ(QueuesPerBinder(8, 2), 4u);
  EXPECT_EQ(QueuesPerBinder(8, 3), 2u);
  EXPECT_EQ(QueuesPerBinder(2, 4), 1u);
  EXPECT_EQ(QueuesPerBinder(1, 0), 1u);
}

// A sysfs tree of the shape /sys/bus/pci/devices/<bdf> -> ../../../devices/pciDDDD:BB/...
TEST(QueuePlanTest, GpusUnderTheNicsRootComplexAreCountedElseAllGpus) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  namespace fs = std::filesystem;
  const std::string devices = dir.path() + "/sys/devices";
  const std::string bus = dir.path() + "/bus";
  fs::create_directories(bus);
  auto add = [&](const std::string& root, const std::string& bdf, const char* vendor,
                 const char* pci_class) {
    const std::string path = devices + "/" + root + "/" + bdf;
    fs::create_directories(path);
    std::ofstream(path + "/vendor") << vendor << "\n";
    std::ofstream(path + "/class") << pci_class << "\n";
    fs::create_directory_symlink(path, bus + "/" + bdf);
  };
  add("pci0000:00", "0000:01:00.0", "0x10de", "0x030200");  // GPU near
  add("pci0000:00", "0000:02:00.0", "0x10de", "0x030000");  // GPU near (VGA class)
  add("pci0000:80", "0000:81:00.0", "0x10de", "0x030200");  // GPU on another root complex
  add("pci0000:00", "0000:03:00.0", "0x15b3", "0x020000");  // the NIC itself
  add("pci0000:00", "0000:04:00.0", "0x10de", "0x040300");  // NVIDIA audio: not a GPU
  EXPECT_EQ(GpusNearNic(devices + "/pci0000:00/0000:03:00.0", bus), 2);
  EXPECT_EQ(GpusNearNic(devices + "/pci0000:40/0000:41:00.0", bus), 3);
  EXPECT_EQ(GpusNearNic("", bus), 3);
  EXPECT_EQ(GpusNearNic("", dir.path() + "/nothing"), 1);
}

TEST(QueuePlanTest, FreeQueuesSkipBoundAndClaimedOnesAndTheErrorNamesEveryHolder) {
  const Owner other{4242, 99, "feedface"};
  const std::vector<QueueClaim> claims = {QueueClaim{"eth0", 9, 1, other}};
  const std::vector<RxQueueInfo> rx = Queues(12, {{8, 5}});
  Result<std::vector<uint32_t>> chosen = ChooseFreeQueues({8, 9, 10, 11}, rx, claims, 1);
  ASSERT_TRUE(chosen.ok()) << chosen.status().message();
  EXPECT_EQ(chosen.value(), (std::vector<uint32_t>{10}));
  chosen = ChooseFreeQueues({8, 9, 10, 11}, rx, claims, 4);
  ASSERT_TRUE(chosen.ok());
  EXPECT_EQ(chosen.value(), (std::vector<uint32_t>{10, 11}));
  Result<std::vector<uint32_t>> none = ChooseFreeQueues({8, 9, 12}, rx, claims, 1);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().message(),
            "no free devmem RX queue: every queue of the pool 8,9,12 is taken (queue 8 bound to "
            "dmabuf 5 by a process outside this plugin's registry; queue 9 claimed by pid 4242 "
            "(started at tick 99) for GPU 1; queue 12 does not exist)");
}

// ---------------------------------------------------------------------------------------------
// Registry, lock and rules across processes.

class HostSteeringTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    const std::string unique = std::to_string(getpid()) + "/" +
                               ::testing::UnitTest::GetInstance()->current_test_info()->name();
    options_.directories = {dir_.path() + "/registry"};
    options_.owner_prefix = "nccl-net-devmem-test/owner/" + unique;
    locking_.name_prefix = "nccl-net-devmem-test/lock/" + unique;
    Result<std::shared_ptr<HostRegistry>> registry = HostRegistry::Open(options_);
    ASSERT_TRUE(registry.ok()) << registry.status().message();
    registry_ = registry.value();
    table_path_ = dir_.path() + "/table";
    table_ = std::make_shared<FileNtupleTable>("fbnic0", table_path_);
  }
  SteeringContext Context() const { return SteeringContext{table_, registry_, locking_}; }
  std::vector<std::string> HelperArgs(std::vector<std::string> rest) const {
    std::vector<std::string> args = {DEVMEM_STEERING_HELPER_PATH, options_.directories[0],
                                     options_.owner_prefix, locking_.name_prefix};
    args.insert(args.end(), rest.begin(), rest.end());
    return args;
  }

  TempDir dir_;
  RegistryOptions options_;
  FlowRuleLockOptions locking_;
  std::shared_ptr<HostRegistry> registry_;
  std::string table_path_;
  std::shared_ptr<FileNtupleTable> table_;
};

TEST_F(HostSteeringTest, RegistryLivesInASubdirectoryOfThisNetworkNamespace) {
  struct stat st {};
  ASSERT_EQ(stat("/proc/self/ns/net", &st), 0);
  EXPECT_EQ(registry_->directory(),
            options_.directories[0] + "/netns-" + std::to_string(st.st_ino));
  struct stat dir {};
  ASSERT_EQ(stat(registry_->directory().c_str(), &dir), 0);
  EXPECT_EQ(dir.st_mode & 07777, 0755u);
}

// A world-writable directory (another user may have planted it in /tmp) is not used.
TEST_F(HostSteeringTest, UntrustedDirectoryIsSkippedForTheNext) {
  const std::string planted = dir_.path() + "/planted";
  ASSERT_EQ(mkdir(planted.c_str(), 0777), 0);
  ASSERT_EQ(chmod(planted.c_str(), 0777), 0);
  RegistryOptions options = options_;
  options.directories = {planted, dir_.path() + "/second"};
  Result<std::shared_ptr<HostRegistry>> registry = HostRegistry::Open(options);
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  EXPECT_EQ(registry.value()->directory().rfind(dir_.path() + "/second/netns-", 0), 0u);
  options.directories = {planted};
  Result<std::shared_ptr<HostRegistry>> refused = HostRegistry::Open(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(Contains(refused.status().message(), "is not trusted for the registry"))
      << refused.status().message();
}

TEST_F(HostSteeringTest, RecordsRoundTripAndAreForgotten) {
  Result<Owner> me = ThisProcess(options_);
  ASSERT_TRUE(me.ok()) << me.status().message();
  EXPECT_EQ(me->pid, getpid());
  const RuleRecord rule{
      "fbnic0", 17,
      MatchConnection(Address("fd00::1", 5000), Address("fd00::2", 4000), 9, FlowScope::kExact),
      me.value()};
  const QueueClaim claim{"fbnic0", 9, 3, me.value()};
  ASSERT_TRUE(registry_->Add(rule).ok());
  ASSERT_TRUE(registry_->Add(claim).ok());
  Result<std::vector<RuleRecord>> rules = registry_->Rules("fbnic0");
  ASSERT_TRUE(rules.ok());
  ASSERT_EQ(rules->size(), 1u);
  EXPECT_EQ(rules->front().location, 17u);
  EXPECT_EQ(rules->front().match, rule.match);
  EXPECT_EQ(rules->front().owner, me.value());
  EXPECT_TRUE(registry_->Rules("fbnic").value().empty());  // another NIC's records are apart
  Result<std::vector<QueueClaim>> claims = registry_->Queues("fbnic0");
  ASSERT_TRUE(claims.ok());
  ASSERT_EQ(claims->size(), 1u);
  EXPECT_EQ(claims->front().gpu, 3);
  EXPECT_EQ(claims->front().owner, me.value());
  ASSERT_TRUE(registry_->Forget(rule).ok());
  ASSERT_TRUE(registry_->Forget(claim).ok());
  EXPECT_TRUE(registry_->Rules("fbnic0").value().empty());
  EXPECT_TRUE(registry_->Queues("fbnic0").value().empty());
}

// The lock is one abstract name per NIC: a second process waits while the first holds it, gets
// the deadline's error, and gets the lock once the holder is SIGKILLed (the kernel releases the
// name with the last descriptor: net/unix/af_unix.c unix_release_sock -> unix_remove_socket).
TEST_F(HostSteeringTest, LockExcludesAnotherProcessUntilItIsKilled) {
  Helper holder(HelperArgs({"lock", "fbnic0"}));
  ASSERT_EQ(holder.ReadLine(), "locked");
  FlowRuleLockOptions quick = locking_;
  quick.timeout = milliseconds(100);
  Result<FlowRuleLock> refused = FlowRuleLock::Acquire("fbnic0", quick);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(Contains(refused.status().message(),
                       "flow rule lock @" + locking_.name_prefix +
                           "/fbnic0 is still held by another process of this network namespace "
                           "after 100 ms"))
      << refused.status().message();
  Result<FlowRuleLock> other_nic = FlowRuleLock::Acquire("fbnic1", quick);
  EXPECT_TRUE(other_nic.ok()) << other_nic.status().message();
  holder.Kill();
  Result<FlowRuleLock> after = FlowRuleLock::Acquire("fbnic0", quick);
  ASSERT_TRUE(after.ok()) << after.status().message();
  EXPECT_EQ(after->name(), "@" + locking_.name_prefix + "/fbnic0");
}

// fbnic's 48 NFC entries, all taken by a live rank: the 49th rule is refused with the driver's
// errno after both scopes, and nothing of the live rank is touched.
TEST_F(HostSteeringTest, FullFbnicTableOfALiveRankRefusesTheNextRule) {
  Helper rank(HelperArgs({"rules", table_path_, "fbnic0", "198.18.0.2", "40000", "48", "9"}));
  ASSERT_EQ(rank.ReadLine(), "installed 48");
  EXPECT_EQ(table_->Rules().size(), testing::kFbnicNfcEntries);
  Result<FlowSteeringRule> rule = FlowSteeringRule::Install(Context(), Address("198.18.0.1", 5000),
                                                            Address("198.18.0.2", 50000), 9);
  ASSERT_FALSE(rule.ok());
  EXPECT_TRUE(Contains(rule.status().message(),
                       "steering 198.18.0.2:50000 -> 198.18.0.1:5000 to RX queue 9 (after the "
                       "exact 4-tuple form was refused: ETHTOOL_SRXCLSRLINS on fbnic0 (fake): No "
                       "space left on device (errno 28)): ETHTOOL_SRXCLSRLINS on fbnic0 (fake): No "
                       "space left on device"))
      << rule.status().message();
  EXPECT_EQ(table_->Rules().size(), testing::kFbnicNfcEntries);
  EXPECT_EQ(registry_->Rules("fbnic0").value().size(), testing::kFbnicNfcEntries);
}

// fbnic's 8 source-address TCAM entries: peers 1-8 get exact rules; the 9th peer's exact rule is
// refused (ENOSPC) and the rule without the source address takes its place.
TEST_F(HostSteeringTest, NinthPeerAddressFallsBackToTheRuleWithoutSourceAddress) {
  std::vector<FlowSteeringRule> rules;
  for (int peer = 1; peer <= 9; ++peer) {
    const std::string address = "198.18.1." + std::to_string(peer);
    Result<FlowSteeringRule> rule = FlowSteeringRule::Install(
        Context(), Address("198.18.0.1", 5000), Address(address.c_str(), 40000), 9);
    ASSERT_TRUE(rule.ok()) << rule.status().message();
    EXPECT_EQ(rule->match().match_src_addr, peer <= 8) << address;
    rules.push_back(std::move(rule).value());
  }
  // fbnic_cls_rule_any_loc: the highest free location first.
  EXPECT_EQ(rules.front().location(), testing::kFbnicNfcEntries - 1);
  EXPECT_EQ(rules.back().match().ToString(), "*:40000 -> 198.18.0.1:5000 to RX queue 9");
  EXPECT_EQ(table_->Rules().size(), 9u);
  rules.clear();  // each destructor reads its rule back and deletes it, and its record
  EXPECT_TRUE(table_->Rules().empty());
  EXPECT_TRUE(registry_->Rules("fbnic0").value().empty());
}

// The crash case: a rank installs rules and is SIGKILLed; its rules stay on the NIC (no fd owns
// them). The next process removes exactly those, by the registry and the owner's liveness.
TEST_F(HostSteeringTest, RulesOfAKilledRankAreRemovedByTheNextProcess) {
  Helper alive(HelperArgs({"rules", table_path_, "fbnic0", "198.18.0.3", "41000", "2", "10"}));
  ASSERT_EQ(alive.ReadLine(), "installed 2");
  Helper victim(HelperArgs({"rules", table_path_, "fbnic0", "198.18.0.2", "40000", "3", "9"}));
  ASSERT_EQ(victim.ReadLine(), "installed 3");
  ASSERT_EQ(table_->Rules().size(), 5u);
  Result<std::vector<RuleRecord>> before = registry_->Rules("fbnic0");
  ASSERT_TRUE(before.ok());
  ASSERT_EQ(before->size(), 5u);
  for (const RuleRecord& record : before.value()) {
    EXPECT_EQ(OwnerLiveness(record.owner, options_), Liveness::kAlive);
  }
  const pid_t victim_pid = victim.pid();
  victim.Kill();
  EXPECT_EQ(table_->Rules().size(), 5u);  // a ntuple rule outlives its process

  Result<ReapOutcome> reaped = ReapDeadOwners(Context());
  ASSERT_TRUE(reaped.ok()) << reaped.status().message();
  EXPECT_EQ(reaped->removed.size(), 3u);
  EXPECT_EQ(reaped->live_rules, 2u);
  EXPECT_TRUE(reaped->vanished.empty());
  for (const RuleRecord& record : reaped->removed) {
    EXPECT_EQ(record.owner.pid, victim_pid);
    EXPECT_EQ(record.match.src_port / 1000, 40);
  }
  const std::map<uint32_t, FlowMatch> left = table_->Rules();
  ASSERT_EQ(left.size(), 2u);
  for (const auto& [location, match] : left) EXPECT_EQ(match.queue, 10u);
  EXPECT_EQ(registry_->Rules("fbnic0").value().size(), 2u);
  // Nothing more to do the second time.
  Result<ReapOutcome> again = ReapDeadOwners(Context());
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->removed.empty());
  EXPECT_EQ(again->live_rules, 2u);
}

// A table filled by a dead rank: the insert reaps once and succeeds.
TEST_F(HostSteeringTest, FullTableOfADeadRankIsReapedByTheNextInsert) {
  {
    Helper victim(HelperArgs({"rules", table_path_, "fbnic0", "198.18.0.2", "40000", "48", "9"}));
    ASSERT_EQ(victim.ReadLine(), "installed 48");
  }  // SIGKILLed
  Result<FlowSteeringRule> rule = FlowSteeringRule::Install(Context(), Address("198.18.0.1", 5000),
                                                            Address("198.18.0.9", 50000), 9);
  ASSERT_TRUE(rule.ok()) << rule.status().message();
  EXPECT_TRUE(rule->match().match_src_addr);
  EXPECT_EQ(table_->Rules().size(), 1u);
  EXPECT_EQ(registry_->Rules("fbnic0").value().size(), 1u);
}

// mlx5-like explicit locations: after the dead rank's rule, someone put another rule at the same
// location (mlx5e_ethtool_flow_replace replaces). The record is dropped; the rule stays.
TEST_F(HostSteeringTest, ALocationThatNowHoldsAnotherRuleIsLeftAlone) {
  table_ = std::make_shared<FileNtupleTable>("mlx0", table_path_, /*explicit_locations=*/true);
  {
    Helper victim(
        HelperArgs({"rules", "mlx5:" + table_path_, "mlx0", "198.18.0.2", "40000", "1", "9"}));
    ASSERT_EQ(victim.ReadLine(), "installed 1");
  }
  ASSERT_EQ(table_->Rules().count(0), 1u);  // the lowest free location (flow_rule_location.h)
  const FlowMatch operators =
      MatchConnection(Address("198.18.0.1", 22), Address("198.18.0.7", 1), 0, FlowScope::kExact);
  int err = 0;
  ASSERT_TRUE(table_->Insert(operators, 0, &err).ok());
  Result<ReapOutcome> reaped = ReapDeadOwners(Context());
  ASSERT_TRUE(reaped.ok()) << reaped.status().message();
  EXPECT_TRUE(reaped->removed.empty());
  EXPECT_EQ(reaped->vanished.size(), 1u);
  ASSERT_EQ(table_->Rules().size(), 1u);
  EXPECT_EQ(table_->Rules().at(0), operators);
  EXPECT_TRUE(registry_->Rules("mlx0").value().empty());
}

// Queue assignment across processes: two ranks on one NIC get disjoint shares of the pool; a third
// finds it taken and is told by whom; once a rank dies its queues are free again (the kernel
// unbinds a dead process's queues, netdev-genl.c netdev_nl_sock_priv_destroy).
TEST_F(HostSteeringTest, RanksGetDisjointQueuesAndADeadRanksQueuesAreFreeAgain) {
  Helper first(HelperArgs({"claim", "fbnic0", "8,9,10,11", "12", "0", "2"}));
  ASSERT_EQ(first.ReadLine(), "queues 8,9");
  Helper second(HelperArgs({"claim", "fbnic0", "8,9,10,11", "12", "1", "2"}));
  ASSERT_EQ(second.ReadLine(), "queues 10,11");
  Helper third(HelperArgs({"claim", "fbnic0", "8,9,10,11", "12", "2", "2"}));
  const std::string refused = third.ReadLine();
  EXPECT_TRUE(Contains(refused,
                       "error no free devmem RX queue: every queue of the pool 8,9,10,11 "
                       "is taken (queue 8 claimed by pid " +
                           std::to_string(first.pid())))
      << refused;
  EXPECT_TRUE(Contains(refused, "for GPU 1")) << refused;
  first.Kill();
  Helper fourth(HelperArgs({"claim", "fbnic0", "8,9,10,11", "12", "3", "2"}));
  EXPECT_EQ(fourth.ReadLine(), "queues 8,9");
  // The dead rank's claims are released by the next reap.
  Result<ReapOutcome> reaped = ReapDeadOwners(Context());
  ASSERT_TRUE(reaped.ok()) << reaped.status().message();
  Result<std::vector<QueueClaim>> claims = registry_->Queues("fbnic0");
  ASSERT_TRUE(claims.ok());
  EXPECT_EQ(claims->size(), 4u);  // second's 10,11 and fourth's 8,9 (overwrote first's files)
}

// ---------------------------------------------------------------------------------------------
// Namespaces (root).

class HostSteeringNamespaceTest : public HostSteeringTest {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for unshare(CLONE_NEWNS / CLONE_NEWNET)";
    HostSteeringTest::SetUp();
  }
  // Exit code of a forked child that enters new namespaces `flags` and then tries the lock
  // without waiting: 0 got it, 1 refused as held, 2 other error, 3 unshare failed.
  int TryLockInChild(int flags) {
    const pid_t pid = fork();
    if (pid == 0) {
      if (unshare(flags) != 0) _exit(3);
      FlowRuleLockOptions now = locking_;
      now.timeout = milliseconds(0);
      Result<FlowRuleLock> lock = FlowRuleLock::Acquire("fbnic0", now);
      if (lock.ok()) _exit(0);
      _exit(Contains(lock.status().message(), "still held") ? 1 : 2);
    }
    Child child(pid);
    return child.Wait();
  }
};

// Containers that share the host netns but not its mounts (hostNetwork pods with their own /run)
// see one lock: the name is in the netns's table, not in any filesystem.
TEST_F(HostSteeringNamespaceTest, LockExcludesAProcessInAnotherMountNamespace) {
  Result<FlowRuleLock> held = FlowRuleLock::Acquire("fbnic0", locking_);
  ASSERT_TRUE(held.ok()) << held.status().message();
  const int code = TryLockInChild(CLONE_NEWNS);
  if (code == 3) GTEST_SKIP() << "unshare(CLONE_NEWNS) refused here";
  EXPECT_EQ(code, 1);
}

// Another network namespace has other NICs and its own lock (net/unix/af_unix.c keeps abstract
// names in net->unx.table).
TEST_F(HostSteeringNamespaceTest, AnotherNetworkNamespaceHasItsOwnLock) {
  Result<FlowRuleLock> held = FlowRuleLock::Acquire("fbnic0", locking_);
  ASSERT_TRUE(held.ok()) << held.status().message();
  const int code = TryLockInChild(CLONE_NEWNET);
  if (code == 3) GTEST_SKIP() << "unshare(CLONE_NEWNET) refused here";
  EXPECT_EQ(code, 0);
}

// A rank in another mount namespace but this netns is alive to us (and dead once killed): owner
// liveness is the abstract name, whatever the mounts.
TEST_F(HostSteeringNamespaceTest, OwnerInAnotherMountNamespaceIsSeenAliveThenGone) {
  testing::Pipe ready;
  ASSERT_TRUE(ready.valid());
  const pid_t pid = fork();
  if (pid == 0) {
    if (unshare(CLONE_NEWNS) != 0) _exit(3);
    RegistryOptions fresh = options_;
    fresh.owner_prefix += "/child";  // this process's own name, not the parent's inherited one
    Result<Owner> owner = ThisProcess(fresh);
    if (!owner.ok()) _exit(2);
    std::ofstream(dir_.path() + "/token") << owner->token << "\n";
    ready.Send('r');
    while (true) pause();
  }
  Child child(pid);
  ASSERT_EQ(ready.Receive(milliseconds(30000)), 'r');
  std::string token;
  std::ifstream(dir_.path() + "/token") >> token;
  RegistryOptions child_options = options_;
  child_options.owner_prefix += "/child";
  const Owner owner{pid, 0, token};
  EXPECT_EQ(OwnerLiveness(owner, child_options), Liveness::kAlive);
  child.Kill();
  EXPECT_EQ(OwnerLiveness(owner, child_options), Liveness::kGone);
}

}  // namespace
}  // namespace devmem
