#include "plugin/setup/nic_facts.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/ethtool.h>
#include <linux/genetlink.h>
#include <linux/if_link.h>
#include <linux/nsfs.h>
#include <linux/rtnetlink.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netlink/attr.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "plugin/core/unique_fd.h"
#include "plugin/devmem/uapi.h"

namespace devmem {
namespace {

using NlMsgPtr = std::unique_ptr<nl_msg, void (*)(nl_msg*)>;
using NlCbPtr = std::unique_ptr<nl_cb, void (*)(nl_cb*)>;

// One request on a fresh netlink socket of `protocol`; `on_reply` sees every reply message.
// Returns the kernel's error, if any.
Status Ask(int protocol, nl_msg* request, nl_recvmsg_msg_cb_t on_reply, void* arg,
           const char* what) {
  NlSocket sock(nl_socket_alloc());
  if (!sock) return Status::Error(ErrorKind::kSystem, "nl_socket_alloc failed");
  if (int err = nl_connect(sock.get(), protocol); err < 0) {
    return Status::Error(ErrorKind::kSystem, "%s: connecting: %s", what, nl_geterror(err));
  }
  // No ACK: a do-request is answered by exactly one message, its reply or its error.
  nl_socket_disable_auto_ack(sock.get());
  NlCbPtr cb(nl_cb_alloc(NL_CB_DEFAULT), nl_cb_put);
  if (!cb) return Status::Error(ErrorKind::kSystem, "nl_cb_alloc failed");
  nl_cb_set(cb.get(), NL_CB_VALID, NL_CB_CUSTOM, on_reply, arg);
  if (int err = nl_send_auto(sock.get(), request); err < 0) {
    return Status::Error(ErrorKind::kSystem, "%s: sending: %s", what, nl_geterror(err));
  }
  if (int err = nl_recvmsgs(sock.get(), cb.get()); err < 0) {
    // libnl maps the kernel's NLMSG_ERROR to its own codes; the text names the cause.
    return Status::Error(ErrorKind::kSystem, "%s: %s", what, nl_geterror(err));
  }
  return Status::Ok();
}

int OnLink(nl_msg* msg, void* arg) {
  auto* state = static_cast<std::optional<LinkState>*>(arg);
  nlmsghdr* hdr = nlmsg_hdr(msg);
  if (hdr->nlmsg_type != RTM_NEWLINK) return NL_SKIP;
  nlattr* tb[IFLA_MAX + 1] = {};
  if (nlmsg_parse(hdr, sizeof(ifinfomsg), tb, IFLA_MAX, nullptr) < 0) return NL_SKIP;
  LinkState link;
  link.up = (static_cast<ifinfomsg*>(nlmsg_data(hdr))->ifi_flags & IFF_UP) != 0;
  if (tb[IFLA_XDP] != nullptr) {
    nlattr* xdp[IFLA_XDP_MAX + 1] = {};
    if (nla_parse_nested(xdp, IFLA_XDP_MAX, tb[IFLA_XDP], nullptr) == 0) {
      if (xdp[IFLA_XDP_ATTACHED] != nullptr) link.xdp_attached = nla_get_u8(xdp[IFLA_XDP_ATTACHED]);
      if (xdp[IFLA_XDP_PROG_ID] != nullptr) link.xdp_prog_id = nla_get_u32(xdp[IFLA_XDP_PROG_ID]);
    }
  }
  *state = link;
  return NL_OK;
}

Result<LinkState> ReadLink(int ifindex) {
  NlMsgPtr msg(nlmsg_alloc_simple(RTM_GETLINK, NLM_F_REQUEST), nlmsg_free);
  if (!msg) return Status::Error(ErrorKind::kSystem, "nlmsg_alloc failed");
  ifinfomsg request{};
  request.ifi_family = AF_UNSPEC;
  request.ifi_index = ifindex;
  if (nlmsg_append(msg.get(), &request, sizeof(request), NLMSG_ALIGNTO) < 0) {
    return Status::Error(ErrorKind::kSystem, "RTM_GETLINK: message too small");
  }
  std::optional<LinkState> state;
  const std::string what = Format("RTM_GETLINK ifindex %d", ifindex);
  DEVMEM_RETURN_IF_ERROR(Ask(NETLINK_ROUTE, msg.get(), OnLink, &state, what.c_str()));
  if (!state.has_value()) return Status::Error(ErrorKind::kSystem, "%s: no reply", what.c_str());
  return *state;
}

// Feature names are the kernel's netdev_features_strings (net/ethtool/common.c), whose order
// changes between releases: look them up by name, never by bit.
Result<OffloadFeatures> ReadFeatures(const std::string& ifname) {
  // ethtool_sset_info ends in data[]: one u32 per set asked for.
  std::vector<uint64_t> sset_raw((sizeof(ethtool_sset_info) + sizeof(uint32_t) + 7) / 8);
  auto* sset = reinterpret_cast<ethtool_sset_info*>(sset_raw.data());
  sset->cmd = ETHTOOL_GSSET_INFO;
  sset->sset_mask = uint64_t{1} << ETH_SS_FEATURES;
  DEVMEM_RETURN_IF_ERROR(EthtoolIoctl(ifname, sset, "ETHTOOL_GSSET_INFO"));
  if ((sset->sset_mask & (uint64_t{1} << ETH_SS_FEATURES)) == 0) {
    return Status::Error(ErrorKind::kSystem, "ETHTOOL_GSSET_INFO on %s: no feature names",
                         ifname.c_str());
  }
  const uint32_t count = sset->data[0];
  std::vector<uint64_t> strings((sizeof(ethtool_gstrings) + size_t{count} * ETH_GSTRING_LEN + 7) /
                                8);
  auto* names = reinterpret_cast<ethtool_gstrings*>(strings.data());
  names->cmd = ETHTOOL_GSTRINGS;
  names->string_set = ETH_SS_FEATURES;
  names->len = count;
  DEVMEM_RETURN_IF_ERROR(EthtoolIoctl(ifname, names, "ETHTOOL_GSTRINGS"));
  const uint32_t blocks = (count + 31) / 32;
  std::vector<uint64_t> raw(
      (sizeof(ethtool_gfeatures) + size_t{blocks} * sizeof(ethtool_get_features_block) + 7) / 8);
  auto* features = reinterpret_cast<ethtool_gfeatures*>(raw.data());
  features->cmd = ETHTOOL_GFEATURES;
  features->size = blocks;
  DEVMEM_RETURN_IF_ERROR(EthtoolIoctl(ifname, features, "ETHTOOL_GFEATURES"));
  OffloadFeatures out;
  for (uint32_t i = 0; i < count; ++i) {
    const char* name = reinterpret_cast<const char*>(names->data) + size_t{i} * ETH_GSTRING_LEN;
    const std::string feature(name, strnlen(name, ETH_GSTRING_LEN));
    const bool active = (features->features[i / 32].active >> (i % 32) & 1) != 0;
    if (feature == "rx-checksum") out.rx_checksum = active;
    if (feature == "rx-gro-hw") out.rx_gro_hw = active;
    if (feature.rfind("tx-checksum-", 0) == 0 && active) out.tx_checksum = true;
  }
  return out;
}

struct FamilyOps {
  uint32_t wanted_op = 0;
  std::optional<uint32_t> flags;
};

int OnFamily(nl_msg* msg, void* arg) {
  auto* ops = static_cast<FamilyOps*>(arg);
  nlattr* tb[CTRL_ATTR_MAX + 1] = {};
  if (genlmsg_parse(nlmsg_hdr(msg), 0, tb, CTRL_ATTR_MAX, nullptr) < 0) return NL_SKIP;
  if (tb[CTRL_ATTR_OPS] == nullptr) return NL_OK;
  nlattr* op;
  int rem;
  nla_for_each_nested(op, tb[CTRL_ATTR_OPS], rem) {
    nlattr* fields[CTRL_ATTR_OP_MAX + 1] = {};
    if (nla_parse_nested(fields, CTRL_ATTR_OP_MAX, op, nullptr) < 0) continue;
    if (fields[CTRL_ATTR_OP_ID] == nullptr ||
        nla_get_u32(fields[CTRL_ATTR_OP_ID]) != ops->wanted_op) {
      continue;
    }
    ops->flags =
        fields[CTRL_ATTR_OP_FLAGS] != nullptr ? nla_get_u32(fields[CTRL_ATTR_OP_FLAGS]) : 0;
  }
  return NL_OK;
}

// The flags the generic netlink core checks before it runs the netdev family's bind-rx
// (net/netlink/genetlink.c genl_family_rcv_msg_doit's caller: GENL_ADMIN_PERM wants
// CAP_NET_ADMIN in the initial user namespace, GENL_UNS_ADMIN_PERM in the netns owner's).
Result<uint32_t> ReadBindRxOpFlags() {
  NlMsgPtr msg(nlmsg_alloc(), nlmsg_free);
  if (!msg) return Status::Error(ErrorKind::kSystem, "nlmsg_alloc failed");
  genlmsg_put(msg.get(), NL_AUTO_PORT, NL_AUTO_SEQ, GENL_ID_CTRL, 0, NLM_F_REQUEST,
              CTRL_CMD_GETFAMILY, 1);
  nla_put_string(msg.get(), CTRL_ATTR_FAMILY_NAME, uapi::kNetdevFamilyName);
  FamilyOps ops{uapi::kNetdevCmdBindRx, std::nullopt};
  DEVMEM_RETURN_IF_ERROR(
      Ask(NETLINK_GENERIC, msg.get(), OnFamily, &ops, "generic netlink getfamily netdev"));
  if (!ops.flags.has_value()) {
    return Status::Error(ErrorKind::kSystem, "the netdev family has no bind-rx op (Linux < 6.12)");
  }
  return *ops.flags;
}

Result<bool> ReadCapNetAdmin() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &header, data) != 0) return Status::Errno(errno, "capget");
  return (data[CAP_NET_ADMIN / 32].effective & (1u << (CAP_NET_ADMIN % 32))) != 0;
}

