// Exporting GPU memory as a dmabuf for a NIC, mapping by mapping, until the NIC attaches one
// (finding N2).
//
// The mapping is fixed at export (cuMemGetHandleForAddressRange flags), but whether it works is
// only known when the NIC's driver attaches the dmabuf, inside bind-rx/bind-tx. On a coherent
// host (Grace: GH200, GB200) the export with the PCIe BAR1 mapping succeeds, and then
// NVIDIA's nv_dma_buf_attach refuses it with -ENOTSUPP (524) unless the NIC may reach the GPU
// directly ("dma-buf attach failed: topology not supported for mapping type FORCE_PCIE",
// open-gpu-kernel-modules kernel-open/nvidia/nv-dmabuf.c nv_dma_buf_attach); net/core/devmem.c
// net_devmem_bind_dmabuf returns that errno with "Failed to bind dmabuf to device". Older
// drivers refuse in nv_dma_buf_map instead, which the bind sees as ENOMEM "Failed to map dmabuf
// attachment". So every refusal of a mapping, at export or at bind, moves on to the next one.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "plugin/core/log.h"
#include "plugin/core/status.h"
#include "plugin/core/unique_fd.h"
#include "plugin/cuda/cuda_driver.h"

namespace devmem {

struct ExportedDmabuf {
  UniqueFd fd;
  DmabufMapping mapping = DmabufMapping::kDefault;
};

// Yields one export per mapping, in order, skipping mappings whose export fails, and keeps every
// refusal so the final error (no mapping left) names them all.
class DmabufExporter final {
 public:
  // The export itself: the product's runs cuMemGetHandleForAddressRange, tests give their own.
  using ExportFn = std::function<Result<int>(DmabufMapping)>;
  DmabufExporter(std::string what, std::vector<DmabufMapping> mappings, ExportFn export_fn)
      : what_(std::move(what)), mappings_(std::move(mappings)), export_(std::move(export_fn)) {}

  // An RX region of GPU `gpu` at device address `ptr` (`bytes`, page-aligned): exported in the
  // GPU's primary context with the mappings NicWriteOrdering allows for RX (default only on a
  // coherent host). `what` names it in the log ("GPU 0's RX region for eth1").
  static Result<DmabufExporter> ForNicReceive(int gpu, uint64_t ptr, uint64_t bytes,
                                              std::string what);

  // The next mapping whose export succeeds, or the error naming every refusal once none is left.
  Result<ExportedDmabuf> Next();
  // The NIC refused the last export (bind-rx/bind-tx failed); Next() tries the next mapping.
  void Refused(DmabufMapping mapping, const Status& why);
  const std::string& what() const { return what_; }
  // "PCIe BAR1 mapping refused: <why>", joined by "; ", one per refusal so far.
  const std::string& refusals() const { return refusals_; }

 private:
  std::string what_;
  std::vector<DmabufMapping> mappings_;
  size_t next_ = 0;
  ExportFn export_;
  std::string refusals_;
};

// A dmabuf the NIC attached, with what the attach produced (an RxQueueBinding, a TX binding).
template <typename Attachment>
struct AttachedDmabuf {
  UniqueFd dmabuf;
  DmabufMapping mapping;
  Attachment attachment;
};

// Exports with each mapping in turn and hands the fd to `attach` (bind-rx or bind-tx) until one
// attaches; logs which mapping the NIC took and why earlier ones were refused. The error, when no
// mapping attaches, carries every refusal.
template <typename Attachment>
Result<AttachedDmabuf<Attachment>> AttachDmabuf(
    DmabufExporter exporter, const std::function<Result<Attachment>(int dmabuf_fd)>& attach) {
  for (;;) {
    Result<ExportedDmabuf> exported = exporter.Next();
    if (!exported.ok()) return exported.status();
    Result<Attachment> attached = attach(exported->fd.get());
    if (!attached.ok()) {
      exporter.Refused(exported->mapping, attached.status());
      continue;
    }
    const bool retried = !exporter.refusals().empty();
    log::Info(log::kInit, "NET/devmem: %s: dmabuf attached with the %s mapping%s%s%s",
              exporter.what().c_str(), DmabufMappingName(exported->mapping), retried ? " (" : "",
              exporter.refusals().c_str(), retried ? ")" : "");
    return AttachedDmabuf<Attachment>{std::move(exported->fd), exported->mapping,
                                      std::move(attached).value()};
  }
}

}  // namespace devmem
