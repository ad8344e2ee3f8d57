#include "plugin/cuda/dmabuf_export.h"

#include "plugin/cuda/nic_write_ordering.h"

namespace devmem {

Result<DmabufExporter> DmabufExporter::ForNicReceive(int gpu, uint64_t ptr, uint64_t bytes,
                                                     std::string what) {
  Result<std::vector<DmabufMapping>> mappings = NicWriteOrdering::Process().ReceiveMappingsFor(gpu);
  if (!mappings.ok()) return mappings.status();
  ExportFn export_fn = [gpu, ptr, bytes](DmabufMapping mapping) -> Result<int> {
    Result<const CudaDriver*> driver = CudaDriver::Get();
    if (!driver.ok()) return driver.status();
    Result<ScopedDeviceContext> context = driver.value()->EnterDevice(gpu);
    if (!context.ok()) return context.status();
    return driver.value()->ExportDmabuf(ptr, bytes, mapping);
  };
  return DmabufExporter(std::move(what), std::move(mappings).value(), std::move(export_fn));
}

Result<ExportedDmabuf> DmabufExporter::Next() {
  while (next_ < mappings_.size()) {
    const DmabufMapping mapping = mappings_[next_++];
    Result<int> fd = export_(mapping);
    if (fd.ok()) return ExportedDmabuf{UniqueFd(fd.value()), mapping};
    Refused(mapping, fd.status());
  }
  return Status::Error(ErrorKind::kSystem, "%s: no dmabuf mapping left to try (%s)", what_.c_str(),
                       refusals_.empty() ? "none allowed" : refusals_.c_str());
}

void DmabufExporter::Refused(DmabufMapping mapping, const Status& why) {
  if (!refusals_.empty()) refusals_ += "; ";
  refusals_ += std::string(DmabufMappingName(mapping)) + " mapping refused: " + why.message();
}

}  // namespace devmem
