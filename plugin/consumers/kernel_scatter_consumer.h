// The plugin's GPU consumer: our CUDA scatter kernel copies a message's frags out of the GPU RX
// region (gpu/scatter_kernel.cu). Done only when the submission's CUDA event completed; only
// then may the frags' tokens go back to the kernel.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "gpu/scatter_engine.h"
#include "plugin/consumers/frag_consumer.h"
#include "plugin/cuda/gpu_quarantine.h"
#include "plugin/cuda/nic_write_ordering.h"
#include "plugin/devmem/frag_geometry.h"
#include "plugin/devmem/rx_region.h"

namespace devmem {

// Makes the engine for a GPU: CUDA's in the product, tests pass their own.
using ScatterEngineFactory = std::function<Result<std::unique_ptr<gpu::ScatterEngine>>(
    int gpu, size_t max_ops, size_t slots)>;

class KernelScatterConsumer final : public FragConsumer {
 public:
  // Everything the data path needs is sized here, once: `slots` submissions in flight (NCCL
  // keeps NCCL_STEPS = 8 receives of up to maxRecvs messages each), the ops of the largest
  // message the region may hold (a quarter of it).
  // `gpu_work_limit`: how long Drain() waits for work in flight (0: forever). `geometry`: the
  // sizes the region's frags can have. `ordering` says whether the NIC's writes into the region
  // are flushed before each kernel reads them. `quarantine` takes the engine and the region
  // where Drain() gives up (the process's; tests pass their own).
  static Result<std::unique_ptr<KernelScatterConsumer>> Create(
      std::shared_ptr<const RxRegion> region, const ScatterEngineFactory& factory, size_t slots,
      const FragGeometry& geometry,
      std::chrono::milliseconds gpu_work_limit = std::chrono::milliseconds(0),
      NicWriteOrdering& ordering = NicWriteOrdering::Process(),
      GpuQuarantine& quarantine = GpuQuarantine::Process());
  ~KernelScatterConsumer() override;
  const char* name() const override { return "plugin scatter kernel"; }
  // Besides a GPU consumer's landing: the kernel cannot write unpinned host memory, so a host
  // buffer over a GPU region lands in mapped staging and is copied out after the kernel.
  LandingPlan PlanLanding(bool cuda_destination) const override {
    LandingPlan plan = DeviceConsumerLanding(cuda_destination);
    if (!cuda_destination && region_->host_base() == nullptr) {
      plan.staged = true;
      plan.consumer_writes_staging = true;
      plan.delivery = HostDelivery::kWholeToHost;
    }
    return plan;
  }
  Result<bool> Start(const HeldMessage& message, ConsumerJob* job) override;
  Result<bool> Finished(ConsumerJob* job) override;
  // Waits up to the GPU work limit (GpuQuarantine::Wait). Past it the work is given up on: the
  // engine and the region go to the quarantine (kept, never synchronized or freed: its kernels
  // may still run one day and read the region) and the quarantine's error comes back.
  Status Drain() override;

 private:
  KernelScatterConsumer(std::shared_ptr<const RxRegion> region,
                        std::unique_ptr<gpu::ScatterEngine> engine, size_t max_ops,
                        std::chrono::milliseconds gpu_work_limit, NicWriteBarrier barrier,
                        GpuQuarantine& quarantine);
  // Drain(), saying whether the work was given up on.
  Status DrainWork(bool* gave_up);
  std::chrono::milliseconds gpu_work_limit_;
  NicWriteBarrier barrier_;
  GpuQuarantine& quarantine_;
  std::shared_ptr<const RxRegion> region_;
  std::unique_ptr<gpu::ScatterEngine> engine_;
  size_t max_ops_;
  std::vector<ScatterEntry> entries_;  // scratch: one message's frags over all sockets
  std::vector<gpu::ScatterOp> ops_;    // scratch: its scatter plan
};

// Ops one message of at most `message_bytes` can need: its frags as `geometry` bounds them
// (frag_geometry.h), in up to kMaxScatterRuns runs (data sockets' chunks, each cut at both
// ends), plus the plan's splits at 64 KiB.
inline constexpr uint64_t kMaxScatterRuns = 2048;
size_t MaxScatterOps(uint64_t message_bytes, const FragGeometry& geometry);

}  // namespace devmem
