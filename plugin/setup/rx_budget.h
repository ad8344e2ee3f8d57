// How large a devmem RX region must be (F10 of the 2026-11 review, N12 of the 2026-12 audit).
//
// Everything NCCL has in flight on a NIC sits in its bound region until the consumer ran:
// every receive connection may hold up to NCCL_BUFFSIZE (src/transport/net.cc keeps
// NCCL_STEPS steps of NCCL_BUFFSIZE / NCCL_STEPS posted until test / irecvConsumed), and the
// NIC's page pool pre-fills its ring(s) from the same memory. Pages the region lacks are packet
// drops (Documentation/networking/devmem.rst) and, with partial messages holding theirs,
// retransmits that can livelock. So the default is the budget, not a guess, and a user region
// below what the rings take plus one NCCL step is refused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "plugin/core/config.h"
#include "plugin/devmem/frag_geometry.h"

namespace devmem {

// What the driver says about the queues a region is bound to.
struct RxQueueFacts {
  size_t bound_queues = 1;
  uint32_t ring_entries = 0;  // ethtool ETHTOOL_A_RINGS_RX; 0: not reported
  std::string driver;         // ETHTOOL_GDRVINFO (per-driver page-pool sizes)
};

struct RxBudget {
  uint64_t ring_prefill = 0;  // niovs the RX rings post: ring entries x niov x bound queues
  uint64_t page_pool = 0;     // niovs the page pools cache on top of the rings
  uint64_t in_flight = 0;     // receive comms x NCCL_BUFFSIZE x region bytes per stream byte
  uint64_t region_bytes = 0;  // what the region gets (the user's value when set)
  bool from_user = false;
  // Non-empty: the user's region cannot work (below the rings' pre-fill plus one NCCL step:
  // no packet could land until a receive completes, and none could complete).
  std::string refusal;
  std::string text;  // one line for the log
};

// Receive connections per NIC the default plans for: NCCL's MAXCHANNELS (32) receive comms,
// which covers ring and tree on one NIC of an 8-GPU H100 host.
inline constexpr int kPlannedRecvComms = 32;
// Entries per RX ring the pre-fill estimate assumes when the NIC reports none (mlx5's default
// is 1024, bnxt's up to 2047, gve's 1024: 4096 leaves room).
inline constexpr uint64_t kAssumedRingEntries = 4096;
// gve's devmem page pool: 16384 niovs per queue whatever the ring size (raised after NCCL PXN
// went from 0.43 to 12.5 GB/s with it: Mina Almasry's mail, id 14600897880). Other drivers
// size their page pool like their ring (page_pool_params.pool_size = ring size).
inline constexpr uint64_t kGvePagePoolNiovs = 16384;
// The smallest default: large enough for an H100 host.
inline constexpr uint64_t kMinDefaultRegionBytes = 512ull << 20;

RxBudget PlanRxBudget(const Config& config, const RxQueueFacts& queues,
                      const FragGeometry& geometry);

}  // namespace devmem
