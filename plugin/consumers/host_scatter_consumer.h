// The CPU consumer: copies the frags out of a host RX region (emulation without a GPU, tests).
#pragma once

#include "plugin/consumers/frag_consumer.h"
#include "plugin/devmem/rx_region.h"

namespace devmem {

class HostScatterConsumer final : public FragConsumer {
 public:
  explicit HostScatterConsumer(const RxRegion* region) : region_(region) {}
  const char* name() const override { return "host scatter"; }
  // Host buffers are scattered by the workers as frags arrive (while the frags are still in
  // cache, and their tokens go back at once); a CUDA buffer is scattered into staging.
  LandingPlan PlanLanding(bool cuda_destination) const override {
    LandingPlan plan = HostDataLanding(cuda_destination);
    plan.scatter_on_arrival = !cuda_destination;
    return plan;
  }
  Status ScatterOnArrival(const OffsetTable& frags, char* dst, uint64_t size) const override;
  Result<bool> Start(const HeldMessage& message, ConsumerJob* job) override;
  Result<bool> Finished(ConsumerJob* job) override { return job->started; }

 private:
  const RxRegion* region_;
};

}  // namespace devmem
