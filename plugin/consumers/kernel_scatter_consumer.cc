#include "plugin/consumers/kernel_scatter_consumer.h"

#include <optional>
#include <utility>

#include "gpu/scatter_plan.h"
#include "plugin/core/log.h"

namespace devmem {

size_t MaxScatterOps(uint64_t message_bytes, const FragGeometry& geometry) {
  return static_cast<size_t>(geometry.MaxFrags(message_bytes, kMaxScatterRuns) +
                             message_bytes / gpu::kMaxOpBytes + 1);
}

Result<std::unique_ptr<KernelScatterConsumer>> KernelScatterConsumer::Create(
    std::shared_ptr<const RxRegion> region, const ScatterEngineFactory& factory, size_t slots,
    const FragGeometry& geometry, std::chrono::milliseconds gpu_work_limit,
    NicWriteOrdering& ordering, GpuQuarantine& quarantine) {
  Result<NicWriteBarrier> barrier = ordering.BarrierFor(region->gpu());
  if (!barrier.ok()) return barrier.status();
  const size_t max_ops = MaxScatterOps(MaxHeldMessageBytes(region->bytes()), geometry);
  Result<std::unique_ptr<gpu::ScatterEngine>> engine = factory(region->gpu(), max_ops, slots);
  if (!engine.ok()) return engine.status().WithContext("GPU scatter engine");
  std::unique_ptr<KernelScatterConsumer> consumer(
      new KernelScatterConsumer(std::move(region), std::move(engine).value(), max_ops,
                                gpu_work_limit, barrier.value(), quarantine));
  return consumer;
}

KernelScatterConsumer::KernelScatterConsumer(std::shared_ptr<const RxRegion> region,
                                             std::unique_ptr<gpu::ScatterEngine> engine,
                                             size_t max_ops,
                                             std::chrono::milliseconds gpu_work_limit,
                                             NicWriteBarrier barrier, GpuQuarantine& quarantine)
    : gpu_work_limit_(gpu_work_limit),
      barrier_(barrier),
      quarantine_(quarantine),
      region_(std::move(region)),
      engine_(std::move(engine)),
      max_ops_(max_ops) {
  // Host scratch sized once too: the data path never grows a vector.
  entries_.reserve(max_ops);
  ops_.reserve(max_ops);
}

KernelScatterConsumer::~KernelScatterConsumer() {
  // The region outlives no kernel reading it.
  bool gave_up = false;
  Status drained = DrainWork(&gave_up);
  // A give-up was logged by the quarantine; anything else (CUDA failed) is said here.
  if (!drained.ok() && !gave_up) {
    log::Warn("scatter kernel consumer: %s", drained.message().c_str());
  }
}

Result<bool> KernelScatterConsumer::Start(const HeldMessage& message, ConsumerJob* job) {
  entries_.clear();
  for (size_t t = 0; t < message.table_count; ++t) {
    const auto& entries = message.tables[t]->entries();
    entries_.insert(entries_.end(), entries.begin(), entries.end());
  }
  if (entries_.empty()) {
    job->started = true;  // nothing in the region: done at once
    return true;
  }
  // The frag parser validated every frag; checked again against this message and region so a
  // bad table never reaches the GPU (O(frags), no syscall).
  for (const ScatterEntry& e : entries_) {
    if (e.region_offset > region_->bytes() || e.length > region_->bytes() - e.region_offset ||
        e.dst_offset > message.size || e.length > message.size - e.dst_offset) {
      return Status::Error(ErrorKind::kInternal,
                           "frag [%llu, +%u) -> %llu outside the %llu-byte region or the "
                           "%llu-byte message",
                           static_cast<unsigned long long>(e.region_offset), e.length,
                           static_cast<unsigned long long>(e.dst_offset),
                           static_cast<unsigned long long>(region_->bytes()),
                           static_cast<unsigned long long>(message.size));
    }
  }
  ops_.clear();
  gpu::BuildScatterPlan(entries_, &ops_);
  if (ops_.size() > max_ops_) {
    return Status::Error(ErrorKind::kInternal,
                         "a %llu-byte message needs %zu scatter ops, above the %zu sized at "
                         "creation",
                         static_cast<unsigned long long>(message.size), ops_.size(), max_ops_);
  }
  // The NIC's writes of these frags become visible to the kernel first (N1).
  DEVMEM_RETURN_IF_ERROR(barrier_.BeforeGpuReads());
  Result<std::optional<gpu::ScatterTicket>> ticket =
      engine_->Submit(ops_.data(), ops_.size(),
                      reinterpret_cast<const void*>(static_cast<uintptr_t>(region_->device_base())),
                      message.device_dst);
  if (!ticket.ok()) return ticket.status();
  if (!ticket.value().has_value()) return false;  // every slot in flight: try again later
  job->ticket = *ticket.value();
  job->has_ticket = true;
  job->started = true;
  return true;
}

Result<bool> KernelScatterConsumer::Finished(ConsumerJob* job) {
  if (!job->has_ticket) return job->started;
  Result<bool> done = engine_->Done(job->ticket);
  if (!done.ok()) return done.status();
  if (done.value()) job->has_ticket = false;
  return done.value();
}

Status KernelScatterConsumer::Drain() {
  bool gave_up = false;
  return DrainWork(&gave_up);
}

Status KernelScatterConsumer::DrainWork(bool* gave_up) {
  if (engine_ == nullptr) return Status::Ok();  // given up on by an earlier Drain()
  Status drained = quarantine_.Wait(
      "the scatter kernel work of a closing receive comm", "close began", gpu_work_limit_,
      [this] { return engine_->Idle(); }, gave_up);
  if (*gave_up) {
    // Freeing the engine would synchronize with work that is not running (a hang instead of a
    // failure), and its kernels may still read the region one day: neither goes.
    quarantine_.Keep(std::shared_ptr<const gpu::ScatterEngine>(std::move(engine_)));
    quarantine_.Keep(region_);
  }
  return drained;
}

}  // namespace devmem
