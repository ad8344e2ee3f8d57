// Virtual NICs (several NICs fused by makeVDevice) and rails, without sockets: the listen
// handle that names every member, how data sockets pair members, the device table's rules,
// and NCCL_DEVMEM_RAILS parsing.
#include <gtest/gtest.h>

#include <cstring>

#include "plugin/abi/net_abi.h"
#include "plugin/core/rails.h"
#include "plugin/setup/device_table.h"
#include "plugin/transport/connector.h"
#include "plugin/transport/listen_comm.h"
#include "plugin/transport/wire.h"

namespace devmem {
namespace {

SocketAddress Address(const char* text, uint16_t port = 0) {
  return SocketAddress::FromString(text, port).value();
}

NetDevice Nic(const char* name, const char* address, int speed = 10000) {
  NetDevice nic;
  nic.name = name;
  nic.address = Address(address);
  nic.speed_mbps = speed;
  nic.ifindex = static_cast<int>(strlen(name));
  return nic;
}

TEST(FusedHandleTest, CarriesSevenMoreIpv4MembersAndKeepsTheConnectorSlotClear) {
  uint8_t buffer[abi::kNetHandleMaxSize];
  memset(buffer, 0xff, sizeof(buffer));
  wire::ListenHandle handle;
  handle.address = Address("198.18.0.1", 5000);
  handle.nonce = 7;
  for (int i = 2; i <= 8; ++i) {
    handle.extra_members.push_back(Address(("198.18." + std::to_string(i) + ".1").c_str()));
  }
  handle.Encode(buffer);
  for (size_t i = wire::ListenHandle::kConnectorSlotOffset;
       i < wire::ListenHandle::kConnectorSlotOffset + sizeof(void*); ++i) {
    EXPECT_EQ(buffer[i], 0);
  }
  Result<wire::ListenHandle> decoded = wire::ListenHandle::Decode(buffer);
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  ASSERT_EQ(decoded->extra_members.size(), 7u);
  EXPECT_EQ(decoded->extra_members[0].ToString(), "198.18.2.1:5000");  // the listener's port
  EXPECT_EQ(decoded->extra_members[6].ToString(), "198.18.8.1:5000");
}

TEST(FusedHandleTest, CarriesThreeMoreIpv6Members) {
  uint8_t buffer[abi::kNetHandleMaxSize];
  wire::ListenHandle handle;
  handle.address = Address("fd00:d3::1", 6000);
  handle.extra_members = {Address("fd00:d4::1"), Address("fd00:d5::1"), Address("fd00:d6::1")};
  handle.Encode(buffer);
  Result<wire::ListenHandle> decoded = wire::ListenHandle::Decode(buffer);
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  ASSERT_EQ(decoded->extra_members.size(), 3u);
  EXPECT_EQ(decoded->extra_members[2].ToString(), "[fd00:d6::1]:6000");
}

TEST(FusedHandleTest, AHandleClaimingMoreMembersThanFitIsRefused) {
  uint8_t buffer[abi::kNetHandleMaxSize];
  wire::ListenHandle handle;
  handle.address = Address("fd00:d3::1", 6000);
  handle.Encode(buffer);
  buffer[6] = 4;  // IPv6: at most 3 extra
  EXPECT_FALSE(wire::ListenHandle::Decode(buffer).ok());
  handle.address = Address("198.18.0.1", 5000);
  handle.Encode(buffer);
  buffer[6] = 8;  // IPv4: at most 7 extra
  EXPECT_FALSE(wire::ListenHandle::Decode(buffer).ok());
}

TEST(FusedHandleTest, DataSocketsAreAMultipleOfTheLargerMemberCount) {
  EXPECT_EQ(DataSocketsFor(4, 1, 1), 4);  // physical NICs: unchanged
  EXPECT_EQ(DataSocketsFor(4, 2, 2), 4);
  EXPECT_EQ(DataSocketsFor(4, 3, 3), 6);
  EXPECT_EQ(DataSocketsFor(1, 2, 1), 2);
  EXPECT_EQ(DataSocketsFor(4, 1, 8), 8);
  EXPECT_EQ(DataSocketsFor(64, 3, 3), 63);  // the cap, still a multiple of 3
  EXPECT_EQ(DataSocketsFor(62, 8, 8), 64);
}

TEST(RailsTest, ParsesRailsAndPlanes) {
  Result<std::vector<RailAssignment>> rails = ParseRails("eth0=0,eth1=1/2");
  ASSERT_TRUE(rails.ok()) << rails.status().message();
  ASSERT_EQ(rails->size(), 2u);
  EXPECT_EQ(FindRail(rails.value(), "eth0")->rail, 0);
  EXPECT_EQ(FindRail(rails.value(), "eth0")->plane, -1);
  EXPECT_EQ(FindRail(rails.value(), "eth1")->plane, 2);
  EXPECT_EQ(FindRail(rails.value(), "eth2"), nullptr);
  EXPECT_EQ(FormatRails(rails.value()), "eth0=0,eth1=1/2");
  EXPECT_TRUE(ParseRails(nullptr).value().empty());
  EXPECT_TRUE(ParseRails("").value().empty());
}

TEST(RailsTest, RefusesEverythingElseNamingTheItem) {
  for (const char* bad : {"eth0", "=1", "eth0=", "eth0=-1", "eth0=1/", "eth0=32768", "eth0=1x",
                          "eth0=1,eth0=2", "eth0=1,,eth1=2", "eth0 =1", "eth0=1/2/3", ","}) {
    Result<std::vector<RailAssignment>> rails = ParseRails(bad);
    EXPECT_FALSE(rails.ok()) << bad;
    if (!rails.ok()) {
      EXPECT_NE(rails.status().message().find("NCCL_DEVMEM_RAILS"), std::string::npos) << bad;
    }
  }
}

class DeviceTableTest : public ::testing::Test {
 protected:
  DeviceTable Make(std::vector<NetDevice> nics, std::vector<RxPlan> plans = {},
                   const char* rails = "") {
    if (plans.empty()) plans.resize(nics.size());
    return DeviceTable(std::move(nics), std::move(plans), ParseRails(rails).value());
  }
};

TEST_F(DeviceTableTest, AVirtualNicSumsSpeedsJoinsNamesAndComesAfterThePhysicalOnes) {
  DeviceTable table = Make({Nic("a0", "198.18.0.1", 10000), Nic("a1", "198.18.1.1", 25000),
                            Nic("a2", "198.18.2.1", 10000)});
  const int devs[] = {0, 2};
  Result<int> made = table.MakeVirtual(devs, 2, 8, /*emulate=*/true);
  ASSERT_TRUE(made.ok()) << made.status().message();
  EXPECT_EQ(made.value(), 3);
  EXPECT_EQ(table.size(), 4u);
  const DeviceEntry* entry = table.At(3);
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(entry->name, "a0+a2");
  EXPECT_EQ(entry->speed_mbps, 20000);
  EXPECT_EQ(entry->members, (std::vector<int>{0, 2}));
  EXPECT_TRUE(entry->is_virtual());
  EXPECT_TRUE(entry->plan.plain_reason.empty());  // emulation runs on any sockets
  // The same list again is the same device; one device is itself.
  EXPECT_EQ(table.MakeVirtual(devs, 2, 8, true).value(), 3);
  const int one[] = {1};
  EXPECT_EQ(table.MakeVirtual(one, 1, 8, true).value(), 1);
  EXPECT_EQ(table.size(), 4u);
}

TEST_F(DeviceTableTest, RealDevmemOnAVirtualNicFallsBackToPlainTcpSayingWhy) {
  std::vector<RxPlan> plans(2);
  DeviceTable table = Make({Nic("a0", "198.18.0.1"), Nic("a1", "198.18.1.1")}, plans);
  const int devs[] = {0, 1};
  const DeviceEntry* entry = table.At(table.MakeVirtual(devs, 2, 8, false).value());
  EXPECT_NE(entry->plan.plain_reason.find("one binding per member"), std::string::npos);
  // A member already on plain TCP names itself.
  plans[1].plain_reason = "no netmem RX";
  DeviceTable mixed = Make({Nic("a0", "198.18.0.1"), Nic("a1", "198.18.1.1")}, plans);
  entry = mixed.At(mixed.MakeVirtual(devs, 2, 8, true).value());
  EXPECT_NE(entry->plan.plain_reason.find("member a1: no netmem RX"), std::string::npos);
}

TEST_F(DeviceTableTest, RailsComeFromTheVariableAndAVirtualNicKeepsOnlyACommonOne) {
  DeviceTable table =
      Make({Nic("a0", "198.18.0.1"), Nic("a1", "198.18.1.1"), Nic("a2", "198.18.2.1")}, {},
           "a0=4/0,a1=4/1,a2=5/0");
  EXPECT_EQ(table.At(0)->rail, 4);
  EXPECT_EQ(table.At(1)->plane, 1);
  const int same_rail[] = {0, 1};
  const DeviceEntry* v = table.At(table.MakeVirtual(same_rail, 2, 8, true).value());
  EXPECT_EQ(v->rail, 4);
  EXPECT_EQ(v->plane, -1);  // planes differ
  const int two_rails[] = {1, 2};
  v = table.At(table.MakeVirtual(two_rails, 2, 8, true).value());
  EXPECT_EQ(v->rail, -1);
}

TEST_F(DeviceTableTest, RefusesBadLists) {
  DeviceTable table =
      Make({Nic("a0", "198.18.0.1"), Nic("a1", "198.18.1.1"), Nic("b0", "fd00:d3::1"),
            Nic("b1", "fd00:d4::1"), Nic("b2", "fd00:d5::1"), Nic("b3", "fd00:d6::1"),
            Nic("b4", "fd00:d7::1")});
  const int mixed[] = {0, 2};
  EXPECT_FALSE(table.MakeVirtual(mixed, 2, 8, true).ok());  // IPv4 with IPv6
  const int five_v6[] = {2, 3, 4, 5, 6};
  EXPECT_FALSE(table.MakeVirtual(five_v6, 5, 8, true).ok());  // a handle names 4 IPv6 NICs
  EXPECT_TRUE(table.MakeVirtual(five_v6, 4, 8, true).ok());
  const int three[] = {0, 1, 0};
  EXPECT_FALSE(table.MakeVirtual(three, 3, 8, true).ok());  // a NIC twice
  EXPECT_FALSE(table.MakeVirtual(three, 2, 1, true).ok());  // above the table version's limit
  const int virtual_member[] = {0, 7};
  EXPECT_FALSE(table.MakeVirtual(virtual_member, 2, 8, true).ok());  // not a physical NIC
  EXPECT_FALSE(table.MakeVirtual(nullptr, 2, 8, true).ok());
  EXPECT_EQ(table.At(-1), nullptr);
  EXPECT_EQ(table.At(99), nullptr);
}

}  // namespace
}  // namespace devmem
