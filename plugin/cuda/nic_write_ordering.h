// Ordering the NIC's writes into GPU memory before a GPU engine reads them (finding N1).
//
// Devmem RX is GPUDirect RDMA without the verbs: the NIC writes payload into the GPU's RX region
// and its completion into host memory. Those writes go to different places, so nothing orders
// them against each other; the CPU can see the completion, recvmsg() can hand the plugin the
// frag, and a kernel launched then can read bytes still in flight inside the GPU. NCCL flushes
// in that case before its kernels read (NVIDIA/nccl v2.28.9 src/transport/net.cc:1529-1563,
// the `needFlush` decided by ncclTopoNeedFlush, src/graph/paths.cc:511-530); here every GPU
// consumer of the RX region runs a NicWriteBarrier first.
//
// The rule, one decision per GPU per process, logged once:
//   - CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WRITES_ORDERING >= OWNER: the GPU consumes NIC writes
//     in order by itself, and cuFlushGPUDirectRDMAWrites(TO_OWNER) is a no-op there (cuda.h,
//     cuFlushGPUDirectRDMAWrites: "If the scope equals or lies within the scope indicated by
//     ..._WRITES_ORDERING, the call will be a no-op"). Not needed.
//   - below OWNER (NONE): flush with cuFlushGPUDirectRDMAWrites(TO_OWNER) before every GPU read.
//     This is NCCL's "Flush is required on Ampere and earlier" (paths.cc:520-521) said by the
//     driver instead of the compute capability, so a GPU of any generation that reports NONE is
//     flushed too. Without that entry point (or its FLUSH_WRITES_OPTIONS bit): devmem RX into
//     the GPU is refused rather than read unordered.
//   - A coherent host (NVLink-C2C: GH200, GB200) has two paths into GPU memory. NCCL forces a
//     flush where the NIC reaches the GPU over PCIe while completions take C2C (paths.cc:522-528,
//     the same case where it exports with the PCIe mapping, paths.cc:477-480), and orders it
//     with an RDMA read through the NIC (net_ib.cc:2429-2462). CUDA cannot: on such platforms the
//     driver reports ALL_DEVICES and the flush is a no-op (cuda.h, cuFlushGPUDirectRDMAWrites:
//     "those paths as belonging to separate ordering domains"), and devmem has no NIC-side read.
//     So RX there never uses the PCIe BAR1 mapping (ReceiveMappings below): with the default
//     mapping the NIC writes GPU memory through the CPU, the path its completions take.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "plugin/core/status.h"
#include "plugin/cuda/cuda_driver.h"

