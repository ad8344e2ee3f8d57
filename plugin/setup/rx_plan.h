// Mode selection, once per process at init: for every NIC, devmem RX (real or emulated) or
// plain TCP and why, how large its RX region is, and whether NCCL's step sizes fit the
// consumer that was asked for. The readiness checks are the ones devmem-doctor runs.
#pragma once

#include <string>
#include <vector>

#include "plugin/core/config.h"
#include "plugin/core/net_device.h"
#include "plugin/setup/rx_path.h"

namespace devmem {

// Emulation: each receive comm takes a slice of NCCL_DEVMEM_RX_REGION_BYTES from its GPU's
// arena, which holds this many (as far as NCCL's 32-bit unpack offsets reach).
inline constexpr uint64_t kEmulatedCommsPerArena = 32;

// One plan per device, in order. May turn `config->unpack` to kPlugin (with a WARN) where
// NCCL's unpack cannot take NCCL's step size or the arena is beyond its 32-bit reach.
std::vector<RxPlan> PlanReceivePaths(Config* config, const std::vector<NetDevice>& devices,
                                     bool gpu_present);

// Why NCCL's unpack cannot take every receive of `config` whose frags have `geometry` (one
// unpack step holds NET_UNPACK_MAX_SLICE_PAGES entries); "" when it can.
std::string UnpackRefusal(const Config& config, const FragGeometry& geometry);

// The RX page (niov) size of `config`: NCCL_DEVMEM_RX_PAGE_SIZE, else the kernel's PAGE_SIZE.
uint32_t RxPageBytes(const Config& config);

}  // namespace devmem
