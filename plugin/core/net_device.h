// The NICs the plugin offers to NCCL: discovered over rtnetlink (libnl-3 route), filtered by
// NCCL_SOCKET_IFNAME / NCCL_SOCKET_FAMILY with NCCL's own matching rules.
#pragma once

#include <string>
#include <vector>

#include "plugin/core/socket_address.h"
#include "plugin/core/status.h"

namespace devmem {

// NCCL_SOCKET_IFNAME: comma-separated prefixes; a leading '^' excludes, a leading '=' (after
// the optional '^') makes the names exact instead of prefixes.
class IfnameFilter {
 public:
  IfnameFilter() = default;  // matches everything
  explicit IfnameFilter(const std::string& spec);
  bool Matches(const std::string& ifname) const;
  bool empty() const { return names_.empty(); }

 private:
  std::vector<std::string> names_;
  bool exclude_ = false;
  bool exact_ = false;
};

struct InterfaceInfo {
  std::string name;
  int ifindex = 0;
  bool up = false;
  bool loopback = false;
  std::vector<SocketAddress> addresses;  // every local address, kernel order
};

struct NetDevice {
  std::string name;
  int ifindex = 0;
  SocketAddress address;  // the address we listen on
  std::string pci_path;   // realpath of /sys/class/net/<name>/device, empty when virtual
  int speed_mbps = 0;
  bool speed_from_driver = false;  // false: the 10 Gb/s default
  bool loopback = false;
};

// Lists interfaces and their addresses from the kernel (RTM_GETLINK / RTM_GETADDR dumps).
Result<std::vector<InterfaceInfo>> ListInterfaces();

// Applies the selection policy to a list of interfaces; pure, so tests can feed it lists.
// Default (empty filter): up, non-loopback interfaces with a usable address; loopback only
// when nothing else qualifies. With a filter: every up interface it matches, loopback included.
std::vector<NetDevice> SelectDevices(const std::vector<InterfaceInfo>& interfaces,
                                     const std::string& ifname_spec, int family);

// Fills pci_path and speed_mbps from sysfs (speed falls back to 10000 Mb/s, logged).
void DescribeFromSysfs(NetDevice* device, const std::string& sysfs_root = "/sys/class/net");

// Every interface with why SelectDevices would not take it ("eth1 (down)", "docker0 (not
// matched by NCCL_SOCKET_IFNAME)"), for the error that no device qualifies.
std::string DescribeUnselected(const std::vector<InterfaceInfo>& interfaces,
                               const std::string& ifname_spec, int family);

// ListInterfaces + SelectDevices + DescribeFromSysfs; an error when no device qualifies, naming
// every interface the host has and why it was not taken.
Result<std::vector<NetDevice>> DiscoverDevices(const std::string& ifname_spec, int family);

// The interface the kernel's routing table sends packets to `destination` out of (RTM_GETROUTE,
// as `ip route get` asks): the ifindex, or why it cannot say. With `source`, the lookup of a
// socket bound to that address (`ip route get <dst> from <src>`: policy rules on the source
// apply).
Result<int> RouteOutputInterface(const SocketAddress& destination,
                                 const SocketAddress* source = nullptr);

}  // namespace devmem
