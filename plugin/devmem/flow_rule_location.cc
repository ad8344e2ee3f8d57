#include "plugin/devmem/flow_rule_location.h"

#include <algorithm>
#include <vector>

namespace devmem {

Result<uint32_t> ChooseRuleLocation(uint32_t table_size, bool driver_selects,
                                    std::span<const uint32_t> used) {
  if (driver_selects) return kRuleLocationAny;
  if (table_size == 0) {
    return Status::Error(ErrorKind::kSystem,
                         "the driver reports an ntuple rule table of size 0 and cannot choose a "
                         "location itself (no RX_CLS_LOC_SPECIAL)");
  }
  // The lowest free slot, where ethtool's rmgr_find_empty_slot takes the highest: a lower
  // location is matched first (uapi ethtool.h, struct ethtool_rx_flow_spec), so our exact
  // 4-tuple rules win over broader rules an operator put higher up. Sorting the used locations
  // keeps the cost in the rule count, never in a (driver-reported, possibly huge) table size.
  std::vector<uint32_t> sorted;
  sorted.reserve(used.size());
  for (uint32_t location : used) {
    if (location < table_size) sorted.push_back(location);
  }
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  uint32_t candidate = 0;
  for (uint32_t location : sorted) {
    if (location != candidate) break;
    ++candidate;
  }
  if (candidate < table_size) return candidate;
  return Status::Error(ErrorKind::kSystem,
                       "ntuple rule table full: all %u locations are in use (list them with "
                       "`ethtool -n <ifname>`, remove stale ones with `ethtool -N <ifname> "
                       "delete <location>`)",
                       table_size);
}

}  // namespace devmem
