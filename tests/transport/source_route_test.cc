// Two NICs in one subnet (issue 20, item 3): namespace A holds two veths with addresses in the
// same /24, namespace B their peers. The kernel routes A's packets to that subnet out of one of
// them whatever the source address (net/ipv4/route.c ip_route_output_key_hash_rcu: a unicast
// source address does not pick the device; fib_table_lookup takes the first usable connected
// route), so the other NIC's connections would leave through the wrong device. The plugin
// binds every socket of a connection to its NIC's address, WARNs once per path whose route
// leaves elsewhere, and binds devmem TX data sockets to their device (SO_BINDTODEVICE).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "plugin/core/config.h"
#include "plugin/core/log.h"
#include "plugin/core/net_device.h"
#include "plugin/core/unique_fd.h"
#include "plugin/transport/connector.h"
#include "plugin/transport/listen_comm.h"
#include "plugin/transport/source_route.h"
#include "plugin/transport/wire.h"
#include "tests/common/shell.h"
#include "tests/common/captured_log.h"

namespace devmem {
namespace {

using testing::CapturedLog;
using testing::RunCommand;

constexpr char kSubnet[] = "198.18.9.";

// Namespaces A and B, veths a1-b1 and a2-b2; A: .1 and .2, B: .11 and .12, all in one /24.
class TwoNicsOneSubnet {
 public:
  TwoNicsOneSubnet() {
    const std::string id = std::to_string(getpid() % 100000);
    ns_a_ = "dmsA" + id;
    ns_b_ = "dmsB" + id;
    for (int k = 1; k <= 2; ++k) {
      a_.push_back("dsa" + std::to_string(k) + "_" + id);
      b_.push_back("dsb" + std::to_string(k) + "_" + id);
    }
    std::vector<std::string> steps = {"ip netns add " + ns_a_, "ip netns add " + ns_b_};
    for (int k = 0; k < 2; ++k) {
      const std::string a = a_[k], b = b_[k];
      const std::vector<std::string> pair = {
          "ip link add " + a + " type veth peer name " + b,
          "ip link set " + a + " netns " + ns_a_,
          "ip link set " + b + " netns " + ns_b_,
          "ip -n " + ns_a_ + " addr add " + kSubnet + std::to_string(k + 1) + "/24 dev " + a,
          "ip -n " + ns_b_ + " addr add " + kSubnet + std::to_string(k + 11) + "/24 dev " + b,
          "ip -n " + ns_a_ + " link set " + a + " up",
          "ip -n " + ns_b_ + " link set " + b + " up",
      };
      steps.insert(steps.end(), pair.begin(), pair.end());
    }
    for (const std::string& step : steps) {
      std::string output;
      if (RunCommand(step, &output) != 0) {
        error_ = step + ": " + output;
        return;
      }
    }
  }
  ~TwoNicsOneSubnet() {
    RunCommand("ip netns del " + ns_a_);
    RunCommand("ip netns del " + ns_b_);
  }
  const std::string& error() const { return error_; }
  const std::string& ns_a() const { return ns_a_; }
  const std::string& ns_b() const { return ns_b_; }
  const std::string& a(int k) const { return a_[k]; }
  const std::string& b(int k) const { return b_[k]; }

 private:
  std::string ns_a_, ns_b_, error_;
  std::vector<std::string> a_, b_;
};

// Moves the calling thread into a named namespace and back at the end of the scope.
class InNamespace {
 public:
  explicit InNamespace(const std::string& name)
      : home_(open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)) {
    UniqueFd target(open(("/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC));
    ok_ = home_.valid() && target.valid() && setns(target.get(), CLONE_NEWNET) == 0;
  }
  ~InNamespace() {
    if (home_.valid()) setns(home_.get(), CLONE_NEWNET);
  }
  bool ok() const { return ok_; }

 private:
  UniqueFd home_;
  bool ok_ = false;
};

uint64_t Counter(const std::string& ns, const std::string& device, const char* counter) {
  std::string output;
  RunCommand("ip netns exec " + ns + " cat /sys/class/net/" + device + "/statistics/" + counter,
             &output);
  return strtoull(output.c_str(), nullptr, 10);
}

class SourceRouteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to create network namespaces";
    if (RunCommand("ip -V") != 0) GTEST_SKIP() << "iproute2 (ip) is not installed";
    net_ = std::make_unique<TwoNicsOneSubnet>();
    ASSERT_TRUE(net_->error().empty()) << net_->error();
  }

  // NIC k of namespace A as the plugin describes it (call inside A).
  NetDevice NicA(int k) {
    NetDevice nic;
    nic.name = net_->a(k);
    nic.ifindex = static_cast<int>(if_nametoindex(nic.name.c_str()));
    nic.address = SocketAddress::FromString(kSubnet + std::to_string(k + 1), 0).value();
    return nic;
  }

  // A listener on B's first address (made inside B, used from anywhere).
  UniqueFd ListenInB(SocketAddress* address) {
    InNamespace in_b(net_->ns_b());
    EXPECT_TRUE(in_b.ok());
    UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    *address = SocketAddress::FromString(std::string(kSubnet) + "11", 0).value();
    EXPECT_EQ(bind(fd.get(), address->get(), address->length()), 0);
    EXPECT_EQ(listen(fd.get(), 64), 0);
    sockaddr_storage storage{};
    socklen_t length = sizeof(storage);
    getsockname(fd.get(), reinterpret_cast<sockaddr*>(&storage), &length);
    *address = SocketAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&storage), length).value();
    return fd;
  }

