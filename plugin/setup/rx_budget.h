// How large a devmem RX region must be (F10 of the 2026-11 review).
//
// Everything NCCL has in flight on a NIC sits in its bound region until the consumer ran:
// every receive connection may hold up to NCCL_BUFFSIZE (src/transport/net.cc keeps
// NCCL_STEPS steps of NCCL_BUFFSIZE / NCCL_STEPS posted until test / irecvConsumed), and the
// NIC's page pool pre-fills its ring(s) from the same memory. Pages the region lacks are packet
// drops (Documentation/networking/devmem.rst) and, with partial messages holding theirs,
// retransmits that can livelock. So the default is the budget, not a guess.
#pragma once

#include <cstdint>
#include <string>

#include "plugin/core/config.h"

namespace devmem {

struct RxBudget {
  uint64_t ring_prefill = 0;  // RX ring entries x page x bound queues
  uint64_t in_flight = 0;     // receive comms x NCCL_BUFFSIZE x margin
  uint64_t region_bytes = 0;  // what the region gets (the user's value when set)
  bool from_user = false;
  std::string text;  // one line for the log
};

// Receive connections per NIC the default plans for: NCCL's MAXCHANNELS (32) receive comms,
// which covers ring and tree on one NIC of an 8-GPU H100 host.
inline constexpr int kPlannedRecvComms = 32;
// Entries per RX ring the pre-fill estimate assumes when the NIC's is unknown (mlx5's default
// is 1024, bnxt's up to 2047, gve's 1024: 4096 leaves room).
inline constexpr uint64_t kAssumedRingEntries = 4096;
// The smallest default: large enough for an H100 host.
inline constexpr uint64_t kMinDefaultRegionBytes = 512ull << 20;

RxBudget PlanRxBudget(const Config& config, size_t bound_queues);

}  // namespace devmem
