#include "plugin/consumers/host_scatter_consumer.h"

namespace devmem {

Result<bool> HostScatterConsumer::Start(const HeldMessage& message, ConsumerJob* job) {
  if (region_->host_base() == nullptr) {
    return Status::Error(ErrorKind::kInternal, "host scatter over a region the CPU cannot read");
  }
  for (size_t t = 0; t < message.table_count; ++t) {
    DEVMEM_RETURN_IF_ERROR(HostScatter(*message.tables[t], region_->host_base(), region_->bytes(),
                                       message.host_dst, message.size));
  }
  job->started = true;
  return true;
}

}  // namespace devmem
