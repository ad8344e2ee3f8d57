// Devmem TX setup (Linux 6.16+): which NICs may send from GPU memory, and the bind-tx of the
// GPU memory NCCL sends from.
//
// What NCCL registers on the send side (NCCL v2.28.9 src/transport/net.cc sendProxyConnect /
// sendProxySetup): one regMr per protocol buffer of a connection, each a slice of a CUDA
// allocation NCCL made for that connection (ncclCudaCalloc, cuMem where supported), plus user
// buffers under NCCL_GRAPH_REGISTER/LOCAL_REGISTER (off with our guards). NCCL hands us a
// dmabuf fd (regMrDmaBuf) only when we advertise NCCL_PTR_DMABUF, which we do not: one
// export of the whole allocation, bound once per NIC, covers every buffer NCCL carves from it,
// and a registration needs no fd of NCCL's. So the binder keys bindings by (NIC, CUDA
// allocation): the first registration in an allocation exports it (cuMemGetHandleForAddressRange)
// and binds it (bind-tx); later ones share that binding; it goes when the last registration
// that uses it is deregistered (its netlink socket closes, the kernel unbinds).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "plugin/core/net_device.h"
#include "plugin/core/status.h"
#include "plugin/core/unique_fd.h"
#include "plugin/cuda/cuda_driver.h"

namespace devmem {

// Whether a NIC may run devmem TX, decided once at init: empty when it may, else why not.
// Checks, cheapest first: loopback (never), a GPU whose memory exports as a dmabuf, and the
// driver's netmem TX support (ProbeNetmemTx).
std::string TxUnavailableReason(const NetDevice& device, bool gpu_dmabuf_ok,
                                const std::string& gpu_reason);

// TxUnavailableReason for every NIC (same order), with the GPU check made once (the CUDA
// driver, a GPU, CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED); logs one line per NIC saying which
// send path its CUDA buffers take and why.
std::vector<std::string> PlanTransmitPaths(const std::vector<NetDevice>& devices);

// bind-tx of a one-page memfd on `ifindex`. The kernel checks the device and the driver's
// netmem TX support before it looks at the fd (net/core/netdev-genl.c netdev_nl_bind_tx_doit),
// so a driver without it refuses with "Driver does not support netmem TX" (EOPNOTSUPP), a
// kernel without bind-tx refuses the command, and a ready driver fails only on the fake
// dmabuf (EINVAL without extack, from dma_buf_get). Ok: exactly that; otherwise the kernel's
// refusal, with its meaning (docs/bind-errors.md).
Status ProbeNetmemTx(int ifindex);

// A registration's view of its binding.
struct TxMapping {
  std::shared_ptr<const void> binding;  // keeps the binding and its dmabuf alive
  uint32_t dmabuf_id = 0;
  uint64_t data_offset = 0;  // the registered address's byte offset in the bound dmabuf
};

// The kernel, CUDA and the bind behind a seam: tests run the binder's bookkeeping on fakes; the
// process uses RealTxBinderOps().
struct TxBinderOps {
  struct Allocation {
    uint64_t base = 0;
    size_t bytes = 0;
    uint64_t buffer_id = 0;  // CUDA's id of the allocation (unique per process lifetime)
  };
  struct Bound {
    std::shared_ptr<const void> owner;  // unbinds when the last reference goes
    uint32_t dmabuf_id = 0;
  };
  std::function<Result<Allocation>(uint64_t address)> allocation_of;
  // Exports with one mapping (TxBinder::Map tries the PCIe mapping first, then the driver's
  // default where the export or the bind refuses it: Grace/C2C hosts, N2).
  std::function<Result<UniqueFd>(uint64_t base, size_t bytes, DmabufMapping mapping)>
      export_dmabuf;
  std::function<Result<Bound>(int ifindex, int dmabuf_fd)> bind;
};
// cuMemGetAddressRange, cuMemGetHandleForAddressRange (the caller's current context: NCCL's
// proxy thread has its GPU's) and TxBinding::Bind.
TxBinderOps RealTxBinderOps();

class TxBinder {
 public:
  explicit TxBinder(TxBinderOps ops) : ops_(std::move(ops)) {}
  // The process's binder over the real kernel and CUDA.
  static TxBinder& Process();

  // The binding that covers [data, data + size) on NIC `ifindex`, made on first use per
  // allocation. An error names the step that failed (allocation lookup, export, bind-tx with
  // the kernel's extack).
  Result<TxMapping> Map(int ifindex, const void* data, size_t size);
  // Live bindings (for logs and tests).
  size_t live_bindings();

 private:
  struct Entry {
    uint64_t base = 0;
    size_t bytes = 0;
    uint64_t buffer_id = 0;
    uint32_t dmabuf_id = 0;
    std::weak_ptr<const void> binding;
  };
  TxBinderOps ops_;
  std::mutex mutex_;
  std::map<std::pair<int, uint64_t>, Entry> entries_;  // (ifindex, allocation base)
};

}  // namespace devmem