  std::unique_ptr<TwoNicsOneSubnet> net_;
};

// No namespace needed: on loopback the route to 127.0.0.1 from 127.0.0.1 leaves through lo.
TEST(RouteMismatchTest, NamesTheDeviceTheRouteLeavesThroughWhenItIsNotTheNic) {
  const int lo = static_cast<int>(if_nametoindex("lo"));
  const SocketAddress local = SocketAddress::FromString("127.0.0.1", 0).value();
  const SocketAddress peer = SocketAddress::FromString("127.0.0.1", 5000).value();
  EXPECT_EQ(RouteMismatch(local, peer, lo), "");
  const std::string elsewhere = RouteMismatch(local, peer, lo + 1000);
  EXPECT_NE(elsewhere.find("leaves through lo (ifindex " + std::to_string(lo) + ")"),
            std::string::npos)
      << elsewhere;
  // A peer at one of this host's own addresses goes through lo for every NIC: no WARN.
  NetDevice nic;
  nic.name = "not-lo";
  nic.ifindex = lo + 1000;
  nic.address = local;
  EXPECT_EQ(RouteWarningOnce(nic, peer), "");
}

// Which NIC of A the kernel routes B's first address out of, with each NIC's address as the
// source: the same one for both (the "routed" NIC); the other NIC's path is a mismatch.
TEST_F(SourceRouteTest, TheRouteFromTheSecondNicsAddressLeavesThroughTheFirst) {
  InNamespace in_a(net_->ns_a());
  ASSERT_TRUE(in_a.ok());
  const SocketAddress to = SocketAddress::FromString(std::string(kSubnet) + "11", 0).value();
  const NetDevice first = NicA(0), second = NicA(1);
  Result<int> from_first = RouteOutputInterface(to, &first.address);
  Result<int> from_second = RouteOutputInterface(to, &second.address);
  ASSERT_TRUE(from_first.ok() && from_second.ok());
  EXPECT_EQ(from_first.value(), from_second.value());
  const NetDevice& routed = from_first.value() == first.ifindex ? first : second;
  const NetDevice& other = from_first.value() == first.ifindex ? second : first;
  EXPECT_EQ(RouteMismatch(routed.address, to, routed.ifindex), "");
  const std::string why = RouteMismatch(other.address, to, other.ifindex);
  EXPECT_NE(why.find("leaves through " + routed.name), std::string::npos) << why;
  EXPECT_NE(why.find("not " + other.name), std::string::npos) << why;
}

// Every socket of a connection from the other NIC carries its address (B sees it as the peer
// of each accepted socket), and the wrong route is WARNed about once, not per connect.
TEST_F(SourceRouteTest, EverySocketOfAConnectionLeavesFromItsNicsAddressAndTheRouteWarnsOnce) {
  SocketAddress listen_address;
  UniqueFd listener = ListenInB(&listen_address);
  InNamespace in_a(net_->ns_a());
  ASSERT_TRUE(in_a.ok());
  const SocketAddress to = listen_address;
  const NetDevice first = NicA(0);
  Result<int> routed_ifindex = RouteOutputInterface(to, &first.address);
  ASSERT_TRUE(routed_ifindex.ok());
  const NetDevice other = first.ifindex == routed_ifindex.value() ? NicA(1) : first;

  log::SetLogger(CapturedLog::Logger);
  CapturedLog::Clear();
  Config config;
  config.data_sockets = 3;
  wire::ListenHandle handle;
  handle.address = to;
  handle.nonce = 1;
  for (int attempt = 0; attempt < 2; ++attempt) {
    Result<std::unique_ptr<Connector>> connector = Connector::Start(handle, config, {other});
    ASSERT_TRUE(connector.ok()) << connector.status().message();
    for (int socket_index = 0; socket_index <= config.data_sockets; ++socket_index) {
      UniqueFd accepted(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
      ASSERT_TRUE(accepted.valid()) << strerror(errno);
      sockaddr_storage storage{};
      socklen_t length = sizeof(storage);
      ASSERT_EQ(getpeername(accepted.get(), reinterpret_cast<sockaddr*>(&storage), &length), 0);
      Result<SocketAddress> peer =
          SocketAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&storage), length);
      ASSERT_TRUE(peer.ok());
      SocketAddress peer_host = peer.value();
      peer_host.set_port(0);
      EXPECT_EQ(peer_host.ToString(), other.address.ToString());
    }
  }
  const std::vector<std::string> warnings = CapturedLog::WarningsWith("do not leave through it");
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings.front().find("connections from NIC " + other.name), std::string::npos)
      << warnings.front();
  log::SetLogger(nullptr);
}

