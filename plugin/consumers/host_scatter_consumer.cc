#include "plugin/consumers/host_scatter_consumer.h"

namespace devmem {

Status HostScatterConsumer::ScatterOnArrival(const OffsetTable& frags, char* dst,
                                             uint64_t size) const {
  if (region_->host_base() == nullptr) {
    return Status::Error(ErrorKind::kInternal, "host scatter over a region the CPU cannot read");
  }
  return HostScatter(frags, region_->host_base(), region_->bytes(), dst, size);
}

Result<bool> HostScatterConsumer::Start(const HeldMessage& message, ConsumerJob* job) {
  for (size_t t = 0; t < message.table_count; ++t) {
    DEVMEM_RETURN_IF_ERROR(ScatterOnArrival(*message.tables[t], message.host_dst, message.size));
  }
  job->started = true;
  return true;
}

}  // namespace devmem
