// NCCL's device unpack as a consumer (netDeviceType UNPACK, version 0x7): the plugin publishes
// each SIMPLE step's frags in the step's slot of the metadata queue and NCCL's own kernels copy
// them after test() reported done, so the tokens wait for irecvConsumed. One slot per SIMPLE
// receive in posting order, which is NCCL's step order (plugin/consumers/unpack_queue.h).
#pragma once

#include <memory>

#include "plugin/consumers/frag_consumer.h"
#include "plugin/consumers/unpack_queue.h"
#include "plugin/devmem/rx_region.h"

namespace devmem {

class NcclUnpackConsumer final : public FragConsumer {
 public:
  // The queue's bounce_buf is the region's arena base, shared by every region of its GPU.
  static Result<std::unique_ptr<NcclUnpackConsumer>> Create(const RxRegion* region);
  const char* name() const override { return "NCCL device unpack"; }
  LandingPlan PlanLanding(bool cuda_destination) const override {
    return DeviceConsumerLanding(cuda_destination);
  }
  bool ConsumesEveryStep() const override { return true; }
  Status Reserve(ConsumerJob* job) override;
  void Unreserve(ConsumerJob* job) override;
  Result<bool> Start(const HeldMessage& message, ConsumerJob* job) override;
  Result<bool> Finished(ConsumerJob* job) override { return job->started; }
  bool HoldsTokensUntilConsumed() const override { return true; }
  void Retire(ConsumerJob* job) override;

  void* device_handle() const { return queue_->device_handle(); }
  size_t device_handle_bytes() const { return queue_->device_handle_bytes(); }
  bool device_visible() const { return queue_->device_visible(); }

 private:
  explicit NcclUnpackConsumer(std::unique_ptr<unpack::UnpackQueue> queue)
      : queue_(std::move(queue)) {}
  std::unique_ptr<unpack::UnpackQueue> queue_;
};

}  // namespace devmem
