#include "plugin/transport/source_route.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <mutex>
#include <set>
#include <utility>

namespace devmem {
namespace {

std::string InterfaceName(int ifindex) {
  char name[IF_NAMESIZE] = {};
  if (if_indextoname(static_cast<unsigned>(ifindex), name) == nullptr) {
    return Format("ifindex %d", ifindex);
  }
  return Format("%s (ifindex %d)", name, ifindex);
}

// "10.0.0.1" / "fd00::1": routes are per address, the port says nothing here.
std::string HostText(const SocketAddress& address) {
  char text[INET6_ADDRSTRLEN] = "?";
  const void* host =
      address.family() == AF_INET6
          ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(address.get())->sin6_addr)
          : static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(address.get())->sin_addr);
  inet_ntop(address.family(), host, text, sizeof(text));
  return text;
}

}  // namespace

std::string RouteMismatch(const SocketAddress& from, const SocketAddress& to, int ifindex) {
  Result<int> oif = RouteOutputInterface(to, &from);
  if (!oif.ok()) return oif.status().message();
  if (oif.value() == ifindex) return "";
  return Format("the route from %s to %s leaves through %s, not %s", HostText(from).c_str(),
                HostText(to).c_str(), InterfaceName(oif.value()).c_str(),
                InterfaceName(ifindex).c_str());
}

std::string RouteWarningOnce(const NetDevice& nic, const SocketAddress& to) {
  static std::mutex mutex;
  static std::set<std::pair<int, std::string>> checked;  // (NIC, destination address)
  {  // one check per peer address: listeners come and go on new ports
    std::lock_guard<std::mutex> lock(mutex);
    if (!checked.insert({nic.ifindex, HostText(to)}).second) return "";
  }
  // A peer on this host (at any of its addresses) is reached through lo whichever NIC the
  // connection was made for: no NIC carries it, so nothing leaves through the wrong one.
  Result<int> oif = RouteOutputInterface(to, &nic.address);
  if (oif.ok() && oif.value() == static_cast<int>(if_nametoindex("lo"))) return "";
  const std::string why = RouteMismatch(nic.address, to, nic.ifindex);
  if (why.empty()) return "";
  return Format(
      "connections from NIC %s to %s do not leave through it: %s. Their source stays %s, so the "
      "peer answers to this NIC, but what they send leaves through the other device (two NICs in "
      "one subnet?). Give each NIC its own subnet, or route by source: `ip rule add from %s "
      "table <n>` and `ip route add <subnet> dev %s table <n>`",
      nic.name.c_str(), HostText(to).c_str(), why.c_str(), HostText(nic.address).c_str(),
      HostText(nic.address).c_str(), nic.name.c_str());
}

Status BindSourceAddress(int fd, const NetDevice& nic) {
  SocketAddress from = nic.address;
  from.set_port(0);
  if (bind(fd, from.get(), from.length()) != 0) {
    return Status::Errno(errno, "binding a socket to the address %s of NIC %s",
                         from.ToString().c_str(), nic.name.c_str());
  }
  return Status::Ok();
}

Status BindToDevice(int fd, const NetDevice& nic) {
  if (setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, nic.name.c_str(),
                 static_cast<socklen_t>(nic.name.size())) != 0) {
    return Status::Errno(errno, "SO_BINDTODEVICE %s", nic.name.c_str());
  }
  return Status::Ok();
}

}  // namespace devmem
