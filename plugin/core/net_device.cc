#include "plugin/core/net_device.h"

#include <limits.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <stdlib.h>

#include <fstream>
#include <memory>

#include "plugin/core/log.h"

namespace devmem {
namespace {

constexpr int kDefaultSpeedMbps = 10000;

struct NlSockDeleter {
  void operator()(nl_sock* sock) const { nl_socket_free(sock); }
};
struct NlCacheDeleter {
  void operator()(nl_cache* cache) const { nl_cache_free(cache); }
};
using NlSock = std::unique_ptr<nl_sock, NlSockDeleter>;
using NlCache = std::unique_ptr<nl_cache, NlCacheDeleter>;

Status NlError(int err, const char* step) {
  return Status::Error(ErrorKind::kSystem, "%s: %s (libnl error %d)", step, nl_geterror(err), err);
}

// Picks the address to listen on: the requested family, else IPv4 first, then a routable IPv6.
const SocketAddress* PickAddress(const InterfaceInfo& info, int family) {
  for (int want : {AF_INET, AF_INET6}) {
    if (family != 0 && want != family) continue;
    for (const SocketAddress& address : info.addresses) {
      if (address.family() == want && !address.is_link_local()) return &address;
    }
  }
  return nullptr;
}

}  // namespace

IfnameFilter::IfnameFilter(const std::string& spec) {
  size_t pos = 0;
  if (pos < spec.size() && spec[pos] == '^') {
    exclude_ = true;
    ++pos;
  }
  if (pos < spec.size() && spec[pos] == '=') {
    exact_ = true;
    ++pos;
  }
  while (pos <= spec.size()) {
    size_t comma = spec.find(',', pos);
    if (comma == std::string::npos) comma = spec.size();
    std::string name = spec.substr(pos, comma - pos);
    // NCCL allows "eth0:port"; the port part does not name an interface.
    if (size_t colon = name.find(':'); colon != std::string::npos) name.resize(colon);
    if (!name.empty()) names_.push_back(name);
    pos = comma + 1;
  }
}

bool IfnameFilter::Matches(const std::string& ifname) const {
  if (names_.empty()) return true;
  bool listed = false;
  for (const std::string& name : names_) {
    if (exact_ ? ifname == name : ifname.compare(0, name.size(), name) == 0) {
      listed = true;
      break;
    }
  }
  return exclude_ ? !listed : listed;
}

Result<std::vector<InterfaceInfo>> ListInterfaces() {
  NlSock sock(nl_socket_alloc());
  if (!sock) return Status::Error(ErrorKind::kSystem, "nl_socket_alloc failed");
  if (int err = nl_connect(sock.get(), NETLINK_ROUTE); err < 0) {
    return NlError(err, "connecting to rtnetlink");
  }
  nl_cache* raw = nullptr;
  if (int err = rtnl_link_alloc_cache(sock.get(), AF_UNSPEC, &raw); err < 0) {
    return NlError(err, "dumping links (RTM_GETLINK)");
  }
  NlCache links(raw);
  raw = nullptr;
  if (int err = rtnl_addr_alloc_cache(sock.get(), &raw); err < 0) {
    return NlError(err, "dumping addresses (RTM_GETADDR)");
  }
  NlCache addrs(raw);

  std::vector<InterfaceInfo> out;
  for (nl_object* obj = nl_cache_get_first(links.get()); obj != nullptr;
       obj = nl_cache_get_next(obj)) {
    auto* link = reinterpret_cast<rtnl_link*>(obj);
    InterfaceInfo info;
    const char* name = rtnl_link_get_name(link);
    info.name = name != nullptr ? name : "";
    info.ifindex = rtnl_link_get_ifindex(link);
    const unsigned flags = rtnl_link_get_flags(link);
    info.up = (flags & IFF_UP) != 0;
    info.loopback = (flags & IFF_LOOPBACK) != 0;
    out.push_back(std::move(info));
  }
  for (nl_object* obj = nl_cache_get_first(addrs.get()); obj != nullptr;
       obj = nl_cache_get_next(obj)) {
    auto* addr = reinterpret_cast<rtnl_addr*>(obj);
    nl_addr* local = rtnl_addr_get_local(addr);
    if (local == nullptr) continue;
    sockaddr_storage storage{};
    socklen_t len = sizeof(storage);
    if (nl_addr_fill_sockaddr(local, reinterpret_cast<sockaddr*>(&storage), &len) < 0) continue;
    Result<SocketAddress> address =
        SocketAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&storage), len);
    if (!address.ok()) continue;
    const int ifindex = rtnl_addr_get_ifindex(addr);
    for (InterfaceInfo& info : out) {
      if (info.ifindex == ifindex) info.addresses.push_back(address.value());
    }
  }
  return out;
}

