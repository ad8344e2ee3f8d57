// The NIC and privilege checks on facts a real driver or container would report, which this host
// cannot produce: fbnic's rings reply, queues held by io_uring or AF_XDP, an XDP program, large
// RX buffers, mlx5 without HW-GRO, a bind-rx that wants the initial user namespace. Each case
// names the kernel (or driver) line whose refusal it mirrors.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "plugin/setup/readiness.h"
#include "tests/common/report_rows.h"

namespace devmem {
namespace {

using testing::Find;
using testing::Row;

NetDevice PhysicalNic(const std::string& name) {
  NetDevice nic;
  nic.name = name;
  nic.ifindex = 7;
  nic.pci_path = "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0";
  nic.speed_mbps = 200000;
  nic.speed_from_driver = true;
  return nic;
}

// A NIC that passes every check: 4 free RX queues, header split set, RSS on queues 0-2.
NicFacts ReadyFacts(const std::string& driver) {
  NicFacts facts;
  facts.driver = driver;
  facts.link = LinkState{true, 0, 0};
  facts.rx_queues = std::vector<RxQueueInfo>{{0, 1, 0}, {1, 2, 0}, {2, 3, 0}, {3, 4, 0}};
  RingSettings rings;
  rings.tcp_data_split = 2;  // ETHTOOL_TCP_DATA_SPLIT_ENABLED
  rings.hds_thresh = 0;
  rings.rx_ring = 1024;
  facts.rings = rings;
  facts.features = OffloadFeatures{true, true, true};
  facts.ntuple = true;
  facts.rss_indirection = std::vector<uint32_t>{0, 1, 2, 0, 1, 2};
  facts.page_bytes = 4096;
  return facts;
}

TEST(NicChecksTest, FbnicsReportedHeaderSplitIsAWarningThatNamesTheCommand) {
  // fbnic_ethtool.c fbnic_get_ringparam sets kernel_ring->tcp_data_split = ENABLED whatever was
  // configured, and hds_thresh to its probe default FBNIC_HDS_THRESH_DEFAULT (1536); the kernel
  // checks dev->cfg->hds_config (netdev_rx_queue.c:231) and cfg->hds_thresh (:236).
  NicFacts facts = ReadyFacts("fbnic");
  facts.rings->hds_thresh = 1536;
  ReadinessReport report = CheckNicFacts(PhysicalNic("eth0"), facts, {3});
  const CheckOutcome* split = Find(report, "tcp-data-split");
  ASSERT_NE(split, nullptr);
  EXPECT_EQ(split->verdict, Verdict::kWarn) << split->detail;
  EXPECT_NE(split->detail.find("\"tcp-data-split is disabled\""), std::string::npos);
  EXPECT_EQ(split->fix, "ethtool -G eth0 tcp-data-split on hds-thresh 0");
  const CheckOutcome* thresh = Find(report, "hds-thresh");
  ASSERT_NE(thresh, nullptr);
  EXPECT_EQ(thresh->verdict, Verdict::kFail);
  EXPECT_EQ(thresh->detail, "1536");
  // The fix of the failing row sets both knobs, not only the one that failed.
  EXPECT_EQ(thresh->fix, "ethtool -G eth0 tcp-data-split on hds-thresh 0");

  // Once hds-thresh reads 0 the host is ready, and the split row still says what to run.
  facts.rings->hds_thresh = 0;
  report = CheckNicFacts(PhysicalNic("eth0"), facts, {3});
  EXPECT_TRUE(report.ready()) << report.ToText();
  EXPECT_EQ(report.warnings(), 1u) << report.ToText();
  EXPECT_NE(report.ToText().find("WARN  eth0       tcp-data-split"), std::string::npos);
  EXPECT_NE(report.ToJson().find("\"check\": \"tcp-data-split\", \"result\": \"WARN\""),
            std::string::npos);
}

TEST(NicChecksTest, HeaderSplitNotReportedOrOffFails) {
  // rings.c rings_fill_reply puts ETHTOOL_A_RINGS_TCP_DATA_SPLIT only when non-zero: absent
  // means unknown (never set) or no driver support; neither passes netdev_rx_queue.c:231.
  NicFacts facts = ReadyFacts("gve");
  facts.rings->tcp_data_split.reset();
  EXPECT_EQ(Row(CheckNicFacts(PhysicalNic("eth0"), facts, {3}), "tcp-data-split").verdict,
            Verdict::kFail);
  facts.rings->tcp_data_split = 1;  // ETHTOOL_TCP_DATA_SPLIT_DISABLED
  const ReadinessReport report = CheckNicFacts(PhysicalNic("eth0"), facts, {3});
  EXPECT_EQ(Find(report, "tcp-data-split")->detail, "off");
  EXPECT_FALSE(report.ready());
}

TEST(NicChecksTest, Mlx5NeedsHwGroBeforeHeaderSplit) {
  // mlx5 en_ethtool.c: "TCP-data-split is not supported when GRO HW is disabled".
  NicFacts facts = ReadyFacts("mlx5_core");
  facts.features->rx_gro_hw = false;
  facts.rings->tcp_data_split = 1;
  const ReadinessReport report = CheckNicFacts(PhysicalNic("eth2"), facts, {3});
  const CheckOutcome* gro = Find(report, "rx-gro-hw");
  ASSERT_NE(gro, nullptr);
  EXPECT_EQ(gro->verdict, Verdict::kFail);
  EXPECT_EQ(gro->fix, "ethtool -K eth2 rx-gro-hw on");
  EXPECT_EQ(Find(report, "tcp-data-split")->fix,
            "ethtool -K eth2 rx-gro-hw on && ethtool -G eth2 tcp-data-split on hds-thresh 0");
  // Only mlx5 gets the row.
  EXPECT_TRUE(
      Row(CheckNicFacts(PhysicalNic("eth0"), ReadyFacts("gve"), {3}), "rx-gro-hw").check.empty());
}

TEST(NicChecksTest, AnAttachedXdpProgramFails) {
  // netdev_rx_queue.c:241: dev_xdp_prog_count(dev) → EEXIST "unable to custom memory provider
  // to device with XDP program attached".
  NicFacts facts = ReadyFacts("gve");
  facts.link = LinkState{true, 1, 42};  // XDP_ATTACHED_DRV, program 42
  const CheckOutcome xdp = Row(CheckNicFacts(PhysicalNic("eth0"), facts, {3}), "xdp");
  ASSERT_EQ(xdp.check.empty(), false);
  EXPECT_EQ(xdp.verdict, Verdict::kFail);
  EXPECT_EQ(xdp.detail, "XDP program 42 attached (driver): bind-rx fails with EEXIST");
  EXPECT_EQ(xdp.fix.rfind("ip link set dev eth0 xdp off", 0), 0u) << xdp.fix;
}

TEST(NicChecksTest, QueuesHeldByAnotherMemoryProviderOrAfXdpFail) {
  // netdev_rx_queue.c:246 (rxq->mp_params.mp_ops: EEXIST, devmem or io_uring zcrx) and :252
  // (rxq->pool: EBUSY "designated queue already in use by AF_XDP").
  struct Case {
    RxQueueInfo queue;
    const char* expected;
  };
  const Case cases[] = {
      {{3, 4, 9, false, false}, "queue 3 is bound to dmabuf 9 (bind-rx: EEXIST"},
      {{3, 4, 0, true, false}, "queue 3 is held by io_uring zero-copy receive (bind-rx: EEXIST"},
      {{3, 4, 0, false, true}, "queue 3 is held by an AF_XDP socket (bind-rx: EBUSY"},
  };
  for (const Case& c : cases) {
    NicFacts facts = ReadyFacts("gve");
    facts.rx_queues.value()[3] = c.queue;
    const CheckOutcome queues = Row(CheckNicFacts(PhysicalNic("eth0"), facts, {3}), "rx queues");
    ASSERT_EQ(queues.check.empty(), false);
    EXPECT_EQ(queues.verdict, Verdict::kFail) << c.expected;
    EXPECT_EQ(queues.detail.rfind(c.expected, 0), 0u) << queues.detail;
  }
  // Queue 2 stays free while 3 is held: asking for 2 passes.
  NicFacts facts = ReadyFacts("gve");
  facts.rx_queues.value()[3].io_uring = true;
  facts.rss_indirection = std::vector<uint32_t>{0, 1};
  EXPECT_EQ(Row(CheckNicFacts(PhysicalNic("eth0"), facts, {2}), "rx queues").verdict,
            Verdict::kPass);
}

TEST(NicChecksTest, RxBuffersLargerThanAPageFail) {
  // devmem.c mp_dmabuf_devmem_init (6.12-6.18): pool->p.order != 0 → E2BIG, no extack.
  NicFacts facts = ReadyFacts("bnxt_en");
  facts.rings->rx_buf_len = 8192;
  const CheckOutcome len = Row(CheckNicFacts(PhysicalNic("eth1"), facts, {3}), "rx-buf-len");
  ASSERT_EQ(len.check.empty(), false);
  EXPECT_EQ(len.verdict, Verdict::kFail);
  EXPECT_NE(len.detail.find("E2BIG"), std::string::npos);
  EXPECT_EQ(len.fix, "ethtool -G eth1 rx-buf-len 4096");
  facts.rings->rx_buf_len = 4096;
  EXPECT_EQ(Row(CheckNicFacts(PhysicalNic("eth1"), facts, {3}), "rx-buf-len").verdict,
            Verdict::kPass);
  facts.page_bytes = 65536;  // a 64 KiB-page kernel takes larger buffers at order 0
  facts.rings->rx_buf_len = 8192;
  EXPECT_EQ(Row(CheckNicFacts(PhysicalNic("eth1"), facts, {3}), "rx-buf-len").verdict,
            Verdict::kPass);
}

TEST(NicChecksTest, RxChecksumOffFails) {
  // Documentation/networking/devmem.rst "Unreadable skbs": software checksum calculation fails.
  NicFacts facts = ReadyFacts("gve");
  facts.features->rx_checksum = false;
  const CheckOutcome csum = Row(CheckNicFacts(PhysicalNic("eth0"), facts, {3}), "rx checksum");
  ASSERT_EQ(csum.check.empty(), false);
  EXPECT_EQ(csum.verdict, Verdict::kFail);
  EXPECT_EQ(csum.fix, "ethtool -K eth0 rx on");
}

TEST(NicChecksTest, QueueApiIsKnownForSomeDriversOnly) {
  // netdev-genl.c netdev_nl_bind_rx_doit: !netdev_need_ops_lock → EOPNOTSUPP naming ifindex;
  // bnxt.c bnxt_init_one installs bnxt_queue_mgmt_ops_unsupp unless BNXT_SUPPORTS_QUEUE_API.
  EXPECT_EQ(Row(CheckNicFacts(PhysicalNic("eth0"), ReadyFacts("fbnic"), {3}), "queue api").verdict,
            Verdict::kPass);
  EXPECT_EQ(
      Row(CheckNicFacts(PhysicalNic("eth0"), ReadyFacts("bnxt_en"), {3}), "queue api").verdict,
      Verdict::kWarn);
  const CheckOutcome other =
      Row(CheckNicFacts(PhysicalNic("eth0"), ReadyFacts("ixgbe"), {3}), "queue api");
  EXPECT_EQ(other.verdict, Verdict::kWarn);
  EXPECT_NE(other.detail.find("driver ixgbe is not known"), std::string::npos);
}

TEST(NicChecksTest, ADownInterfaceIsNamedNotOmitted) {
  // netdev-genl.c netdev_nl_queue_dump_one: `if (!netdev->up) return` — no queue is listed.
  NicFacts facts = ReadyFacts("gve");
  facts.link = LinkState{false, 0, 0};
  facts.rx_queues = std::vector<RxQueueInfo>{};
  const ReadinessReport report = CheckNicFacts(PhysicalNic("eth0"), facts, {});
  EXPECT_EQ(Find(report, "link")->verdict, Verdict::kFail);
  const CheckOutcome* queues = Find(report, "rx queues");
  ASSERT_NE(queues, nullptr);
  EXPECT_EQ(queues->verdict, Verdict::kFail);
  EXPECT_EQ(queues->fix, "ip link set dev eth0 up");
}

TEST(NicChecksTest, AVirtualDeviceFails) {
  // netdev_rx_queue.c:226: !dev->dev.parent → EBUSY "rx queue is mapped to a virtual netdev".
  NetDevice veth = PhysicalNic("veth0");
  veth.pci_path.clear();
  const CheckOutcome device = Row(CheckNicFacts(veth, ReadyFacts("veth"), {3}), "device");
  ASSERT_EQ(device.check.empty(), false);
  EXPECT_EQ(device.verdict, Verdict::kFail);
}

PrivilegeFacts Privileges(bool admin, bool initial, std::optional<bool> owned, uint32_t flags) {
  PrivilegeFacts facts;
  facts.cap_net_admin = admin;
  facts.initial_user_ns = initial;
  facts.netns_owned_here = owned;
  facts.bind_rx_op_flags = flags;
  return facts;
}

TEST(PrivilegeChecksTest, BindRxScopeFollowsTheOpFlags) {
  // net/netlink/genetlink.c: GENL_ADMIN_PERM → netlink_capable (initial user namespace),
  // GENL_UNS_ADMIN_PERM → netlink_ns_capable(net->user_ns); EPERM otherwise.
  auto scope = [](PrivilegeFacts facts) {
    return Row(CheckPrivilegeFacts(std::move(facts)), "bind-rx scope").verdict;
  };
  EXPECT_EQ(scope(Privileges(true, true, true, kGenlAdminPerm)), Verdict::kPass);
  // A container with its own user namespace: root inside, EPERM from an ADMIN_PERM kernel.
  EXPECT_EQ(scope(Privileges(true, false, true, kGenlAdminPerm)), Verdict::kFail);
  // A newer kernel accepts the owner of the network namespace...
  EXPECT_EQ(scope(Privileges(true, false, true, kGenlUnsAdminPerm)), Verdict::kPass);
  // ...but not a user namespace sharing the host's network namespace.
  EXPECT_EQ(scope(Privileges(true, false, false, kGenlUnsAdminPerm)), Verdict::kFail);
  EXPECT_EQ(scope(Privileges(false, true, true, kGenlAdminPerm)), Verdict::kFail);
}

TEST(PcieDistanceCheckTest, OnlyACommonUpstreamBridgeIsSureToAttach) {
  // kernel-open/nvidia/nv-pci.c nv_pci_has_common_pci_switch walks pci_upstream_bridge() of both
  // devices; a root port counts. Without a common bridge nv_grdma_pci_topology_supported decides
  // by a chipset flag only the driver knows: WARN, not FAIL.
  const std::string nic = "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0";
  EXPECT_EQ(PcieDistance(nic, "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.1"),
            "same PCIe root port");
  auto verdict = [&](const std::string& gpu) {
    return CheckPcieDistance("gpu0", gpu, nic, "0000:81:00.0").checks()[0].verdict;
  };
  EXPECT_EQ(verdict("/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.1"), Verdict::kPass);
  EXPECT_EQ(verdict("/sys/devices/pci0000:00/0000:00:03.0/0000:05:00.0"), Verdict::kWarn);
  EXPECT_EQ(verdict("/sys/devices/pci0000:80/0000:80:01.0/0000:81:00.0"), Verdict::kWarn);
  EXPECT_EQ(verdict(""), Verdict::kWarn);
}

}  // namespace
}  // namespace devmem
