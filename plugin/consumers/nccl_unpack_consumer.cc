#include "plugin/consumers/nccl_unpack_consumer.h"

#include <optional>

#include "plugin/cuda/cuda_driver.h"

namespace devmem {

Result<std::unique_ptr<NcclUnpackConsumer>> NcclUnpackConsumer::Create(const RxRegion* region) {
  // The metadata is pinned host memory mapped for the region's GPU: allocated in its context.
  std::optional<ScopedDeviceContext> context;
  if (region->gpu() >= 0) {
    Result<const CudaDriver*> cuda = CudaDriver::Get();
    if (!cuda.ok()) return cuda.status();
    Result<ScopedDeviceContext> entered = cuda.value()->EnterDevice(region->gpu());
    if (!entered.ok()) return entered.status();
    context.emplace(std::move(entered).value());
  }
  Result<NicWriteBarrier> barrier = NicWriteOrdering::Process().BarrierFor(region->gpu());
  if (!barrier.ok()) return barrier.status();
  Result<std::unique_ptr<unpack::UnpackQueue>> queue = unpack::UnpackQueue::Create(
      region->bounce_base(), region->bounce_offset(), region->bytes(), barrier.value());
  if (!queue.ok()) return queue.status().WithContext("NCCL unpack metadata");
  return std::unique_ptr<NcclUnpackConsumer>(new NcclUnpackConsumer(std::move(queue).value()));
}

Status NcclUnpackConsumer::Reserve(ConsumerJob* job) {
  Result<uint32_t> slot = queue_->Claim();
  if (!slot.ok()) return slot.status();
  job->slot = slot.value();
  job->has_slot = true;
  return Status::Ok();
}

void NcclUnpackConsumer::Unreserve(ConsumerJob* job) {
  if (!job->has_slot) return;
  // Only ever the latest claim (PostRecv gives it back before anything else is posted).
  (void)queue_->Unclaim(job->slot);
  job->has_slot = false;
}

Result<bool> NcclUnpackConsumer::Start(const HeldMessage& message, ConsumerJob* job) {
  if (!job->has_slot) {
    return Status::Error(ErrorKind::kInternal, "an NCCL unpack step without a slot");
  }
  // An empty step publishes cnt = 0: NCCL's kernel still advances its head for it.
  DEVMEM_RETURN_IF_ERROR(queue_->Publish(job->slot, message.tables, message.table_count));
  job->started = true;
  return true;
}

void NcclUnpackConsumer::Retire(ConsumerJob* job) {
  if (!job->has_slot) return;
  queue_->Consumed(job->slot);
  job->has_slot = false;
}

}  // namespace devmem
