// What devmem needs to know about (and change on) a NIC through ethtool: header split and
// hds-thresh over ethtool netlink, driver name, ntuple and the RSS indirection table over the
// classic SIOCETHTOOL ioctl, and per-connection flow steering rules (owned by FlowSteeringRule).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "plugin/core/socket_address.h"
#include "plugin/core/status.h"
#include "plugin/devmem/flow_rule_lock.h"

namespace devmem {

struct RingSettings {
  // ETHTOOL_TCP_DATA_SPLIT_*: 0 unknown/auto, 1 disabled, 2 enabled. Absent: driver lacks it.
  std::optional<uint8_t> tcp_data_split;
  std::optional<uint32_t> hds_thresh;  // absent on kernels/drivers without the knob
  std::optional<uint32_t> rx_buf_len;  // ETHTOOL_A_RINGS_RX_BUF_LEN; absent: driver reports none
  uint32_t rx_ring = 0;
};

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

// An ntuple rule steering one TCP 4-tuple to an RX queue, deleted when destroyed. Its location
// is chosen like ethtool's rule manager does: by the driver where it reports RX_CLS_LOC_SPECIAL,
// else the first free one, chosen and inserted under the host-wide FlowRuleLock.
class FlowSteeringRule final {
 public:
  static Result<FlowSteeringRule> Install(const std::string& ifname, const SocketAddress& local,
                                          const SocketAddress& remote, uint32_t queue);
  // The same, with the lock somewhere else (tests).
  static Result<FlowSteeringRule> Install(const std::string& ifname, const SocketAddress& local,
                                          const SocketAddress& remote, uint32_t queue,
                                          const FlowRuleLockOptions& locking);
  FlowSteeringRule(FlowSteeringRule&& other) noexcept;
  FlowSteeringRule& operator=(FlowSteeringRule&&) = delete;
  FlowSteeringRule(const FlowSteeringRule&) = delete;
  ~FlowSteeringRule();
  uint32_t location() const { return location_; }

 private:
  FlowSteeringRule(std::string ifname, uint32_t location)
      : ifname_(std::move(ifname)), location_(location), armed_(true) {}
  std::string ifname_;
  uint32_t location_ = 0;
  bool armed_ = false;
};

}  // namespace devmem
