// Where a new ntuple rule goes in the NIC's rule table, decided the way ethtool's rule manager
// (ethtool rxclass.c, rmgr_*) decides it. Pure: the ioctls that feed it live in nic_ethtool.cc.
#pragma once

#include <cstdint>
#include <span>

#include "plugin/core/status.h"

namespace devmem {

// RX_CLS_LOC_ANY: "the driver picks". Only drivers that report RX_CLS_LOC_SPECIAL accept it (bnxt
// even requires it); mlx5 refuses it with ENOSPC.
inline constexpr uint32_t kRuleLocationAny = 0xffffffffu;

// The location for a new rule, given what ETHTOOL_GRXCLSRLCNT / ETHTOOL_GRXCLSRLALL reported:
//   - driver_selects (RX_CLS_LOC_SPECIAL was set): kRuleLocationAny; the rest is not looked at.
//   - otherwise the lowest location below table_size that is not in `used`. `used` may be in any
//     order and hold duplicates; entries at or past table_size block nothing.
// Errors: table_size 0 (the driver reported no table), and a full table.
Result<uint32_t> ChooseRuleLocation(uint32_t table_size, bool driver_selects,
                                    std::span<const uint32_t> used);

}  // namespace devmem
