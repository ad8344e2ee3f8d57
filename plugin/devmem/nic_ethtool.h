// What devmem needs to know about (and change on) a NIC through ethtool: header split and
// hds-thresh over ethtool netlink, driver name, ntuple and the RSS indirection table over the
// classic SIOCETHTOOL ioctl, and the ntuple rule table behind a narrow seam (NtupleTable; the rules
// themselves are owned by FlowSteeringRule, flow_steering.h).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "plugin/core/socket_address.h"
#include "plugin/core/status.h"

struct ethtool_rx_flow_spec;  // <linux/ethtool.h>

namespace devmem {

struct RingSettings {
  // ETHTOOL_TCP_DATA_SPLIT_*: 0 unknown/auto, 1 disabled, 2 enabled. Absent: driver lacks it.
  std::optional<uint8_t> tcp_data_split;
  std::optional<uint32_t> hds_thresh;  // absent on kernels/drivers without the knob
  std::optional<uint32_t> rx_buf_len;  // ETHTOOL_A_RINGS_RX_BUF_LEN; absent: driver reports none
  uint32_t rx_ring = 0;
};

// Runs one SIOCETHTOOL command with `data` as ifr_data; the error names `what`, the interface
// and the errno (EOPNOTSUPP as "not supported by driver"). `failed_errno`, when given, receives
// the ioctl's errno (0 when it succeeded or never ran).
Status EthtoolIoctl(const std::string& ifname, void* data, const char* what,
                    int* failed_errno = nullptr);

// ETHTOOL_MSG_RINGS_GET over the "ethtool" generic netlink family.
Result<RingSettings> QueryRings(int ifindex);
// ETHTOOL_GDRVINFO.
Result<std::string> QueryDriver(const std::string& ifname);
// ETHTOOL_GFLAGS & ETH_FLAG_NTUPLE.
Result<bool> QueryNtupleEnabled(const std::string& ifname);
// ETHTOOL_GRXFHINDIR: the RX queue of every RSS indirection entry.
Result<std::vector<uint32_t>> QueryRssIndirection(const std::string& ifname);

// What ETHTOOL_GRXCLSRLCNT and ETHTOOL_GRXCLSRLALL say about the ntuple rule table.
struct FlowRuleTable {
  bool driver_selects = false;  // RX_CLS_LOC_SPECIAL: insert with RX_CLS_LOC_ANY (bnxt)
  uint32_t size = 0;            // number of locations (0 when the driver does not say)
  std::vector<uint32_t> used;   // locations in use; read only when !driver_selects
};
// ETHTOOL_GRXCLSRLCNT, then (unless the driver selects locations) ETHTOOL_GRXCLSRLALL.
Result<FlowRuleTable> QueryFlowRuleTable(const std::string& ifname);

// What one of our ntuple rules matches: TCP over IPv4 or IPv6, the flow as the NIC sees it arrive
// (source = the peer, destination = us), and the RX queue it steers to. The ports are always
// matched exactly; the source address only in FlowScope::kExact.
struct FlowMatch {
  int family = 0;                 // AF_INET or AF_INET6
  std::array<uint8_t, 16> src{};  // network order; IPv4 in the first 4 bytes
  std::array<uint8_t, 16> dst{};
  uint16_t src_port = 0;  // host order
  uint16_t dst_port = 0;
  bool match_src_addr = true;
  uint32_t queue = 0;
  bool operator==(const FlowMatch&) const = default;
  // "10.0.0.2:40000 -> 10.0.0.1:5000 to RX queue 7" ("*:40000" when the source is not matched).
  std::string ToString() const;
};

// How much of a data socket's 4-tuple a rule matches, finest first. The next coarser scope is
// tried when a driver refuses the finer one (see FlowScopeLadder in flow_steering.h).
enum class FlowScope {
  kExact,             // src addr, dst addr, src port, dst port
  kAnySourceAddress,  // dst addr, src port, dst port: no source-address slot (fbnic: 8 of them)
};
FlowMatch MatchConnection(const SocketAddress& local, const SocketAddress& remote, uint32_t queue,
                          FlowScope scope);

// The SIOCETHTOOL form of a FlowMatch, and back (nullopt: a rule of a shape we never install).
void ToFlowSpec(const FlowMatch& match, ethtool_rx_flow_spec* spec);
std::optional<FlowMatch> FromFlowSpec(const ethtool_rx_flow_spec& spec);

// The seam to a NIC's ntuple rule table: the ethtool ioctls, nothing else, so that location
// choice, the scope ladder, the host registry and dead-owner cleanup run for real in tests over a
// fake table (a real insert fails on veth and lo: they have no get_rxnfc).
class NtupleTable {
 public:
  virtual ~NtupleTable() = default;
  virtual const std::string& ifname() const = 0;
  // ETHTOOL_GRXCLSRLCNT and ETHTOOL_GRXCLSRLALL.
  virtual Result<FlowRuleTable> Query() = 0;
  // ETHTOOL_SRXCLSRLINS at `location` (kRuleLocationAny: the driver picks); where the rule went.
  // On failure *failed_errno is the driver's errno (0 when nothing was sent).
  virtual Result<uint32_t> Insert(const FlowMatch& match, uint32_t location, int* failed_errno) = 0;
  // ETHTOOL_GRXCLSRULE: the rule at `location`; nullopt when the location is empty or holds a
  // rule that is not a FlowMatch.
  virtual Result<std::optional<FlowMatch>> Read(uint32_t location) = 0;
  // ETHTOOL_SRXCLSRLDEL.
  virtual Status Remove(uint32_t location) = 0;
};

// The real table of a NIC, through SIOCETHTOOL.
class EthtoolNtupleTable final : public NtupleTable {
 public:
  explicit EthtoolNtupleTable(std::string ifname) : ifname_(std::move(ifname)) {}
  const std::string& ifname() const override { return ifname_; }
  Result<FlowRuleTable> Query() override;
  Result<uint32_t> Insert(const FlowMatch& match, uint32_t location, int* failed_errno) override;
  Result<std::optional<FlowMatch>> Read(uint32_t location) override;
  Status Remove(uint32_t location) override;

 private:
  std::string ifname_;
};

}  // namespace devmem
