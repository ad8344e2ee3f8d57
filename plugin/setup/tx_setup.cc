#include "plugin/setup/tx_setup.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "plugin/core/log.h"
#include "plugin/cuda/cuda_driver.h"
#include "plugin/devmem/netdev_netlink.h"

namespace devmem {

namespace {
// dmabuf exports and bind-tx work in host pages (64 KiB on some aarch64 kernels).
uint64_t PageBytes() {
  const long page = sysconf(_SC_PAGESIZE);
  return page > 0 ? static_cast<uint64_t>(page) : 4096;
}
}  // namespace

Status ProbeNetmemTx(int ifindex) {
  UniqueFd probe(static_cast<int>(syscall(SYS_memfd_create, "devmem-tx-probe", MFD_CLOEXEC)));
  if (!probe.valid() || ftruncate(probe.get(), static_cast<off_t>(PageBytes())) != 0) {
    return Status::Errno(errno, "memfd for the netmem TX probe");
  }
  BindRefusal refusal;
  Result<TxBinding> binding = TxBinding::Bind(ifindex, probe.get(), &refusal);
  if (binding.ok()) return Status::Ok();  // bound (and dropped again): surely ready
  // netdev_nl_bind_tx_doit (net/core/netdev-genl.c) checks the device (ENODEV), its netmem TX
  // support (EOPNOTSUPP with an extack) and its DMA device before net_devmem_bind_dmabuf
  // (net/core/devmem.c) takes the fd: dma_buf_get refuses a memfd with EINVAL and no extack
  // (drivers/dma-buf/dma-buf.c, !is_dma_buf_file). Only that answer means "everything but the
  // fake dmabuf passed"; any other (ENODEV for a NIC absent or detached, EPERM, ENOMEM, a
  // kernel without bind-tx) is a reason not to send from GPU memory.
  if (refusal.error == EINVAL && refusal.extack.empty()) return Status::Ok();
  return binding.status();
}

std::string TxUnavailableReason(const NetDevice& device, bool gpu_dmabuf_ok,
                                const std::string& gpu_reason) {
  if (device.loopback) return "loopback: no NIC to send from device memory";
  if (!gpu_dmabuf_ok) return gpu_reason;
  Status probe = ProbeNetmemTx(device.ifindex);
  if (!probe.ok()) return "bind-tx refused: " + probe.message();
  return "";
}

std::vector<std::string> PlanTransmitPaths(const std::vector<NetDevice>& devices) {
  // The GPU side once: any GPU of this host whose memory exports as a dmabuf.
  bool gpu_ok = false;
  std::string gpu_reason;
  const bool any_nic =
      std::any_of(devices.begin(), devices.end(), [](const NetDevice& d) { return !d.loopback; });
  if (any_nic) {
    Result<const CudaDriver*> driver = CudaDriver::Get();
    Result<int> count = driver.ok() ? driver.value()->DeviceCount() : Result<int>(driver.status());
    if (!count.ok()) {
      gpu_reason = "no CUDA driver (" + count.status().message() + ")";
    } else if (count.value() == 0) {
      gpu_reason = "no GPU";
    } else {
      gpu_reason = "no GPU exports its memory as a dmabuf (CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED)";
      for (int gpu = 0; gpu < count.value() && !gpu_ok; ++gpu) {
        Result<bool> supported = driver.value()->DmaBufSupported(gpu);
        gpu_ok = supported.ok() && supported.value();
      }
    }
  }
  std::vector<std::string> reasons;
  for (const NetDevice& device : devices) {
    reasons.push_back(TxUnavailableReason(device, gpu_ok, gpu_reason));
    if (reasons.back().empty()) {
      log::Info(log::kInit,
                "NIC %s: devmem TX: CUDA send buffers are bound for transmit and sent from GPU "
                "memory",
                device.name.c_str());
    } else {
      log::Info(log::kInit,
                "NIC %s: CUDA send buffers stage through host memory (no devmem TX: %s)",
                device.name.c_str(), reasons.back().c_str());
    }
  }
  return reasons;
}

TxBinderOps RealTxBinderOps() {
  TxBinderOps ops;
  ops.allocation_of = [](uint64_t address) -> Result<TxBinderOps::Allocation> {
    Result<const CudaDriver*> driver = CudaDriver::Get();
    if (!driver.ok()) return driver.status();
    Result<CudaDriver::AllocationRange> range = driver.value()->AllocationOf(address);
    if (!range.ok()) return range.status();
    return TxBinderOps::Allocation{range->base, range->bytes, range->buffer_id};
  };
  ops.export_dmabuf = [](uint64_t base, size_t bytes,
                          DmabufMapping mapping) -> Result<UniqueFd> {
    Result<const CudaDriver*> driver = CudaDriver::Get();
    if (!driver.ok()) return driver.status();
    Result<int> fd = driver.value()->ExportDmabuf(base, bytes, mapping);
    if (!fd.ok()) return fd.status();
    UniqueFd owned(fd.value());
    // The exporter decides the fd's flags; no child, exec'd or not, needs this one.
    if (fcntl(owned.get(), F_SETFD, FD_CLOEXEC) != 0) {
      return Status::Errno(errno, "close-on-exec on the exported dmabuf");
    }
    return owned;
  };
  ops.bind = [](int ifindex, int dmabuf_fd) -> Result<TxBinderOps::Bound> {
    Result<TxBinding> binding = TxBinding::Bind(ifindex, dmabuf_fd);
    if (!binding.ok()) return binding.status();
    const uint32_t id = binding->dmabuf_id();
    return TxBinderOps::Bound{std::make_shared<TxBinding>(std::move(binding).value()), id};
  };
  return ops;
}

TxBinder& TxBinder::Process() {
  static TxBinder* binder = new TxBinder(RealTxBinderOps());  // never destroyed: comms may
  return *binder;                                             // outlive static destructors
}

Result<TxMapping> TxBinder::Map(int ifindex, const void* data, size_t size) {
  const auto address = reinterpret_cast<uint64_t>(data);
  Result<TxBinderOps::Allocation> allocation = ops_.allocation_of(address);
  if (!allocation.ok()) {
    return allocation.status().WithContext(
        Format("finding the CUDA allocation of send buffer %p", data));
  }
  const uint64_t base = allocation->base;
  if (address < base || address - base + size > allocation->bytes) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "send buffer [%p, +%zu) is not inside one CUDA allocation ([0x%llx, "
                         "+%zu))",
                         data, size, static_cast<unsigned long long>(base), allocation->bytes);
  }
  const uint64_t page = PageBytes();
  if (base % page != 0) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "the CUDA allocation at 0x%llx is not page-aligned: it cannot be "
                         "exported as a dmabuf",
                         static_cast<unsigned long long>(base));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = entries_.begin(); it != entries_.end();) {  // forget unbound allocations
    it = it->second.binding.expired() ? entries_.erase(it) : std::next(it);
  }
  Entry& entry = entries_[{ifindex, base}];
  std::shared_ptr<const void> binding = entry.binding.lock();
  // The same base may be a new allocation (freed and allocated again while a registration of
  // the old one lives): its size or CUDA buffer id tells.
  if (binding == nullptr || entry.bytes != allocation->bytes ||
      entry.buffer_id != allocation->buffer_id) {
    // Pages of the allocation, rounded up: the export and bind work on whole pages.
    const size_t bytes = (allocation->bytes + page - 1) / page * page;
    // The NIC only reads a TX buffer: the PCIe (BAR1) mapping first, as NCCL's GDR does, and
    // the driver's default where the export or bind-tx refuses it. On coherent (Grace/C2C)
    // hosts NVIDIA's nv_dma_buf_attach refuses a PCIe-mapped export with 524 (ENOTSUPP) at
    // bind time (open-gpu-kernel-modules kernel-open/nvidia/nv-dmabuf.c); elsewhere the driver
    // may refuse the PCIe export itself.
    std::string refusals;
    Result<TxBinderOps::Bound> bound =
        Status::Error(ErrorKind::kInternal, "no dmabuf mapping tried");
    for (DmabufMapping mapping : {DmabufMapping::kPcieBar1, DmabufMapping::kDefault}) {
      Result<UniqueFd> fd = ops_.export_dmabuf(base, bytes, mapping);
      if (!fd.ok()) {
        refusals += Format("%s%s mapping: export refused: %s", refusals.empty() ? "" : "; ",
                           DmabufMappingName(mapping), fd.status().message().c_str());
        continue;
      }
      bound = ops_.bind(ifindex, fd->get());
      if (bound.ok()) {
        if (!refusals.empty()) {
          log::Info(log::kInit, "devmem TX: CUDA allocation 0x%llx bound with the %s mapping (%s)",
                    static_cast<unsigned long long>(base), DmabufMappingName(mapping),
                    refusals.c_str());
        }
        break;
      }
      refusals += Format("%s%s mapping: bind-tx refused: %s", refusals.empty() ? "" : "; ",
                         DmabufMappingName(mapping), bound.status().message().c_str());
    }
    if (!bound.ok()) {
      return Status::Error(ErrorKind::kSystem,
                           "exporting and binding CUDA allocation [0x%llx, +%zu) for devmem TX "
                           "on ifindex %d: %s",
                           static_cast<unsigned long long>(base), bytes, ifindex,
                           refusals.c_str());
    }
    // The binding holds the dmabuf itself (the kernel took its reference); our fd can go.
    binding = bound->owner;
    entry = Entry{base, allocation->bytes, allocation->buffer_id, bound->dmabuf_id, binding};
  }
  return TxMapping{binding, entry.dmabuf_id, address - base};
}

size_t TxBinder::live_bindings() {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<size_t>(std::count_if(
      entries_.begin(), entries_.end(), [](const auto& e) { return !e.second.binding.expired(); }));
}

}  // namespace devmem
