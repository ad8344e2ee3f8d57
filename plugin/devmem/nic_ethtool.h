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

namespace devmem {

struct RingSettings {
  // ETHTOOL_TCP_DATA_SPLIT_*: 0 unknown/auto, 1 disabled, 2 enabled. Absent: driver lacks it.
  std::optional<uint8_t> tcp_data_split;
  std::optional<uint32_t> hds_thresh;  // absent on kernels/drivers without the knob
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

// An ntuple rule steering one TCP 4-tuple to an RX queue, deleted when destroyed.
class FlowSteeringRule final {
 public:
  static Result<FlowSteeringRule> Install(const std::string& ifname, const SocketAddress& local,
                                          const SocketAddress& remote, uint32_t queue);
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
