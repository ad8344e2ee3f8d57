// The NIC and privilege checks, judged on facts (nic_facts.h). Each row mirrors one refusal of
// the kernel's bind-rx, in the order the kernel makes them. Kernel lines are from torvalds/linux:
// net/core/netdev_rx_queue.c @0caa9a8d, net/core/netdev-genl.c and net/ethtool/rings.c as
// named; net/core/devmem.c from the 6.12-6.18 releases.
#include <algorithm>
#include <optional>
#include <set>

#include "plugin/setup/readiness.h"
#include "plugin/setup/rx_queue_plan.h"

namespace devmem {
namespace {

// Drivers whose probe installs netdev->queue_mgmt_ops unconditionally: without it bind-rx answers
// EOPNOTSUPP (netdev-genl.c netdev_nl_bind_rx_doit: !netdev_need_ops_lock; netdev_rx_queue.c:134
// netdev_rx_queue_restart: !qops).
struct QueueApiDriver {
  const char* driver;
  const char* where;
};
constexpr QueueApiDriver kQueueApiDrivers[] = {
    {"gve", "gve_main.c gve_probe"},
    {"mlx5_core", "mlx5 en_main.c mlx5e_build_nic_netdev"},
    {"fbnic", "fbnic_netdev.c fbnic_netdev_alloc"},
};

void AddQueueApi(ReadinessReport* report, const std::string& nic, const std::string& driver) {
  for (const QueueApiDriver& known : kQueueApiDrivers) {
    if (driver == known.driver) {
      report->Add(nic, "queue api", Verdict::kPass,
                  Format("%s installs queue_mgmt_ops (%s)", known.driver, known.where));
      return;
    }
  }
  const std::string fix = "use a NIC whose driver restarts single queues: gve, mlx5, fbnic, bnxt";
  if (driver == "bnxt_en") {
    // bnxt.c bnxt_init_one: bnxt_queue_mgmt_ops_unsupp unless BNXT_SUPPORTS_QUEUE_API(bp).
    report->Add(nic, "queue api", Verdict::kWarn,
                "bnxt_en has the queue API only on chips with BNXT_SUPPORTS_QUEUE_API; on others "
                "bind-rx answers EOPNOTSUPP naming ifindex",
                fix);
    return;
  }
  report->Add(nic, "queue api", Verdict::kWarn,
              Format("driver %s is not known to restart single RX queues (queue_mgmt_ops); "
                     "where it does not, bind-rx answers EOPNOTSUPP naming ifindex",
                     driver.empty() ? "?" : driver.c_str()),
              fix);
}

const char* XdpMode(uint8_t attached) {
  switch (attached) {
    case 1:
      return "driver";
    case 2:
      return "generic";
    case 3:
      return "offloaded";
    default:
      return "several modes";
  }
}

// What holds a queue already, as the kernel refuses a second memory provider: "" when free.
std::string QueueHolder(const RxQueueInfo& queue) {
  // netdev_rx_queue.c:246 (EEXIST "designated queue already memory provider bound").
  if (queue.dmabuf_id != 0) {
    return Format(
        "queue %u is bound to dmabuf %u (bind-rx: EEXIST \"designated queue already "
        "memory provider bound\")",
        queue.id, queue.dmabuf_id);
  }
  if (queue.io_uring) {
    return Format(
        "queue %u is held by io_uring zero-copy receive (bind-rx: EEXIST \"designated "
        "queue already memory provider bound\")",
        queue.id);
  }
  // netdev_rx_queue.c:252 (EBUSY "designated queue already in use by AF_XDP").
  if (queue.af_xdp) {
    return Format(
        "queue %u is held by an AF_XDP socket (bind-rx: EBUSY \"designated queue "
        "already in use by AF_XDP\")",
        queue.id);
  }
  return "";
}

void AddRxQueues(ReadinessReport* report, const std::string& nic, NicFacts& facts,
                 const std::vector<uint32_t>& queues, std::vector<uint32_t>* chosen) {
  *chosen = queues;
  const std::string fix =
      Format("ethtool -L %s combined <N>, and NCCL_DEVMEM_RX_QUEUES=<free queue ids>", nic.c_str());
  if (!facts.rx_queues.ok()) {
    report->Add(nic, "rx queues", Verdict::kFail, facts.rx_queues.status().message(),
                "boot Linux >= 6.12 built with CONFIG_NET_DEVMEM=y");
    return;
  }
  const std::vector<RxQueueInfo>& rx = facts.rx_queues.value();
  if (rx.empty()) {
    // netdev-genl.c netdev_nl_queue_dump_one: a device that is not up lists no queue.
    const bool down = facts.link.ok() && !facts.link->up;
    report->Add(nic, "rx queues", Verdict::kFail,
                down ? "none listed: the kernel lists no queue of a device that is down"
                     : "the kernel lists no RX queue for this device",
                down ? Format("ip link set dev %s up", nic.c_str()) : fix);
    return;
  }
  // The devmem pool's free queues (rx_queue_plan.h): a queue another rank bound is no reason
  // to fall back.
  std::optional<std::vector<uint32_t>> rss;
  if (facts.rss_indirection.ok()) rss = facts.rss_indirection.value();
  *chosen = QueuesToCheck(queues, rx, rss);
  std::string problem;
  if (rx.size() < 2) {
    problem = Format("%zu RX queue(s): one must stay for ordinary traffic", rx.size());
  }
  for (uint32_t q : *chosen) {
    auto it = std::find_if(rx.begin(), rx.end(), [&](const RxQueueInfo& r) { return r.id == q; });
    if (it == rx.end()) {
      // netdev_rx_queue.c:215 (ERANGE "rx queue index out of range").
      problem = Format("queue %u does not exist (the NIC has %zu RX queues)", q, rx.size());
    } else if (std::string holder = QueueHolder(*it); !holder.empty()) {
      problem = holder;
    }
  }
  if (problem.empty()) {
    report->Add(nic, "rx queues", Verdict::kPass,
                Format("%zu RX queues; devmem queue(s) %s, free", rx.size(),
                       JoinQueueIds(*chosen).c_str()));
  } else {
    report->Add(nic, "rx queues", Verdict::kFail, problem, fix);
  }
}

void AddHeaderSplit(ReadinessReport* report, const std::string& nic, const std::string& driver,
                    NicFacts& facts) {
  // mlx5 refuses "tcp-data-split on" while HW-GRO is off ("TCP-data-split is not supported when
  // GRO HW is disabled", mlx5 en_ethtool.c): its fix turns HW-GRO on first.
  const std::string gro =
      driver == "mlx5_core" ? Format("ethtool -K %s rx-gro-hw on && ", nic.c_str()) : std::string();
  const std::string fix = gro + Format("ethtool -G %s tcp-data-split on hds-thresh 0", nic.c_str());
  if (!facts.rings.ok()) {
    report->Add(nic, "tcp-data-split", Verdict::kFail, facts.rings.status().message(),
                fix + " (needs a driver with header split)");
    report->Add(nic, "hds-thresh", Verdict::kFail, facts.rings.status().message(), fix);
    return;
  }
  const RingSettings& rings = facts.rings.value();
  // The kernel checks the value set through ethtool (netdev_rx_queue.c:231, dev->cfg->hds_config
  // != ETHTOOL_TCP_DATA_SPLIT_ENABLED: EINVAL "tcp-data-split is disabled"). The rings reply
  // starts from that value but the driver's get_ringparam may overwrite it (rings.c
  // rings_prepare_data), and fbnic always answers "enabled" (fbnic_ethtool.c
  // fbnic_get_ringparam). So "on" cannot be trusted; anything else is surely not "enabled".
  if (rings.tcp_data_split == 2) {
    report->Add(nic, "tcp-data-split", Verdict::kWarn,
                "driver reports on; the kernel checks the value set with ethtool -G, which no "
                "reply shows: unless it was set, bind-rx fails with EINVAL \"tcp-data-split is "
                "disabled\"",
                fix);
  } else {
    // rings.c rings_fill_reply leaves the attribute out while the value is 0 (unknown).
    report->Add(nic, "tcp-data-split", Verdict::kFail,
                rings.tcp_data_split.has_value()
                    ? std::string(*rings.tcp_data_split == 1 ? "off" : "auto (not forced on)")
                    : std::string("not reported: never set, or a driver without header split"),
                fix);
  }
  // netdev_rx_queue.c:236 (dev->cfg->hds_thresh != 0: EINVAL "hds-thresh is not zero").
  if (!rings.hds_thresh.has_value()) {
    report->Add(nic, "hds-thresh", Verdict::kSkip, "not reported (kernel < 6.14 or driver)");
  } else {
    report->Add(nic, "hds-thresh", *rings.hds_thresh == 0 ? Verdict::kPass : Verdict::kFail,
                Format("%u", *rings.hds_thresh), fix);
  }
}

void AddRxBufLen(ReadinessReport* report, const std::string& nic, NicFacts& facts) {
  if (!facts.rings.ok()) return;  // reported with tcp-data-split
  const std::optional<uint32_t> len = facts.rings->rx_buf_len;
  if (!len.has_value()) {
    report->Add(nic, "rx-buf-len", Verdict::kPass, "driver reports none (page-sized buffers)");
    return;
  }
  // devmem.c mp_dmabuf_devmem_init: a page pool of order != 0 is refused with E2BIG (no extack);
  // kernels with NETDEV_A_DMABUF_RX_PAGE_SIZE compare against the binding's page size instead.
  const bool fits = *len <= facts.page_bytes;
  report->Add(nic, "rx-buf-len", fits ? Verdict::kPass : Verdict::kFail,
              fits ? Format("%u (PAGE_SIZE %u)", *len, facts.page_bytes)
                   : Format("%u > PAGE_SIZE %u: the driver's page pool gets order > 0, which "
                            "bind-rx refuses with E2BIG",
                            *len, facts.page_bytes),
              Format("ethtool -G %s rx-buf-len %u", nic.c_str(), facts.page_bytes));
}

void AddXdp(ReadinessReport* report, const std::string& nic, NicFacts& facts) {
  if (!facts.link.ok()) {
    report->Add(nic, "xdp", Verdict::kSkip, facts.link.status().message());
    return;
  }
  // netdev_rx_queue.c:241 (dev_xdp_prog_count: EEXIST "unable to custom memory provider to device
  // with XDP program attached").
  const LinkState& link = facts.link.value();
  if (link.xdp_attached == 0) {
    report->Add(nic, "xdp", Verdict::kPass, "no XDP program attached");
    return;
  }
  report->Add(nic, "xdp", Verdict::kFail,
              Format("XDP program %u attached (%s): bind-rx fails with EEXIST", link.xdp_prog_id,
                     XdpMode(link.xdp_attached)),
              Format("ip link set dev %s xdp off (xdpgeneric off, xdpoffload off for other modes)",
                     nic.c_str()));
}

void AddOffloads(ReadinessReport* report, const std::string& nic, const std::string& driver,
                 NicFacts& facts) {
  if (!facts.features.ok()) {
    report->Add(nic, "rx checksum", Verdict::kSkip, facts.features.status().message());
    return;
  }
  const OffloadFeatures& features = facts.features.value();
  // Documentation/networking/devmem.rst "Unreadable skbs": software checksum calculation fails,
  // since the kernel cannot read the payload.
  report->Add(
      nic, "rx checksum", features.rx_checksum ? Verdict::kPass : Verdict::kFail,
      features.rx_checksum ? "on" : "off: the kernel cannot checksum payload it cannot read",
      Format("ethtool -K %s rx on", nic.c_str()));
  if (driver == "mlx5_core") {
    report->Add(nic, "rx-gro-hw", features.rx_gro_hw ? Verdict::kPass : Verdict::kFail,
                features.rx_gro_hw ? "on" : "off: mlx5 keeps tcp-data-split off without it",
                Format("ethtool -K %s rx-gro-hw on", nic.c_str()));
  }
  // Devmem TX is information only (CheckNicTx): a missing TX checksum offload costs it, not RX.
  report->Add(nic, "tx checksum", features.tx_checksum ? Verdict::kPass : Verdict::kWarn,
              features.tx_checksum ? "on" : "off: devmem TX needs the NIC to checksum",
              Format("ethtool -K %s tx on", nic.c_str()));
}

}  // namespace

ReadinessReport CheckNicFacts(const NetDevice& device, NicFacts facts,
                              const std::vector<uint32_t>& queues,
                              std::vector<uint32_t>* chosen_queues) {
  ReadinessReport report;
  const std::string& nic = device.name;
  std::vector<uint32_t> chosen;
  if (device.loopback) {
    report.Add(nic, "device", Verdict::kFail, "loopback cannot carry devmem payloads (no NIC DMA)",
               "select a physical NIC with NCCL_SOCKET_IFNAME");
    if (chosen_queues != nullptr) *chosen_queues = queues;
    return report;
  }
  // netdev_rx_queue.c:226 (no dev->dev.parent: EBUSY "rx queue is mapped to a virtual netdev";
  // older kernels refuse it for its missing queue API).
  if (device.pci_path.empty()) {
    report.Add(nic, "device", Verdict::kFail,
               "virtual device (no parent device in sysfs): bind-rx takes only a NIC's own queues",
               "select a physical NIC with NCCL_SOCKET_IFNAME");
  }
  const std::string driver = facts.driver.ok() ? facts.driver.value() : std::string();
  report.Add(nic, "driver", facts.driver.ok() ? Verdict::kPass : Verdict::kSkip,
             facts.driver.ok() ? driver : facts.driver.status().message());
  if (!facts.link.ok()) {
    report.Add(nic, "link", Verdict::kSkip, facts.link.status().message());
  } else {
    report.Add(nic, "link", facts.link->up ? Verdict::kPass : Verdict::kFail,
               facts.link->up ? "up" : "down: it carries no traffic and lists no queue",
               Format("ip link set dev %s up", nic.c_str()));
  }
  AddQueueApi(&report, nic, driver);
  AddRxQueues(&report, nic, facts, queues, &chosen);
  if (chosen_queues != nullptr) *chosen_queues = chosen;
  AddHeaderSplit(&report, nic, driver, facts);
  AddXdp(&report, nic, facts);
  AddRxBufLen(&report, nic, facts);
  AddOffloads(&report, nic, driver, facts);

  report.Add(
      nic, "ntuple", facts.ntuple.ok() && facts.ntuple.value() ? Verdict::kPass : Verdict::kFail,
      facts.ntuple.ok() ? (facts.ntuple.value() ? "on" : "off") : facts.ntuple.status().message(),
      Format("ethtool -K %s ntuple on", nic.c_str()));
  if (!facts.rss_indirection.ok()) {
    report.Add(nic, "rss", Verdict::kFail, facts.rss_indirection.status().message(),
               Format("ethtool -X %s equal <first devmem queue>", nic.c_str()));
  } else {
    std::set<uint32_t> bound(chosen.begin(), chosen.end());
    size_t hits = 0;
    for (uint32_t q : facts.rss_indirection.value()) hits += bound.count(q);
    const size_t entries = facts.rss_indirection->size();
    const uint32_t first = chosen.empty() ? 0 : *std::min_element(chosen.begin(), chosen.end());
    report.Add(nic, "rss", hits == 0 ? Verdict::kPass : Verdict::kFail,
               hits == 0 ? Format("%zu entries, none on the devmem queues", entries)
                         : Format("%zu of %zu entries send ordinary flows to devmem queues", hits,
                                  entries),
               Format("ethtool -X %s equal %u", nic.c_str(), first));
  }
  if (device.speed_from_driver) {
    report.Add(nic, "link speed", Verdict::kPass, Format("%d Mb/s", device.speed_mbps));
  } else {
    report.Add(nic, "link speed", Verdict::kSkip,
               Format("driver reports none; NCCL is told %d Mb/s", device.speed_mbps));
  }
  return report;
}

ReadinessReport CheckPrivilegeFacts(PrivilegeFacts facts) {
  ReadinessReport report;
  if (!facts.cap_net_admin.ok()) {
    report.Add("privileges", "CAP_NET_ADMIN", Verdict::kFail,
               facts.cap_net_admin.status().message(), "run as root");
    return report;
  }
  const bool admin = facts.cap_net_admin.value();
  report.Add("privileges", "CAP_NET_ADMIN", admin ? Verdict::kPass : Verdict::kFail,
             admin ? "effective" : "missing: bind-rx and flow steering rules need it",
             "run as root, or: setcap cap_net_admin+ep <your launcher>");
  if (!facts.bind_rx_op_flags.ok()) {
    report.Add("privileges", "bind-rx scope", Verdict::kSkip,
               facts.bind_rx_op_flags.status().message());
    return report;
  }
  // net/netlink/genetlink.c genl_family_rcv_msg: GENL_ADMIN_PERM is netlink_capable (the
  // initial user namespace), GENL_UNS_ADMIN_PERM netlink_ns_capable(net->user_ns); EPERM with no
  // extack otherwise. netdev-genl-gen.c gave bind-rx the first, newer trees the second.
  const uint32_t flags = facts.bind_rx_op_flags.value();
  const std::string container_fix =
      "run the job in the host's user namespace (a container without user-namespace remapping)";
  if ((flags & kGenlAdminPerm) != 0) {
    if (!facts.initial_user_ns) {
      report.Add("privileges", "bind-rx scope", Verdict::kFail,
                 "this kernel's bind-rx needs CAP_NET_ADMIN in the initial user namespace "
                 "(GENL_ADMIN_PERM); this process is in a user namespace, so it gets EPERM",
                 container_fix);
    } else {
      report.Add("privileges", "bind-rx scope", admin ? Verdict::kPass : Verdict::kFail,
                 "GENL_ADMIN_PERM: CAP_NET_ADMIN in the initial user namespace", "run as root");
    }
  } else if ((flags & kGenlUnsAdminPerm) != 0) {
    if (facts.netns_owned_here == false && !facts.initial_user_ns) {
      report.Add("privileges", "bind-rx scope", Verdict::kFail,
                 "this kernel's bind-rx needs CAP_NET_ADMIN in the user namespace that owns the "
                 "network namespace (GENL_UNS_ADMIN_PERM), and another one owns it: EPERM",
                 container_fix + ", or give the container its own network namespace");
    } else {
      report.Add("privileges", "bind-rx scope", admin ? Verdict::kPass : Verdict::kFail,
                 "GENL_UNS_ADMIN_PERM: CAP_NET_ADMIN in the network namespace's owner",
                 "run as root");
    }
  } else {
    report.Add("privileges", "bind-rx scope", Verdict::kPass, "no privilege flag on bind-rx");
  }
  return report;
}

}  // namespace devmem