namespace devmem {

// CUGPUDirectRDMAWritesOrdering (cuda.h).
inline constexpr int kRdmaWritesOrderingNone = 0;
inline constexpr int kRdmaWritesOrderingOwner = 100;
inline constexpr int kRdmaWritesOrderingAllDevices = 200;
// CU_FLUSH_GPU_DIRECT_RDMA_WRITES_OPTION_HOST (cuda.h): cuFlushGPUDirectRDMAWrites works.
inline constexpr int kFlushWritesOptionHost = 1 << 0;

// What the driver says about one GPU.
struct GpuWriteOrderingFacts {
  int compute_major = 0;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR (75)
  int compute_minor = 0;  // ..._MINOR (76)
  int rdma_writes_ordering = kRdmaWritesOrderingNone;  // ..._GPU_DIRECT_RDMA_WRITES_ORDERING (118)
  int flush_options = 0;  // ..._GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS (117), a bitmask
  // The GPU's link to the CPU is coherent. NCCL reads NVML's active C2C links (src/graph/xml.cc
  // :824-852); libcuda alone says it through CU_DEVICE_ATTRIBUTE_HOST_NATIVE_ATOMIC_SUPPORTED
  // (86), "link between the device and the host supports all native atomic operations", which
  // only a coherent CPU-GPU link (NVLink-C2C) does.
  bool coherent_host = false;
};

enum class NicWriteFlush {
  kNotNeeded,
  kFlushToOwner,  // cuFlushGPUDirectRDMAWrites(TARGET_CURRENT_CTX, TO_OWNER) before each read
  kCannotOrder,   // a flush is needed and the driver offers none: no devmem RX into this GPU
};

struct NicWriteFlushDecision {
  NicWriteFlush action = NicWriteFlush::kNotNeeded;
  std::string reason;  // "flush needed: GPU sm_80 without GPU_DIRECT_RDMA_WRITES_ORDERING ..."
};

// The decision table above, for NIC writes through the mapping ReceiveMappings() allows.
NicWriteFlushDecision DecideNicWriteFlush(const GpuWriteOrderingFacts& facts);

// The dmabuf mappings an RX region of this GPU may be exported with, in the order to try them:
// the default only on a coherent host (see above), PCIe BAR1 first elsewhere (the driver refuses
// that export on every host that is not coherent, NVIDIA open-gpu-kernel-modules osapi.c
// RmDmabufGetClientAndDevice, so the default is what binds there today).
std::vector<DmabufMapping> ReceiveMappings(const GpuWriteOrderingFacts& facts);

// What only a GPU answers: the product's is the CUDA driver, tests give their own.
class GpuWriteOrderingSource {
 public:
  virtual ~GpuWriteOrderingSource() = default;
  virtual Result<GpuWriteOrderingFacts> Facts(int gpu) const = 0;
  // cuFlushGPUDirectRDMAWrites(TO_OWNER) in the context that owns `gpu`'s RX memory (its
  // primary context, where plugin/cuda/gpu_region.cc allocates).
  virtual Status FlushToOwner(int gpu) const = 0;
};

// The CUDA driver's answers.
class CudaWriteOrderingSource final : public GpuWriteOrderingSource {
 public:
  Result<GpuWriteOrderingFacts> Facts(int gpu) const override;
  Status FlushToOwner(int gpu) const override;
};

// What a GPU consumer runs between "every frag of a message arrived" and "a GPU engine may read
// them". Copyable; a host region's (gpu < 0) does nothing.
class NicWriteBarrier final {
 public:
  NicWriteBarrier() = default;  // host memory: the CPU reads what the kernel's recvmsg copied
  Status BeforeGpuReads() const {
    return action_ == NicWriteFlush::kFlushToOwner ? source_->FlushToOwner(gpu_) : Status::Ok();
  }
  bool flushes() const { return action_ == NicWriteFlush::kFlushToOwner; }

 private:
  friend class NicWriteOrdering;
  NicWriteBarrier(const GpuWriteOrderingSource* source, int gpu, NicWriteFlush action)
      : source_(source), gpu_(gpu), action_(action) {}
  const GpuWriteOrderingSource* source_ = nullptr;
  int gpu_ = -1;
  NicWriteFlush action_ = NicWriteFlush::kNotNeeded;
};

// The policy object: decides once per GPU (through the source), logs the decision and its
// reason once, and hands out barriers and RX mappings.
class NicWriteOrdering final {
 public:
  // The process's, on the CUDA driver.
  static NicWriteOrdering& Process();
  explicit NicWriteOrdering(const GpuWriteOrderingSource* source) : source_(source) {}
  NicWriteOrdering(const NicWriteOrdering&) = delete;
  NicWriteOrdering& operator=(const NicWriteOrdering&) = delete;

  // The barrier for consumers of `gpu`'s RX memory (gpu < 0: host memory, a no-op). An error
  // where the NIC's writes cannot be ordered (kCannotOrder) or the driver cannot say.
  Result<NicWriteBarrier> BarrierFor(int gpu);
  // ReceiveMappings() of `gpu`; the same error as BarrierFor() where writes cannot be ordered.
  Result<std::vector<DmabufMapping>> ReceiveMappingsFor(int gpu);

 private:
  struct Decided {
    GpuWriteOrderingFacts facts;
    NicWriteFlushDecision decision;
  };
  Result<Decided> Decide(int gpu);

  const GpuWriteOrderingSource* source_;
  std::mutex mutex_;
  std::map<int, Decided> decided_;  // by GPU ordinal; only grows (a handful of GPUs)
};

}  // namespace devmem