std::vector<NetDevice> SelectDevices(const std::vector<InterfaceInfo>& interfaces,
                                     const std::string& ifname_spec, int family) {
  const IfnameFilter filter(ifname_spec);
  std::vector<NetDevice> selected;
  std::vector<NetDevice> loopbacks;
  for (const InterfaceInfo& info : interfaces) {
    if (!info.up || !filter.Matches(info.name)) continue;
    const SocketAddress* address = PickAddress(info, family);
    if (address == nullptr) continue;
    NetDevice device;
    device.name = info.name;
    device.ifindex = info.ifindex;
    device.address = *address;
    device.loopback = info.loopback;
    if (info.loopback && filter.empty()) {
      loopbacks.push_back(std::move(device));
    } else {
      selected.push_back(std::move(device));
    }
  }
  if (selected.empty()) return loopbacks;
  return selected;
}

std::string DescribeUnselected(const std::vector<InterfaceInfo>& interfaces,
                               const std::string& ifname_spec, int family) {
  const IfnameFilter filter(ifname_spec);
  const char* wanted = family == AF_INET ? "IPv4" : (family == AF_INET6 ? "IPv6" : "IP");
  std::string out;
  for (const InterfaceInfo& info : interfaces) {
    std::string why;
    if (!filter.Matches(info.name)) {
      why = "not matched by NCCL_SOCKET_IFNAME";
    } else if (!info.up) {
      why = "down";
    } else if (PickAddress(info, family) == nullptr) {
      why = std::string("no ") + wanted + " address other than link-local";
    } else {
      why = "usable";
    }
    if (!out.empty()) out += ", ";
    out += info.name;
    out += " (";
    out += why;
    out += ")";
  }
  return out.empty() ? std::string("none") : out;
}

void DescribeFromSysfs(NetDevice* device, const std::string& sysfs_root) {
  const std::string base = sysfs_root + "/" + device->name;
  char resolved[PATH_MAX];
  if (realpath((base + "/device").c_str(), resolved) != nullptr) device->pci_path = resolved;
  int speed = -1;
  std::ifstream speed_file(base + "/speed");
  if (speed_file >> speed && speed > 0) {
    device->speed_mbps = speed;
    device->speed_from_driver = true;
  } else {
    device->speed_mbps = kDefaultSpeedMbps;
    log::Info(log::kInit, "%s: link speed unknown (%s/speed unreadable or %d); reporting %d Mb/s",
              device->name.c_str(), base.c_str(), speed, kDefaultSpeedMbps);
  }
}

Result<std::vector<NetDevice>> DiscoverDevices(const std::string& ifname_spec, int family) {
  Result<std::vector<InterfaceInfo>> interfaces = ListInterfaces();
  if (!interfaces.ok()) return interfaces.status().WithContext("discovering NICs");
  std::vector<NetDevice> devices = SelectDevices(interfaces.value(), ifname_spec, family);
  if (devices.empty()) {
    // Name what exists: a typo in NCCL_SOCKET_IFNAME is the commonest cause.
    const std::string seen = DescribeUnselected(interfaces.value(), ifname_spec, family);
    return Status::Error(
        ErrorKind::kSystem,
        "no usable network interface (up, with an %s address%s%s); this host has: %s",
        family == AF_INET ? "IPv4" : (family == AF_INET6 ? "IPv6" : "IP"),
        ifname_spec.empty() ? "" : ", matching NCCL_SOCKET_IFNAME=", ifname_spec.c_str(),
        seen.c_str());
  }
  for (NetDevice& device : devices) DescribeFromSysfs(&device);
  return devices;
}

