// The CPU consumer: copies the frags out of a host RX region (emulation without a GPU, tests).
#pragma once

#include "plugin/consumers/frag_consumer.h"
#include "plugin/devmem/rx_region.h"

namespace devmem {

class HostScatterConsumer final : public FragConsumer {
 public:
  explicit HostScatterConsumer(const RxRegion* region) : region_(region) {}
  Kind kind() const override { return Kind::kHostScatter; }
  const char* name() const override { return "host scatter"; }
  Result<bool> Start(const HeldMessage& message, ConsumerJob* job) override;
  Result<bool> Finished(ConsumerJob* job) override { return job->started; }

 private:
  const RxRegion* region_;
};

}  // namespace devmem