// The initial user namespace maps every id onto itself (user_namespaces(7)).
bool InInitialUserNamespace() {
  FILE* map = fopen("/proc/self/uid_map", "re");
  if (map == nullptr) return true;  // no user namespaces in this kernel
  unsigned long inside = 0, outside = 0, count = 0;
  const int fields = fscanf(map, "%lu %lu %lu", &inside, &outside, &count);
  int extra = fgetc(map);
  while (extra == ' ' || extra == '\n') extra = fgetc(map);
  fclose(map);
  return fields == 3 && inside == 0 && outside == 0 && count == 4294967295UL && extra == EOF;
}

std::optional<bool> NetnsOwnedHere() {
  UniqueFd netns(open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!netns.valid()) return std::nullopt;
  UniqueFd owner(ioctl(netns.get(), NS_GET_USERNS));
  struct stat owner_stat {
  }, own_stat{};
  if (!owner.valid() || fstat(owner.get(), &owner_stat) != 0 ||
      stat("/proc/self/ns/user", &own_stat) != 0) {
    return std::nullopt;
  }
  return owner_stat.st_ino == own_stat.st_ino && owner_stat.st_dev == own_stat.st_dev;
}

}  // namespace

NicFacts ReadNicFacts(const NetDevice& device) {
  NicFacts facts;
  facts.driver = QueryDriver(device.name);
  facts.link = ReadLink(device.ifindex);
  Result<NetdevNetlink> netdev = NetdevNetlink::Open();
  facts.rx_queues = netdev.ok() ? netdev->RxQueues(device.ifindex)
                                : Result<std::vector<RxQueueInfo>>(netdev.status());
  facts.rings = QueryRings(device.ifindex);
  facts.features = ReadFeatures(device.name);
  facts.ntuple = QueryNtupleEnabled(device.name);
  facts.rss_indirection = QueryRssIndirection(device.name);
  facts.page_bytes = static_cast<uint32_t>(sysconf(_SC_PAGESIZE));
  return facts;
}

PrivilegeFacts ReadPrivilegeFacts() {
  PrivilegeFacts facts;
  facts.cap_net_admin = ReadCapNetAdmin();
  facts.initial_user_ns = InInitialUserNamespace();
  facts.netns_owned_here = NetnsOwnedHere();
  facts.bind_rx_op_flags = ReadBindRxOpFlags();
  return facts;
}

}  // namespace devmem
