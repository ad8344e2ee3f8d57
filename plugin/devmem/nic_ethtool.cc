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

#include <cerrno>
#include <cstring>
#include <memory>

#include "plugin/core/log.h"
#include "plugin/core/unique_fd.h"
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

// Runs one SIOCETHTOOL command with `data` as ifr_data.
Status EthtoolIoctl(const std::string& ifname, void* data, const char* what) {
  UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Status::Errno(errno, "socket for %s", what);
  ifreq ifr{};
  if (ifname.size() >= sizeof(ifr.ifr_name)) {
    return Status::Error(ErrorKind::kInvalidArgument, "interface name %s too long", ifname.c_str());
  }
  memcpy(ifr.ifr_name, ifname.c_str(), ifname.size());
  ifr.ifr_data = static_cast<char*>(data);
  if (ioctl(fd.get(), SIOCETHTOOL, &ifr) != 0) return IoctlError(errno, ifname, what);
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

Result<FlowSteeringRule> FlowSteeringRule::Install(const std::string& ifname,
                                                   const SocketAddress& local,
                                                   const SocketAddress& remote, uint32_t queue) {
  if (local.family() != remote.family()) {
    return Status::Error(ErrorKind::kInvalidArgument, "flow rule with mixed address families");
  }
  ethtool_rxnfc rule{};
  rule.cmd = ETHTOOL_SRXCLSRLINS;
  rule.fs.ring_cookie = queue;
  rule.fs.location = RX_CLS_LOC_ANY;
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
  Status status = EthtoolIoctl(ifname, &rule, "ETHTOOL_SRXCLSRLINS (flow steering rule)");
  if (!status.ok()) {
    return status.WithContext(Format("steering %s -> %s to RX queue %u", remote.ToString().c_str(),
                                     local.ToString().c_str(), queue));
  }
  return FlowSteeringRule(ifname, rule.fs.location);
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
