#include "plugin/devmem/nic_ethtool.h"

#include <arpa/inet.h>
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

// Runs one SIOCETHTOOL command with `data` as ifr_data. `failed_errno`, when given, receives the
// ioctl's errno (0 when it succeeded or never ran).
Status EthtoolIoctl(const std::string& ifname, void* data, const char* what, int* failed_errno) {
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

FlowMatch MatchConnection(const SocketAddress& local, const SocketAddress& remote, uint32_t queue,
                          FlowScope scope) {
  FlowMatch match;
  match.family = local.family();
  match.queue = queue;
  match.match_src_addr = scope == FlowScope::kExact;
  if (local.family() == AF_INET) {
    auto* l = reinterpret_cast<const sockaddr_in*>(local.get());
    auto* r = reinterpret_cast<const sockaddr_in*>(remote.get());
    memcpy(match.src.data(), &r->sin_addr, 4);
    memcpy(match.dst.data(), &l->sin_addr, 4);
    match.src_port = ntohs(r->sin_port);
    match.dst_port = ntohs(l->sin_port);
  } else {
    auto* l = reinterpret_cast<const sockaddr_in6*>(local.get());
    auto* r = reinterpret_cast<const sockaddr_in6*>(remote.get());
    memcpy(match.src.data(), &r->sin6_addr, 16);
    memcpy(match.dst.data(), &l->sin6_addr, 16);
    match.src_port = ntohs(r->sin6_port);
    match.dst_port = ntohs(l->sin6_port);
  }
  if (!match.match_src_addr) match.src = {};
  return match;
}

std::string FlowMatch::ToString() const {
  char src_text[INET6_ADDRSTRLEN] = "*";
  char dst_text[INET6_ADDRSTRLEN] = "?";
  if (match_src_addr) inet_ntop(family, src.data(), src_text, sizeof(src_text));
  inet_ntop(family, dst.data(), dst_text, sizeof(dst_text));
  const bool v6 = family == AF_INET6;
  return Format("%s%s%s:%u -> %s%s%s:%u to RX queue %u", v6 && match_src_addr ? "[" : "", src_text,
                v6 && match_src_addr ? "]" : "", src_port, v6 ? "[" : "", dst_text, v6 ? "]" : "",
                dst_port, queue);
}

void ToFlowSpec(const FlowMatch& match, ethtool_rx_flow_spec* spec) {
  *spec = ethtool_rx_flow_spec{};
  spec->ring_cookie = match.queue;
  // uapi ethtool.h: a set mask bit means "compare this bit"; a zero mask is a wildcard.
  if (match.family == AF_INET) {
    spec->flow_type = TCP_V4_FLOW;
    ethtool_tcpip4_spec& h = spec->h_u.tcp_ip4_spec;
    ethtool_tcpip4_spec& m = spec->m_u.tcp_ip4_spec;
    memcpy(&h.ip4dst, match.dst.data(), 4);
    m.ip4dst = 0xffffffffu;
    if (match.match_src_addr) {
      memcpy(&h.ip4src, match.src.data(), 4);
      m.ip4src = 0xffffffffu;
    }
    h.psrc = htons(match.src_port);
    h.pdst = htons(match.dst_port);
    m.psrc = 0xffff;
    m.pdst = 0xffff;
  } else {
    spec->flow_type = TCP_V6_FLOW;
    ethtool_tcpip6_spec& h = spec->h_u.tcp_ip6_spec;
    ethtool_tcpip6_spec& m = spec->m_u.tcp_ip6_spec;
    memcpy(h.ip6dst, match.dst.data(), 16);
    memset(m.ip6dst, 0xff, 16);
    if (match.match_src_addr) {
      memcpy(h.ip6src, match.src.data(), 16);
      memset(m.ip6src, 0xff, 16);
    }
    h.psrc = htons(match.src_port);
    h.pdst = htons(match.dst_port);
    m.psrc = 0xffff;
    m.pdst = 0xffff;
  }
}

std::optional<FlowMatch> FromFlowSpec(const ethtool_rx_flow_spec& spec) {
  FlowMatch match;
  match.queue = static_cast<uint32_t>(spec.ring_cookie);
  if (spec.ring_cookie > UINT32_MAX) return std::nullopt;  // RX_CLS_FLOW_DISC, VF bits
  auto all_ones = [](const void* p, size_t n) {
    const auto* bytes = static_cast<const uint8_t*>(p);
    return std::all_of(bytes, bytes + n, [](uint8_t b) { return b == 0xff; });
  };
  auto all_zero = [](const void* p, size_t n) {
    const auto* bytes = static_cast<const uint8_t*>(p);
    return std::all_of(bytes, bytes + n, [](uint8_t b) { return b == 0; });
  };
  if (spec.flow_type == TCP_V4_FLOW) {
    const ethtool_tcpip4_spec& h = spec.h_u.tcp_ip4_spec;
    const ethtool_tcpip4_spec& m = spec.m_u.tcp_ip4_spec;
    if (!all_ones(&m.ip4dst, 4) || m.psrc != 0xffff || m.pdst != 0xffff || m.tos != 0) {
      return std::nullopt;
    }
    match.family = AF_INET;
    match.match_src_addr = all_ones(&m.ip4src, 4);
    if (!match.match_src_addr && !all_zero(&m.ip4src, 4)) return std::nullopt;
    if (match.match_src_addr) memcpy(match.src.data(), &h.ip4src, 4);
    memcpy(match.dst.data(), &h.ip4dst, 4);
    match.src_port = ntohs(h.psrc);
    match.dst_port = ntohs(h.pdst);
  } else if (spec.flow_type == TCP_V6_FLOW) {
    const ethtool_tcpip6_spec& h = spec.h_u.tcp_ip6_spec;
    const ethtool_tcpip6_spec& m = spec.m_u.tcp_ip6_spec;
    if (!all_ones(m.ip6dst, 16) || m.psrc != 0xffff || m.pdst != 0xffff || m.tclass != 0) {
      return std::nullopt;
    }
    match.family = AF_INET6;
    match.match_src_addr = all_ones(m.ip6src, 16);
    if (!match.match_src_addr && !all_zero(m.ip6src, 16)) return std::nullopt;
    if (match.match_src_addr) memcpy(match.src.data(), h.ip6src, 16);
    memcpy(match.dst.data(), h.ip6dst, 16);
    match.src_port = ntohs(h.psrc);
    match.dst_port = ntohs(h.pdst);
  } else {
    return std::nullopt;
  }
  return match;
}

Result<FlowRuleTable> EthtoolNtupleTable::Query() { return QueryFlowRuleTable(ifname_); }

Result<uint32_t> EthtoolNtupleTable::Insert(const FlowMatch& match, uint32_t location,
                                            int* failed_errno) {
  ethtool_rxnfc rule{};
  ToFlowSpec(match, &rule.fs);
  rule.cmd = ETHTOOL_SRXCLSRLINS;
  rule.fs.location = location;
  const std::string what =
      location == kRuleLocationAny
          ? std::string("ETHTOOL_SRXCLSRLINS (flow steering rule, location chosen by driver)")
          : Format("ETHTOOL_SRXCLSRLINS (flow steering rule at location %u)", location);
  DEVMEM_RETURN_IF_ERROR(EthtoolIoctl(ifname_, &rule, what.c_str(), failed_errno));
  // The kernel copies the rule back: fs.location is where the driver put it.
  return rule.fs.location;
}

Result<std::optional<FlowMatch>> EthtoolNtupleTable::Read(uint32_t location) {
  ethtool_rxnfc rule{};
  rule.cmd = ETHTOOL_GRXCLSRULE;
  rule.fs.location = location;
  int err = 0;
  Status status = EthtoolIoctl(ifname_, &rule, "ETHTOOL_GRXCLSRULE (read a flow rule)", &err);
  // An empty location: -ENOENT from mlx5, gve and bnxt, -EINVAL from fbnic
  // (fbnic_get_cls_rule: "act_tcam->state != FBNIC_TCAM_S_VALID").
  if (err == ENOENT || err == EINVAL) return std::optional<FlowMatch>();
  if (!status.ok()) return status;
  return FromFlowSpec(rule.fs);
}

Status EthtoolNtupleTable::Remove(uint32_t location) {
  ethtool_rxnfc rule{};
  rule.cmd = ETHTOOL_SRXCLSRLDEL;
  rule.fs.location = location;
  return EthtoolIoctl(ifname_, &rule,
                      Format("ETHTOOL_SRXCLSRLDEL (location %u)", location).c_str());
}

}  // namespace devmem