// Sends 1 MiB from `from` to `to` (both connected) and returns the bytes B's NIC `b_device`
// received meanwhile.
uint64_t BytesArrivingAt(const std::string& ns_b, const std::string& b_device, int from, int to) {
  const uint64_t before = Counter(ns_b, b_device, "rx_bytes");
  const std::vector<char> payload(1 << 20, 'x');
  std::thread sender([&] {
    for (size_t sent = 0; sent < payload.size();) {
      const ssize_t n = send(from, payload.data() + sent, payload.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;  // the receiver's count then falls short and fails the test
      sent += static_cast<size_t>(n);
    }
  });
  std::vector<char> sink(1 << 16);
  size_t received = 0;
  while (received < payload.size()) {
    const ssize_t n = recv(to, sink.data(), sink.size(), 0);
    if (n <= 0) break;
    received += static_cast<size_t>(n);
  }
  sender.join();
  EXPECT_EQ(received, payload.size());
  return Counter(ns_b, b_device, "rx_bytes") - before;
}

// SO_BINDTODEVICE (devmem TX data sockets): after the connect-time check found the route
// through the NIC, a later route change (here a host route to the peer through the other
// NIC) moves an unbound socket's flow to the other device (its cached route is invalidated and
// looked up again), while a socket bound to its device keeps sending through it. The first
// SO_BINDTODEVICE of a socket needs no privilege since Linux 5.7 (net/core/sock.c
// sock_bindtoindex_locked).
TEST_F(SourceRouteTest, ASocketBoundToItsDeviceKeepsItThroughARouteChange) {
  SocketAddress listen_address;
  UniqueFd listener = ListenInB(&listen_address);
  // B answers each of A's addresses through the NIC facing it, so replies arrive where a
  // device-bound socket accepts them (TCP matches sk_bound_dev_if against the arriving device).
  for (int k = 0; k < 2; ++k) {
    ASSERT_EQ(RunCommand("ip -n " + net_->ns_b() + " route add " + kSubnet +
                         std::to_string(k + 1) + "/32 dev " + net_->b(k)),
              0);
  }
  InNamespace in_a(net_->ns_a());
  ASSERT_TRUE(in_a.ok());
  const NetDevice first = NicA(0);
  Result<int> routed_ifindex = RouteOutputInterface(listen_address, &first.address);
  ASSERT_TRUE(routed_ifindex.ok());
  const int routed_index = first.ifindex == routed_ifindex.value() ? 0 : 1;
  const NetDevice nic = NicA(routed_index);
  ASSERT_EQ(RouteMismatch(nic.address, listen_address, nic.ifindex), "");

  UniqueFd bound(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(BindToDevice(bound.get(), nic).ok());
  ASSERT_TRUE(BindSourceAddress(bound.get(), nic).ok());
  ASSERT_EQ(connect(bound.get(), listen_address.get(), listen_address.length()), 0)
      << strerror(errno);
  char name[IF_NAMESIZE] = {};
  socklen_t name_length = sizeof(name);
  ASSERT_EQ(getsockopt(bound.get(), SOL_SOCKET, SO_BINDTODEVICE, name, &name_length), 0);
  EXPECT_EQ(std::string(name), nic.name);
  UniqueFd bound_peer(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(bound_peer.valid());
  UniqueFd unbound(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(BindSourceAddress(unbound.get(), nic).ok());
  ASSERT_EQ(connect(unbound.get(), listen_address.get(), listen_address.length()), 0)
      << strerror(errno);
  UniqueFd unbound_peer(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(unbound_peer.valid());

  // The route change: the peer is now reached through the other NIC.
  const int other_index = 1 - routed_index;
  ASSERT_EQ(RunCommand("ip -n " + net_->ns_a() + " route add " + kSubnet + "11/32 dev " +
                       net_->a(other_index)),
            0);
  const size_t payload = 1 << 20;
  EXPECT_GE(BytesArrivingAt(net_->ns_b(), net_->b(routed_index), bound.get(), bound_peer.get()),
            payload);
  EXPECT_GE(
      BytesArrivingAt(net_->ns_b(), net_->b(other_index), unbound.get(), unbound_peer.get()),
      payload);
}

}  // namespace
}  // namespace devmem
