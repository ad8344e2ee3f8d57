// NCCL_DEVMEM_RAILS: which rail (and plane) each interface is cabled to, for NCCL 2.30's
// railId/planeId (ncclNetPlugin_v12). NCCL_NET_MERGE_POLICY=RAIL fuses only devices that report
// the same rail, and NCCL's graph search keeps a ring on one rail (src/graph/search.cc:605).
//
// No rule derives a rail from what one host can see: a rail is the leaf switch a port is
// cabled to, which neither sysfs nor netlink tells (LLDP could, but is not universally run and
// is not ours to trust). So the operator says it, and an interface it does not name reports
// NCCL_NET_ID_UNDEF (-1), which NCCL treats as "no rail information".
//
// Syntax: comma-separated NAME=RAIL or NAME=RAIL/PLANE, NAME an exact interface name, RAIL and
// PLANE in [0, 32767]; e.g. "eth0=0,eth1=1" or "ens1f0=0/0,ens1f1=0/1".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "plugin/core/status.h"

namespace devmem {

struct RailAssignment {
  std::string ifname;
  int16_t rail = -1;
  int16_t plane = -1;  // -1: not given
};

// An error naming the variable, the bad item and the syntax; an empty list for "".
Result<std::vector<RailAssignment>> ParseRails(const char* text);

// The assignment of `ifname`, or nullptr.
const RailAssignment* FindRail(const std::vector<RailAssignment>& rails, const std::string& ifname);

// "eth0=0,eth1=1/2" (logs).
std::string FormatRails(const std::vector<RailAssignment>& rails);

}  // namespace devmem
