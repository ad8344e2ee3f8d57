#include "plugin/core/net_device.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace devmem {
namespace {

InterfaceInfo Iface(const std::string& name, bool up, bool loopback,
                    std::initializer_list<const char*> addresses) {
  InterfaceInfo info;
  info.name = name;
  info.up = up;
  info.loopback = loopback;
  for (const char* a : addresses) info.addresses.push_back(SocketAddress::FromString(a, 0).value());
  return info;
}

std::vector<std::string> Names(const std::vector<NetDevice>& devices) {
  std::vector<std::string> names;
  for (const NetDevice& d : devices) names.push_back(d.name);
  return names;
}

const std::vector<InterfaceInfo> kHost = {
    Iface("lo", true, true, {"127.0.0.1", "::1"}),
    Iface("eth0", true, false, {"192.0.2.2", "fe80::1", "fd00::2"}),
    Iface("eth1", false, false, {"198.51.100.1"}),
    Iface("eth10", true, false, {"fe80::2", "fd00::10"}),
    Iface("docker0", true, false, {"172.17.0.1"}),
    Iface("ib0", true, false, {}),
};

TEST(IfnameFilterTest, FollowsNcclSemantics) {
  EXPECT_TRUE(IfnameFilter("eth").Matches("eth10"));
  EXPECT_FALSE(IfnameFilter("=eth1").Matches("eth10"));
  EXPECT_TRUE(IfnameFilter("=eth1").Matches("eth1"));
  EXPECT_FALSE(IfnameFilter("^docker,lo").Matches("docker0"));
  EXPECT_TRUE(IfnameFilter("^docker,lo").Matches("eth0"));
  EXPECT_TRUE(IfnameFilter("^=eth1").Matches("eth10"));
  EXPECT_FALSE(IfnameFilter("^=eth1").Matches("eth1"));
  EXPECT_TRUE(IfnameFilter("eth0:1,ib").Matches("eth0"));  // NCCL's ":port" suffix ignored
  EXPECT_TRUE(IfnameFilter("").Matches("anything"));
}

TEST(SelectDevicesTest, DefaultSkipsLoopbackDownAndAddresslessInterfaces) {
  EXPECT_EQ(Names(SelectDevices(kHost, "", 0)),
            (std::vector<std::string>{"eth0", "eth10", "docker0"}));
}

TEST(SelectDevicesTest, PrefersIPv4AndNeverPicksLinkLocal) {
  std::vector<NetDevice> devices = SelectDevices(kHost, "eth", 0);
  ASSERT_EQ(devices.size(), 2u);
  EXPECT_EQ(devices[0].address.ToString(), "192.0.2.2:0");
  EXPECT_EQ(devices[1].address.ToString(), "[fd00::10]:0");
}

TEST(SelectDevicesTest, FamilyRestrictsAddresses) {
  EXPECT_EQ(Names(SelectDevices(kHost, "", AF_INET6)), (std::vector<std::string>{"eth0", "eth10"}));
  std::vector<NetDevice> v6 = SelectDevices(kHost, "=eth0", AF_INET6);
  ASSERT_EQ(v6.size(), 1u);
  EXPECT_EQ(v6[0].address.ToString(), "[fd00::2]:0");
}

TEST(SelectDevicesTest, LoopbackWhenAskedOrWhenNothingElse) {
  EXPECT_EQ(Names(SelectDevices(kHost, "lo", 0)), (std::vector<std::string>{"lo"}));
  std::vector<InterfaceInfo> only_lo = {kHost[0], kHost[2]};
  EXPECT_EQ(Names(SelectDevices(only_lo, "", 0)), (std::vector<std::string>{"lo"}));
  EXPECT_TRUE(SelectDevices(kHost, "nosuch", 0).empty());
}

TEST(SelectDevicesTest, WhenNothingQualifiesEveryInterfaceIsNamedWithWhy) {
  EXPECT_EQ(DescribeUnselected(kHost, "=eht0", 0),
            "lo (not matched by NCCL_SOCKET_IFNAME), eth0 (not matched by NCCL_SOCKET_IFNAME), "
            "eth1 (not matched by NCCL_SOCKET_IFNAME), eth10 (not matched by NCCL_SOCKET_IFNAME), "
            "docker0 (not matched by NCCL_SOCKET_IFNAME), ib0 (not matched by NCCL_SOCKET_IFNAME)");
  EXPECT_EQ(DescribeUnselected(kHost, "eth1,ib", AF_INET6),
            "lo (not matched by NCCL_SOCKET_IFNAME), eth0 (not matched by NCCL_SOCKET_IFNAME), "
            "eth1 (down), eth10 (usable), docker0 (not matched by NCCL_SOCKET_IFNAME), "
            "ib0 (no IPv6 address other than link-local)");
  EXPECT_EQ(DescribeUnselected({}, "", 0), "none");
}

TEST(DiscoverDevicesTest, AnIfnameMatchingNothingNamesTheInterfacesThatExist) {
  // The real kernel: loopback always exists, and no interface is called this.
  Result<std::vector<NetDevice>> devices = DiscoverDevices("=no-such-nic0", 0);
  ASSERT_FALSE(devices.ok());
  EXPECT_NE(devices.status().message().find("matching NCCL_SOCKET_IFNAME==no-such-nic0"),
            std::string::npos)
      << devices.status().message();
  EXPECT_NE(devices.status().message().find("lo (not matched by NCCL_SOCKET_IFNAME)"),
            std::string::npos)
      << devices.status().message();
}

TEST(SysfsTest, ReadsSpeedAndFallsBackWhenUnknown) {
  char dir_template[] = "/tmp/devmem-sysfs-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string root = dir_template;
  mkdir((root + "/fast0").c_str(), 0755);
  mkdir((root + "/virt0").c_str(), 0755);
  std::ofstream(root + "/fast0/speed") << "100000\n";
  std::ofstream(root + "/virt0/speed") << "-1\n";
  NetDevice fast;
  fast.name = "fast0";
  DescribeFromSysfs(&fast, root);
  EXPECT_EQ(fast.speed_mbps, 100000);
  EXPECT_TRUE(fast.pci_path.empty());
  NetDevice virt;
  virt.name = "virt0";
  DescribeFromSysfs(&virt, root);
  EXPECT_EQ(virt.speed_mbps, 10000);
  std::string cleanup = "rm -rf " + root;
  ASSERT_EQ(system(cleanup.c_str()), 0);
}

TEST(ListInterfacesTest, RealKernelListsLoopbackWithItsAddress) {
  Result<std::vector<InterfaceInfo>> interfaces = ListInterfaces();
  ASSERT_TRUE(interfaces.ok()) << interfaces.status().message();
  bool found = false;
  for (const InterfaceInfo& info : interfaces.value()) {
    if (info.name != "lo") continue;
    found = true;
    EXPECT_TRUE(info.loopback);
    EXPECT_TRUE(info.up);
    bool has_v4 = false;
    for (const SocketAddress& a : info.addresses) has_v4 |= a.ToString() == "127.0.0.1:0";
    EXPECT_TRUE(has_v4);
  }
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace devmem
