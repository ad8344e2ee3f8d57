#include "plugin/devmem/nic_ethtool.h"

#include <linux/ethtool.h>
#include <linux/ethtool_netlink.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netlink/attr.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>

#include "plugin/core/log.h"
#include "plugin/core/unique_fd.h"
#include "plugin/devmem/flow_rule_location.h"
#include "plugin/devmem/netdev_netlink.h"

namespace devmem {
namespace {

// Newer than Debian 12's uapi headers (Linux 6.13+); numbers from the kernel's enum order.
constexpr int kRingsHdsThresh = 17;  // ETHTOOL_A_RINGS_HDS_THRESH
constexpr int kRingsAttrMax = 18;

Status IoctlError(int err, const std::string& ifname, const char* what) {
  if (err == EOPNOTSUPP) {
    return Status::Error(ErrorKind::kSystem, "%s on %s: not supported by driver (EOPNOTSUPP)", what,
                         ifname.c_str());
  }
  return Status::Errno(err, "%s on %s", what, ifname.c_str());
}

// Runs one SIOCETHTOOL command with `data` as ifr_data. `failed_errno`, when given, receives the
// ioctl's errno (0 when it succeeded or never ran).
Status EthtoolIoctl(const std::string& ifname, void* data, const char* what,
                    int* failed_errno = nullptr) {
  if (failed_errno != nullptr) *failed_errno = 0;
  UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Status::Errno(errno, "socket for %s", what);
  ifreq ifr{};
  if (ifname.size() >= sizeof(ifr.ifr_name)) {
    return Status::Error(ErrorKind::kInvalidArgument, "interface name %s too long", ifname.c_str());
  }
  memcpy(ifr.ifr_name, ifname.c_str(), ifname.size());
  ifr.ifr_data = static_cast<char*>(data);
  if (ioctl(fd.get(), SIOCETHTOOL, &ifr) != 0) {
    const int err = errno;
    if (failed_errno != nullptr) *failed_errno = err;
    return IoctlError(err, ifname, what);
  }
  return Status::Ok();
}

struct RingsReply {
  RingSettings settings;
  int error = 0;
  bool got = false;
};

int OnRingsValid(nl_msg* msg, void* arg) {
  auto* reply = static_cast<RingsReply*>(arg);
  nlattr* tb[kRingsAttrMax + 1] = {};
  if (genlmsg_parse(nlmsg_hdr(msg), 0, tb, kRingsAttrMax, nullptr) < 0) return NL_SKIP;
  reply->got = true;
  if (tb[ETHTOOL_A_RINGS_RX] != nullptr)
    reply->settings.rx_ring = nla_get_u32(tb[ETHTOOL_A_RINGS_RX]);
  if (tb[ETHTOOL_A_RINGS_TCP_DATA_SPLIT] != nullptr) {
    reply->settings.tcp_data_split = nla_get_u8(tb[ETHTOOL_A_RINGS_TCP_DATA_SPLIT]);
  }
  if (tb[kRingsHdsThresh] != nullptr) reply->settings.hds_thresh = nla_get_u32(tb[kRingsHdsThresh]);
  if (tb[ETHTOOL_A_RINGS_RX_BUF_LEN] != nullptr) {
    reply->settings.rx_buf_len = nla_get_u32(tb[ETHTOOL_A_RINGS_RX_BUF_LEN]);
  }
  return NL_OK;
}

int OnRingsError(sockaddr_nl* /*who*/, nlmsgerr* err, void* arg) {
  static_cast<RingsReply*>(arg)->error = err->error;
  return NL_STOP;
}

int OnRingsDone(nl_msg* /*msg*/, void* /*arg*/) { return NL_STOP; }

}  // namespace

Result<RingSettings> QueryRings(int ifindex) {
  NlSocket sock(nl_socket_alloc());
  if (!sock) return Status::Error(ErrorKind::kSystem, "nl_socket_alloc failed");
  if (int err = genl_connect(sock.get()); err < 0) {
    return Status::Error(ErrorKind::kSystem, "connecting generic netlink: %s", nl_geterror(err));
  }
  const int family = genl_ctrl_resolve(sock.get(), ETHTOOL_GENL_NAME);
  if (family < 0) {
    return Status::Error(ErrorKind::kSystem, "no \"ethtool\" generic netlink family: %s",
                         nl_geterror(family));
  }
  std::unique_ptr<nl_msg, void (*)(nl_msg*)> msg(nlmsg_alloc(), nlmsg_free);
  genlmsg_put(msg.get(), NL_AUTO_PORT, NL_AUTO_SEQ, family, 0, NLM_F_REQUEST | NLM_F_ACK,
              ETHTOOL_MSG_RINGS_GET, ETHTOOL_GENL_VERSION);
  nlattr* header = nla_nest_start(msg.get(), NLA_F_NESTED | ETHTOOL_A_RINGS_HEADER);
  nla_put_u32(msg.get(), ETHTOOL_A_HEADER_DEV_INDEX, static_cast<uint32_t>(ifindex));
  nla_nest_end(msg.get(), header);
  RingsReply reply;
  std::unique_ptr<nl_cb, void (*)(nl_cb*)> cb(nl_cb_alloc(NL_CB_DEFAULT), nl_cb_put);
  nl_cb_err(cb.get(), NL_CB_CUSTOM, OnRingsError, &reply);
  nl_cb_set(cb.get(), NL_CB_VALID, NL_CB_CUSTOM, OnRingsValid, &reply);
  nl_cb_set(cb.get(), NL_CB_ACK, NL_CB_CUSTOM, OnRingsDone, &reply);
  if (int err = nl_send_auto(sock.get(), msg.get()); err < 0) {
    return Status::Error(ErrorKind::kSystem, "ethtool rings-get: sending: %s", nl_geterror(err));
  }
  nl_recvmsgs(sock.get(), cb.get());
  if (reply.error == -EOPNOTSUPP) {
    return Status::Error(ErrorKind::kSystem,
                         "ethtool rings-get on ifindex %d: not supported by driver (EOPNOTSUPP)",
                         ifindex);
  }
  if (reply.error != 0)
    return Status::Errno(-reply.error, "ethtool rings-get on ifindex %d", ifindex);
  if (!reply.got) return Status::Error(ErrorKind::kSystem, "ethtool rings-get: no reply");
  return reply.settings;
}

Result<std::string> QueryDriver(const std::string& ifname) {
  ethtool_drvinfo info{};
  info.cmd = ETHTOOL_GDRVINFO;
  DEVMEM_RETURN_IF_ERROR(EthtoolIoctl(ifname, &info, "ETHTOOL_GDRVINFO"));
  return std::string(info.driver, strnlen(info.driver, sizeof(info.driver)));
}

Result<bool> QueryNtupleEnabled(const std::string& ifname) {
  ethtool_value value{};
  value.cmd = ETHTOOL_GFLAGS;
  DEVMEM_RETURN_IF_ERROR(EthtoolIoctl(ifname, &value, "ETHTOOL_GFLAGS"));
  return (value.data & ETH_FLAG_NTUPLE) != 0;
}

Result<std::vector<uint32_t>> QueryRssIndirection(const std::string& ifname) {
  ethtool_rxfh_indir probe{};
  probe.cmd = ETHTOOL_GRXFHINDIR;
  probe.size = 0;
  DEVMEM_RETURN_IF_ERROR(EthtoolIoctl(ifname, &probe, "ETHTOOL_GRXFHINDIR"));
  std::vector<uint8_t> buffer(sizeof(ethtool_rxfh_indir) + probe.size * sizeof(uint32_t));
  auto* table = reinterpret_cast<ethtool_rxfh_indir*>(buffer.data());
  table->cmd = ETHTOOL_GRXFHINDIR;
  table->size = probe.size;
  DEVMEM_RETURN_IF_ERROR(EthtoolIoctl(ifname, table, "ETHTOOL_GRXFHINDIR"));
  return std::vector<uint32_t>(table->ring_index, table->ring_index + table->size);
}

Result<FlowRuleTable> QueryFlowRuleTable(const std::string& ifname) {
  // A rank tearing down a connection deletes its rule without the lock (a delete only frees a
  // slot), so the count can drop between the two ioctls. mlx5 then fails GRXCLSRLALL with EINVAL
  // (mlx5e_ethtool_get_all_flows walks past the table looking for the missing rule) and other
  // drivers refuse a too-small buffer with EMSGSIZE: read both again.
  constexpr int kAttempts = 5;
  constexpr uint32_t kMaxRules = 1u << 20;  // far above any NIC's table; bounds the buffer
  for (int attempt = 1;; ++attempt) {
    ethtool_rxnfc count{};
    count.cmd = ETHTOOL_GRXCLSRLCNT;
    DEVMEM_RETURN_IF_ERROR(EthtoolIoctl(ifname, &count, "ETHTOOL_GRXCLSRLCNT (flow rule count)"));
    FlowRuleTable table;
    // uapi ethtool.h: GRXCLSRLCNT's data, when non-zero, is the table size plus the flag
    // RX_CLS_LOC_SPECIAL if the driver takes special locations (bnxt: max_fltr | the flag; mlx5
    // leaves it 0). ethtool's rmgr_init then skips reading the table.
    const uint64_t count_size = count.data & ~static_cast<uint64_t>(RX_CLS_LOC_SPECIAL);
    table.size = static_cast<uint32_t>(std::min<uint64_t>(count_size, UINT32_MAX));
    if ((count.data & RX_CLS_LOC_SPECIAL) != 0) {
      table.driver_selects = true;
      return table;
    }
    const uint32_t rule_cnt = count.rule_cnt;
    if (rule_cnt > kMaxRules) {
      return Status::Error(ErrorKind::kSystem,
                           "ETHTOOL_GRXCLSRLCNT (flow rule count) on %s: implausible %u rules",
                           ifname.c_str(), rule_cnt);
    }
    // ethtool_rxnfc followed by rule_cnt locations; uint64_t keeps the struct's alignment.
    std::vector<uint64_t> buffer(
        (sizeof(ethtool_rxnfc) + rule_cnt * sizeof(uint32_t) + sizeof(uint64_t) - 1) /
        sizeof(uint64_t));
    auto* all = reinterpret_cast<ethtool_rxnfc*>(buffer.data());
    all->cmd = ETHTOOL_GRXCLSRLALL;
    all->rule_cnt = rule_cnt;
    int err = 0;
    Status status = EthtoolIoctl(ifname, all, "ETHTOOL_GRXCLSRLALL (flow rule locations)", &err);
    if (!status.ok()) {
      if ((err == EINVAL || err == EMSGSIZE) && attempt < kAttempts) continue;
      return status;
    }
    // GRXCLSRLALL's data is the table size (ethtool's rmgr_init reads it from here; mlx5 sets
    // MAX_NUM_OF_ETHTOOL_RULES only here).
    if (all->data != 0) {
      table.size = static_cast<uint32_t>(std::min<uint64_t>(all->data, UINT32_MAX));
    }
    // mlx5 leaves rule_cnt as given; others set it to the rules they reported.
    const uint32_t reported = std::min(all->rule_cnt, rule_cnt);
    table.used.assign(all->rule_locs, all->rule_locs + reported);
    return table;
  }
}

namespace {

// Chooses the location and inserts `rule` there, under the host-wide lock; returns where the
// rule went. The lock is released on return: it guards the choice, not the rule's lifetime.
Result<uint32_t> InsertWithChosenLocation(const std::string& ifname, ethtool_rxnfc* rule,
                                          const FlowRuleLockOptions& locking) {
  Result<FlowRuleLock> lock = FlowRuleLock::Acquire(ifname, locking);
  if (!lock.ok()) return lock.status();
  Result<FlowRuleTable> table = QueryFlowRuleTable(ifname);
  if (!table.ok()) return table.status();
  Result<uint32_t> location = ChooseRuleLocation(table->size, table->driver_selects, table->used);
  if (!location.ok()) {
    return location.status().WithContext("choosing a flow rule location on " + ifname);
  }
  rule->cmd = ETHTOOL_SRXCLSRLINS;
  rule->fs.location = location.value();
  const std::string what =
      location.value() == kRuleLocationAny
          ? std::string("ETHTOOL_SRXCLSRLINS (flow steering rule, location chosen by driver)")
          : Format("ETHTOOL_SRXCLSRLINS (flow steering rule at location %u of %u)",
                   location.value(), table->size);
  DEVMEM_RETURN_IF_ERROR(EthtoolIoctl(ifname, rule, what.c_str()));
  // The kernel copies the rule back: fs.location is where the driver put it.
  return rule->fs.location;
}

}  // namespace

Result<FlowSteeringRule> FlowSteeringRule::Install(const std::string& ifname,
                                                   const SocketAddress& local,
                                                   const SocketAddress& remote, uint32_t queue) {
  return Install(ifname, local, remote, queue, FlowRuleLockOptions{});
}

Result<FlowSteeringRule> FlowSteeringRule::Install(const std::string& ifname,
                                                   const SocketAddress& local,
                                                   const SocketAddress& remote, uint32_t queue,
                                                   const FlowRuleLockOptions& locking) {
  if (local.family() != remote.family()) {
    return Status::Error(ErrorKind::kInvalidArgument, "flow rule with mixed address families");
  }
  ethtool_rxnfc rule{};
  rule.fs.ring_cookie = queue;
  // Match the flow as the NIC sees it arriving: source = the peer, destination = us.
  if (local.family() == AF_INET) {
    auto* l = reinterpret_cast<const sockaddr_in*>(local.get());
    auto* r = reinterpret_cast<const sockaddr_in*>(remote.get());
    rule.fs.flow_type = TCP_V4_FLOW;
    rule.fs.h_u.tcp_ip4_spec.ip4src = r->sin_addr.s_addr;
    rule.fs.h_u.tcp_ip4_spec.ip4dst = l->sin_addr.s_addr;
    rule.fs.h_u.tcp_ip4_spec.psrc = r->sin_port;
    rule.fs.h_u.tcp_ip4_spec.pdst = l->sin_port;
    memset(&rule.fs.m_u.tcp_ip4_spec.ip4src, 0xff, 4);
    memset(&rule.fs.m_u.tcp_ip4_spec.ip4dst, 0xff, 4);
    rule.fs.m_u.tcp_ip4_spec.psrc = 0xffff;
    rule.fs.m_u.tcp_ip4_spec.pdst = 0xffff;
  } else {
    auto* l = reinterpret_cast<const sockaddr_in6*>(local.get());
    auto* r = reinterpret_cast<const sockaddr_in6*>(remote.get());
    rule.fs.flow_type = TCP_V6_FLOW;
    memcpy(rule.fs.h_u.tcp_ip6_spec.ip6src, &r->sin6_addr, 16);
    memcpy(rule.fs.h_u.tcp_ip6_spec.ip6dst, &l->sin6_addr, 16);
    rule.fs.h_u.tcp_ip6_spec.psrc = r->sin6_port;
    rule.fs.h_u.tcp_ip6_spec.pdst = l->sin6_port;
    memset(rule.fs.m_u.tcp_ip6_spec.ip6src, 0xff, 16);
    memset(rule.fs.m_u.tcp_ip6_spec.ip6dst, 0xff, 16);
    rule.fs.m_u.tcp_ip6_spec.psrc = 0xffff;
    rule.fs.m_u.tcp_ip6_spec.pdst = 0xffff;
  }
  const std::string steering = Format("steering %s -> %s to RX queue %u", remote.ToString().c_str(),
                                      local.ToString().c_str(), queue);
  Result<uint32_t> location = InsertWithChosenLocation(ifname, &rule, locking);
  if (!location.ok()) return location.status().WithContext(steering);
  log::Info(log::kNet, "flow rule %u on %s: %s", location.value(), ifname.c_str(),
            steering.c_str());
  return FlowSteeringRule(ifname, location.value());
}

FlowSteeringRule::FlowSteeringRule(FlowSteeringRule&& other) noexcept
    : ifname_(std::move(other.ifname_)), location_(other.location_), armed_(other.armed_) {
  other.armed_ = false;
}

FlowSteeringRule::~FlowSteeringRule() {
  if (!armed_) return;
  ethtool_rxnfc rule{};
  rule.cmd = ETHTOOL_SRXCLSRLDEL;
  rule.fs.location = location_;
  Status status = EthtoolIoctl(ifname_, &rule, "ETHTOOL_SRXCLSRLDEL");
  if (!status.ok()) {
    log::Warn("removing flow steering rule %u on %s: %s", location_, ifname_.c_str(),
              status.message().c_str());
  }
}

}  // namespace devmem