Result<int> RouteOutputInterface(const SocketAddress& destination, const SocketAddress* source) {
  const int family = destination.family();
  const void* address = nullptr;
  int address_bytes = 0;
  if (family == AF_INET) {
    address = &reinterpret_cast<const sockaddr_in*>(destination.get())->sin_addr;
    address_bytes = 4;
  } else if (family == AF_INET6) {
    address = &reinterpret_cast<const sockaddr_in6*>(destination.get())->sin6_addr;
    address_bytes = 16;
  } else {
    return Status::Error(ErrorKind::kInvalidArgument, "route lookup: address family %d", family);
  }
  NlSock sock(nl_socket_alloc());
  if (!sock) return Status::Error(ErrorKind::kSystem, "nl_socket_alloc failed");
  if (int err = nl_connect(sock.get(), NETLINK_ROUTE); err < 0) {
    return NlError(err, "connecting to rtnetlink for a route lookup");
  }
  std::unique_ptr<nl_msg, void (*)(nl_msg*)> msg(nlmsg_alloc_simple(RTM_GETROUTE, 0), nlmsg_free);
  if (!msg) return Status::Error(ErrorKind::kSystem, "nlmsg_alloc_simple failed");
  if (source != nullptr && source->family() != family) {
    return Status::Error(ErrorKind::kInvalidArgument, "route lookup from %s to %s: families differ",
                         source->ToString().c_str(), destination.ToString().c_str());
  }
  rtmsg header{};
  header.rtm_family = static_cast<unsigned char>(family);
  header.rtm_dst_len = static_cast<unsigned char>(address_bytes * 8);
  if (source != nullptr) header.rtm_src_len = static_cast<unsigned char>(address_bytes * 8);
  const void* source_address =
      source == nullptr ? nullptr
      : family == AF_INET
          ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(source->get())->sin_addr)
          : static_cast<const void*>(
                &reinterpret_cast<const sockaddr_in6*>(source->get())->sin6_addr);
  if (nlmsg_append(msg.get(), &header, sizeof(header), NLMSG_ALIGNTO) < 0 ||
      nla_put(msg.get(), RTA_DST, address_bytes, address) < 0 ||
      (source_address != nullptr && nla_put(msg.get(), RTA_SRC, address_bytes, source_address) < 0)) {
    return Status::Error(ErrorKind::kSystem, "building the RTM_GETROUTE request");
  }
  if (int err = nl_send_auto(sock.get(), msg.get()); err < 0) {
    return NlError(err, "sending RTM_GETROUTE");
  }
  struct Reply {
    int oif = 0;
  } reply;
  auto on_valid = [](nl_msg* m, void* arg) -> int {
    nlattr* attrs[RTA_MAX + 1] = {};
    if (nlmsg_parse(nlmsg_hdr(m), sizeof(rtmsg), attrs, RTA_MAX, nullptr) == 0 &&
        attrs[RTA_OIF] != nullptr) {
      static_cast<Reply*>(arg)->oif = static_cast<int>(nla_get_u32(attrs[RTA_OIF]));
    }
    return NL_OK;
  };
  nl_socket_modify_cb(sock.get(), NL_CB_VALID, NL_CB_CUSTOM, on_valid, &reply);
  if (int err = nl_recvmsgs_default(sock.get()); err < 0) {
    return NlError(err, ("route lookup of " + destination.ToString()).c_str());
  }
  if (reply.oif <= 0) {
    return Status::Error(ErrorKind::kSystem, "the route to %s names no output interface",
                         destination.ToString().c_str());
  }
  return reply.oif;
}

}  // namespace devmem
