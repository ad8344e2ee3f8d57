#include "plugin/setup/rx_budget.h"

#include <algorithm>

#include "plugin/core/status.h"

namespace devmem {

RxBudget PlanRxBudget(const Config& config, size_t bound_queues) {
  constexpr uint64_t kPage = 4096;
  constexpr uint64_t kAlign = 2 << 20;  // the GPU page, and the dmabuf export granularity
  RxBudget budget;
  budget.ring_prefill = kAssumedRingEntries * kPage * std::max<size_t>(bound_queues, 1);
  // 1.5 x: frags do not fill whole pages (a split frag uses half of one), so a message holds
  // more of the region than its bytes.
  const uint64_t per_comm = std::max<uint64_t>(config.nccl_buffsize, 4ull << 20);
  budget.in_flight = kPlannedRecvComms * per_comm * 3 / 2;
  const uint64_t needed = budget.ring_prefill + budget.in_flight;
  if (config.rx_region_bytes_set) {
    budget.from_user = true;
    budget.region_bytes = config.rx_region_bytes;
  } else {
    budget.region_bytes = (std::max(needed, kMinDefaultRegionBytes) + kAlign - 1) / kAlign * kAlign;
  }
  budget.text = Format(
      "%llu MiB RX region (%s): ring pre-fill ~%llu MiB (%llu entries x 4 KiB x %zu queue(s)) + "
      "in flight %llu MiB (%d receive comms x %llu MiB NCCL_BUFFSIZE x 1.5) = %llu MiB%s",
      static_cast<unsigned long long>(budget.region_bytes >> 20),
      budget.from_user ? "NCCL_DEVMEM_RX_REGION_BYTES" : "default, from the budget",
      static_cast<unsigned long long>(budget.ring_prefill >> 20),
      static_cast<unsigned long long>(kAssumedRingEntries), std::max<size_t>(bound_queues, 1),
      static_cast<unsigned long long>(budget.in_flight >> 20), kPlannedRecvComms,
      static_cast<unsigned long long>(per_comm >> 20),
      static_cast<unsigned long long>(needed >> 20),
      budget.from_user && budget.region_bytes < needed
          ? "; the region is smaller than the budget: under load the NIC may drop packets"
          : "");
  return budget;
}

}  // namespace devmem
