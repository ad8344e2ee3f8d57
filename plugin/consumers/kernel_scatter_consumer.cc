#include "plugin/consumers/kernel_scatter_consumer.h"

#include <mutex>
#include <optional>
#include <thread>

#include "gpu/scatter_plan.h"
#include "plugin/core/log.h"

namespace devmem {

size_t MaxScatterOps(uint64_t message_bytes, const FragGeometry& geometry) {
  return static_cast<size_t>(geometry.MaxFrags(message_bytes, kMaxScatterRuns) +
                             message_bytes / gpu::kMaxOpBytes + 1);
}

Result<std::unique_ptr<KernelScatterConsumer>> KernelScatterConsumer::Create(
    const RxRegion* region, const ScatterEngineFactory& factory, size_t slots,
    const FragGeometry& geometry, std::chrono::milliseconds drain_limit,
    NicWriteOrdering& ordering) {
  Result<NicWriteBarrier> barrier = ordering.BarrierFor(region->gpu());
  if (!barrier.ok()) return barrier.status();
  const size_t max_ops = MaxScatterOps(MaxHeldMessageBytes(region->bytes()), geometry);
  Result<std::unique_ptr<gpu::ScatterEngine>> engine = factory(region->gpu(), max_ops, slots);
  if (!engine.ok()) return engine.status().WithContext("GPU scatter engine");
  std::unique_ptr<KernelScatterConsumer> consumer(new KernelScatterConsumer(
      region, std::move(engine).value(), max_ops, drain_limit, barrier.value()));
  return consumer;
}

KernelScatterConsumer::KernelScatterConsumer(const RxRegion* region,
                                             std::unique_ptr<gpu::ScatterEngine> engine,
                                             size_t max_ops, std::chrono::milliseconds drain_limit,
                                             NicWriteBarrier barrier)
    : drain_limit_(drain_limit),
      barrier_(barrier),
      region_(region),
      engine_(std::move(engine)),
      max_ops_(max_ops) {
  // Host scratch sized once too: the data path never grows a vector.
  entries_.reserve(max_ops);
  ops_.reserve(max_ops);
}

KernelScatterConsumer::~KernelScatterConsumer() {
  // The region outlives no kernel reading it.
  Status drained = Drain();
  if (!drained.ok()) log::Warn("scatter kernel consumer: %s", drained.message().c_str());
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
  if (engine_ == nullptr) return Status::Ok();  // abandoned by an earlier Drain()
  if (drain_limit_.count() == 0) return engine_->Synchronize();
  const auto deadline = std::chrono::steady_clock::now() + drain_limit_;
  for (;;) {
    Result<bool> idle = engine_->Idle();
    if (!idle.ok()) return idle.status();
    if (idle.value()) return Status::Ok();
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // Freeing the engine would synchronize with work that is not running: hang instead of fail.
  // Kept for the life of the process instead (reachable: leak checkers stay quiet about it).
  static std::mutex abandoned_mutex;
  static auto* abandoned = new std::vector<std::unique_ptr<gpu::ScatterEngine>>();  // NOLINT
  {
    std::lock_guard<std::mutex> lock(abandoned_mutex);
    abandoned->push_back(std::move(engine_));
  }
  return Status::Error(ErrorKind::kSystem,
                       "scatter kernel work still queued %lld ms after close began: its engine "
                       "and RX region are leaked rather than freed under it",
                       static_cast<long long>(drain_limit_.count()));
}

}  // namespace devmem
