#include "plugin/cuda/nic_write_ordering.h"

#include <cstdio>

#include "plugin/core/log.h"

namespace devmem {
namespace {

std::string GpuName(const GpuWriteOrderingFacts& facts) {
  char name[32];
  snprintf(name, sizeof(name), "GPU sm_%d%d", facts.compute_major, facts.compute_minor);
  return name;
}

const char* OrderingName(int ordering) {
  if (ordering >= kRdmaWritesOrderingAllDevices) return "ALL_DEVICES";
  if (ordering >= kRdmaWritesOrderingOwner) return "OWNER";
  return "NONE";
}

}  // namespace

NicWriteFlushDecision DecideNicWriteFlush(const GpuWriteOrderingFacts& facts) {
  const std::string gpu = GpuName(facts);
  if (facts.rdma_writes_ordering >= kRdmaWritesOrderingOwner) {
    if (facts.coherent_host) {
      return {NicWriteFlush::kNotNeeded,
              "not needed: " + gpu + " on a coherent (C2C) host reports " +
                  "GPU_DIRECT_RDMA_WRITES_ORDERING=" + OrderingName(facts.rdma_writes_ordering) +
                  " and RX regions take the default dmabuf mapping, so the NIC writes GPU "
                  "memory through the CPU like its completions (the PCIe BAR1 mapping, a "
                  "second ordering domain CUDA cannot flush, is not used for RX)"};
    }
    return {NicWriteFlush::kNotNeeded, "not needed: " + gpu +
                                           " reports GPU_DIRECT_RDMA_WRITES_ORDERING=" +
                                           OrderingName(facts.rdma_writes_ordering)};
  }
  if ((facts.flush_options & kFlushWritesOptionHost) == 0) {
    return {NicWriteFlush::kCannotOrder,
            gpu + " without GPU_DIRECT_RDMA_WRITES_ORDERING needs a flush of the NIC's writes " +
                "before a kernel reads them, and its driver offers no " +
                "cuFlushGPUDirectRDMAWrites (GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS lacks HOST)"};
  }
  return {NicWriteFlush::kFlushToOwner,
          "flush needed: " + gpu +
              " without GPU_DIRECT_RDMA_WRITES_ORDERING; cuFlushGPUDirectRDMAWrites(TO_OWNER) "
              "runs before every GPU read of the RX region"};
}

std::vector<DmabufMapping> ReceiveMappings(const GpuWriteOrderingFacts& facts) {
  if (facts.coherent_host) return {DmabufMapping::kDefault};
  return {DmabufMapping::kPcieBar1, DmabufMapping::kDefault};
}

Result<GpuWriteOrderingFacts> CudaWriteOrderingSource::Facts(int gpu) const {
  Result<const CudaDriver*> driver = CudaDriver::Get();
  if (!driver.ok()) return driver.status();
  const CudaDriver* cuda = driver.value();
  // CUdevice_attribute values (cuda.h).
  constexpr int kComputeMajor = 75;
  constexpr int kComputeMinor = 76;
  constexpr int kHostNativeAtomic = 86;
  constexpr int kFlushWritesOptions = 117;
  constexpr int kWritesOrdering = 118;
  GpuWriteOrderingFacts facts;
  struct Query {
    int attribute;
    const char* name;
    int* out;
  };
  int coherent = 0;
  const Query queries[] = {
      {kComputeMajor, "COMPUTE_CAPABILITY_MAJOR", &facts.compute_major},
      {kComputeMinor, "COMPUTE_CAPABILITY_MINOR", &facts.compute_minor},
      {kHostNativeAtomic, "HOST_NATIVE_ATOMIC_SUPPORTED", &coherent},
      {kFlushWritesOptions, "GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS", &facts.flush_options},
      {kWritesOrdering, "GPU_DIRECT_RDMA_WRITES_ORDERING", &facts.rdma_writes_ordering},
  };
  for (const Query& query : queries) {
    Result<int> value = cuda->DeviceAttribute(gpu, query.attribute, query.name);
    if (!value.ok()) return value.status();
    *query.out = value.value();
  }
  facts.coherent_host = coherent != 0;
  return facts;
}

Status CudaWriteOrderingSource::FlushToOwner(int gpu) const {
  Result<const CudaDriver*> driver = CudaDriver::Get();
  if (!driver.ok()) return driver.status();
  Result<ScopedDeviceContext> context = driver.value()->EnterDevice(gpu);
  if (!context.ok()) return context.status();
  return driver.value()->FlushGpuDirectRdmaWritesToOwner();
}

NicWriteOrdering& NicWriteOrdering::Process() {
  // Never destroyed: comms may outlive static destructors.
  static const CudaWriteOrderingSource* source = new CudaWriteOrderingSource();  // NOLINT
  static NicWriteOrdering* ordering = new NicWriteOrdering(source);              // NOLINT
  return *ordering;
}

Result<NicWriteOrdering::Decided> NicWriteOrdering::Decide(int gpu) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto it = decided_.find(gpu); it != decided_.end()) return it->second;
  Result<GpuWriteOrderingFacts> facts = source_->Facts(gpu);
  if (!facts.ok()) {
    return facts.status().WithContext("GPU " + std::to_string(gpu) +
                                      ": ordering of NIC writes into its memory");
  }
  Decided decided{facts.value(), DecideNicWriteFlush(facts.value())};
  if (decided.decision.action == NicWriteFlush::kCannotOrder) {
    log::Warn("GPU %d: %s; devmem RX into it is refused", gpu,
              decided.decision.reason.c_str());
  } else {
    log::Info(log::kInit, "GPU %d: ordering of NIC writes before GPU reads: %s", gpu,
              decided.decision.reason.c_str());
  }
  decided_.emplace(gpu, decided);
  return decided;
}

Result<NicWriteBarrier> NicWriteOrdering::BarrierFor(int gpu) {
  if (gpu < 0) return NicWriteBarrier();
  Result<Decided> decided = Decide(gpu);
  if (!decided.ok()) return decided.status();
  const NicWriteFlushDecision& decision = decided.value().decision;
  if (decision.action == NicWriteFlush::kCannotOrder) {
    return Status::Error(ErrorKind::kSystem, "GPU %d: %s", gpu, decision.reason.c_str());
  }
  return NicWriteBarrier(source_, gpu, decision.action);
}

Result<std::vector<DmabufMapping>> NicWriteOrdering::ReceiveMappingsFor(int gpu) {
  Result<Decided> decided = Decide(gpu);
  if (!decided.ok()) return decided.status();
  // Refused before anything is bound: no NIC should write where no reader can be ordered.
  if (decided.value().decision.action == NicWriteFlush::kCannotOrder) {
    return Status::Error(ErrorKind::kSystem, "GPU %d: %s", gpu,
                         decided.value().decision.reason.c_str());
  }
  return ReceiveMappings(decided.value().facts);
}

}  // namespace devmem
