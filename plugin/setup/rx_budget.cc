#include "plugin/setup/rx_budget.h"

#include <algorithm>
#include <cmath>

#include "plugin/core/status.h"

namespace devmem {

RxBudget PlanRxBudget(const Config& config, const RxQueueFacts& queues,
                      const FragGeometry& geometry) {
  constexpr uint64_t kAlign = 2 << 20;  // the GPU page, and the dmabuf export granularity
  RxBudget budget;
  const uint64_t niov = geometry.niov_bytes();
  const uint64_t bound = std::max<size_t>(queues.bound_queues, 1);
  const uint64_t ring = queues.ring_entries != 0 ? queues.ring_entries : kAssumedRingEntries;
  const uint64_t pool = queues.driver == "gve" ? kGvePagePoolNiovs : ring;
  budget.ring_prefill = ring * niov * bound;
  budget.page_pool = pool * niov * bound;
  // A message holds whole driver buffers, not just its bytes (frag_geometry.h).
  const double held_per_byte = geometry.RegionBytesPerStreamByte();
  const uint64_t per_comm = std::max<uint64_t>(config.nccl_buffsize, kNcclDefaultBuffsize);
  budget.in_flight = static_cast<uint64_t>(
      std::ceil(kPlannedRecvComms * static_cast<double>(per_comm) * held_per_byte));
  const uint64_t needed = budget.ring_prefill + budget.page_pool + budget.in_flight;
  const uint64_t step_held = static_cast<uint64_t>(
      std::ceil(static_cast<double>(config.MaxNcclStepBytes()) * held_per_byte));
  if (config.rx_region_bytes_set) {
    budget.from_user = true;
    budget.region_bytes = config.rx_region_bytes;
    if (budget.region_bytes < budget.ring_prefill + step_held) {
      budget.refusal = Format(
          "NCCL_DEVMEM_RX_REGION_BYTES=%llu is below what the RX ring(s) take (%llu entries x "
          "%llu-byte niovs x %llu queue(s) = %llu bytes) plus one NCCL step (%llu bytes held): "
          "no packet could land while a receive waits; use at least %llu",
          static_cast<unsigned long long>(budget.region_bytes),
          static_cast<unsigned long long>(ring), static_cast<unsigned long long>(niov),
          static_cast<unsigned long long>(bound),
          static_cast<unsigned long long>(budget.ring_prefill),
          static_cast<unsigned long long>(step_held),
          static_cast<unsigned long long>(budget.ring_prefill + step_held));
    }
  } else {
    budget.region_bytes = (std::max(needed, kMinDefaultRegionBytes) + kAlign - 1) / kAlign * kAlign;
  }
  budget.text = Format(
      "%llu MiB RX region (%s): rings %llu MiB (%llu entries%s x %llu-byte niovs x %llu "
      "queue(s)) + page pools %llu MiB (%llu niovs per queue%s) + in flight %llu MiB (%d receive "
      "comms x %llu MiB NCCL_BUFFSIZE x %.2f region bytes per byte: %s) = %llu MiB%s",
      static_cast<unsigned long long>(budget.region_bytes >> 20),
      budget.from_user ? "NCCL_DEVMEM_RX_REGION_BYTES" : "default, from the budget",
      static_cast<unsigned long long>(budget.ring_prefill >> 20),
      static_cast<unsigned long long>(ring), queues.ring_entries != 0 ? "" : ", not reported",
      static_cast<unsigned long long>(niov), static_cast<unsigned long long>(bound),
      static_cast<unsigned long long>(budget.page_pool >> 20),
      static_cast<unsigned long long>(pool),
      queues.driver == "gve" ? ", gve's devmem pool" : ", like the ring",
      static_cast<unsigned long long>(budget.in_flight >> 20), kPlannedRecvComms,
      static_cast<unsigned long long>(per_comm >> 20), held_per_byte, geometry.Describe().c_str(),
      static_cast<unsigned long long>(needed >> 20),
      budget.from_user && budget.refusal.empty() && budget.region_bytes < needed
          ? "; the region is smaller than the budget: under load the NIC may drop packets"
          : "");
  return budget;
}

}  // namespace devmem
