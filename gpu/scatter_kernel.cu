// The scatter kernel and its engine. Each warp copies one op at a time (grid-stride over ops):
// 16-byte vector loads and stores when source and destination share their alignment modulo 16
// (the common case: page-aligned frags into NCCL's aligned buffers), a byte path otherwise, so
// any offset and length is correct.
#include <cuda_runtime.h>

#include <array>
#include <cstring>

#include "gpu/scatter_engine.h"

namespace devmem::gpu {
namespace {

constexpr int kThreadsPerBlock = 256;
constexpr int kWarpsPerBlock = kThreadsPerBlock / 32;
constexpr size_t kSlots = 32;  // >= requests a comm keeps in flight

__global__ void ScatterKernel(const ScatterOp* __restrict__ ops, uint32_t count,
                              const char* __restrict__ region, char* __restrict__ dst) {
  const uint32_t lane = threadIdx.x & 31u;
  const uint32_t warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const uint32_t warps = (gridDim.x * blockDim.x) >> 5;
  for (uint32_t i = warp; i < count; i += warps) {
    const ScatterOp op = ops[i];
    const char* s = region + op.src_offset;
    char* d = dst + op.dst_offset;
    const uint32_t len = op.length;
    const uintptr_t s_mis = reinterpret_cast<uintptr_t>(s) & 15u;
    const uintptr_t d_mis = reinterpret_cast<uintptr_t>(d) & 15u;
    if (s_mis == d_mis) {
      uint32_t head = static_cast<uint32_t>((16u - d_mis) & 15u);
      if (head > len) head = len;
      for (uint32_t b = lane; b < head; b += 32) d[b] = s[b];
      const uint32_t vectors = (len - head) / 16u;
      const uint4* vs = reinterpret_cast<const uint4*>(s + head);
      uint4* vd = reinterpret_cast<uint4*>(d + head);
      for (uint32_t v = lane; v < vectors; v += 32) vd[v] = vs[v];
      for (uint32_t b = head + vectors * 16u + lane; b < len; b += 32) d[b] = s[b];
    } else {
      for (uint32_t b = lane; b < len; b += 32) d[b] = s[b];
    }
  }
}

Status CudaCheck(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::Ok();
  return Status::Error(ErrorKind::kSystem, "%s: %s (%s)", what, cudaGetErrorString(err),
                       cudaGetErrorName(err));
}

class KernelScatterEngine final : public ScatterEngine {
 private:
  struct Slot;

 public:
  KernelScatterEngine(int device, size_t max_ops) : device_(device), max_ops_(max_ops) {}
  ~KernelScatterEngine() override {
    if (cudaSetDevice(device_) != cudaSuccess) return;
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
    for (Slot& slot : slots_) {
      if (slot.event != nullptr) cudaEventDestroy(slot.event);
      if (slot.device_ops != nullptr) cudaFree(slot.device_ops);
      if (slot.host_ops != nullptr) cudaFreeHost(slot.host_ops);
    }
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  Status Init() {
    DEVMEM_RETURN_IF_ERROR(CudaCheck(cudaSetDevice(device_), "cudaSetDevice"));
    DEVMEM_RETURN_IF_ERROR(
        CudaCheck(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate"));
    int sms = 0;
    DEVMEM_RETURN_IF_ERROR(CudaCheck(
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device_), "SM count"));
    max_blocks_ = sms > 0 ? sms * 4 : 132;
    for (Slot& slot : slots_) {
      DEVMEM_RETURN_IF_ERROR(CudaCheck(
          cudaEventCreateWithFlags(&slot.event, cudaEventDisableTiming), "cudaEventCreate"));
    }
    return Status::Ok();
  }

  // Op buffers grow on demand (powers of two): NCCL steps need a few hundred ops, and a comm
  // per channel and peer must not pin megabytes it never uses. The slot is idle here.
  Status Reserve(Slot& slot, size_t count) {
    if (count <= slot.capacity) return Status::Ok();
    size_t capacity = 256;
    while (capacity < count) capacity *= 2;
    if (capacity > max_ops_) capacity = max_ops_;
    if (slot.device_ops != nullptr) cudaFree(slot.device_ops);
    if (slot.host_ops != nullptr) cudaFreeHost(slot.host_ops);
    slot.device_ops = nullptr;
    slot.host_ops = nullptr;
    slot.capacity = 0;
    DEVMEM_RETURN_IF_ERROR(CudaCheck(
        cudaMallocHost(reinterpret_cast<void**>(&slot.host_ops), capacity * sizeof(ScatterOp)),
        "cudaMallocHost for scatter ops"));
    DEVMEM_RETURN_IF_ERROR(CudaCheck(
        cudaMalloc(reinterpret_cast<void**>(&slot.device_ops), capacity * sizeof(ScatterOp)),
        "cudaMalloc for scatter ops"));
    slot.capacity = capacity;
    return Status::Ok();
  }

  Result<ScatterTicket> Submit(const ScatterOp* ops, size_t count, const void* region_dptr,
                               void* dst_dptr) override {
    if (count > max_ops_) {
      return Status::Error(ErrorKind::kInvalidArgument, "%zu scatter ops, engine holds %zu", count,
                           max_ops_);
    }
    Slot& slot = slots_[next_ % kSlots];
    if (slot.busy) {
      Result<bool> done = Query(slot);
      if (!done.ok()) return done.status();
      if (!done.value()) {
        return Status::Error(ErrorKind::kInternal, "all %zu scatter slots are in flight", kSlots);
      }
    }
    DEVMEM_RETURN_IF_ERROR(CudaCheck(cudaSetDevice(device_), "cudaSetDevice"));
    DEVMEM_RETURN_IF_ERROR(Reserve(slot, count));
    if (count > 0) memcpy(slot.host_ops, ops, count * sizeof(ScatterOp));
    if (count > 0) {
      DEVMEM_RETURN_IF_ERROR(
          CudaCheck(cudaMemcpyAsync(slot.device_ops, slot.host_ops, count * sizeof(ScatterOp),
                                    cudaMemcpyHostToDevice, stream_),
                    "copying scatter ops"));
      const size_t wanted = (count + kWarpsPerBlock - 1) / kWarpsPerBlock;
      const int blocks =
          static_cast<int>(wanted < static_cast<size_t>(max_blocks_) ? wanted : max_blocks_);
      ScatterKernel<<<blocks, kThreadsPerBlock, 0, stream_>>>(
          slot.device_ops, static_cast<uint32_t>(count), static_cast<const char*>(region_dptr),
          static_cast<char*>(dst_dptr));
      DEVMEM_RETURN_IF_ERROR(CudaCheck(cudaGetLastError(), "launching the scatter kernel"));
    }
    DEVMEM_RETURN_IF_ERROR(CudaCheck(cudaEventRecord(slot.event, stream_), "cudaEventRecord"));
    slot.busy = true;
    ++slot.generation;
    ScatterTicket ticket{static_cast<uint32_t>(next_ % kSlots), slot.generation};
    ++next_;
    return ticket;
  }

  Result<bool> Done(const ScatterTicket& ticket) override {
    if (ticket.slot >= kSlots) {
      return Status::Error(ErrorKind::kInvalidArgument, "scatter ticket slot %u", ticket.slot);
    }
    Slot& slot = slots_[ticket.slot];
    if (slot.generation != ticket.generation) return true;  // the slot was reused after it ended
    if (!slot.busy) return true;
    return Query(slot);
  }

  Status Synchronize() override {
    DEVMEM_RETURN_IF_ERROR(CudaCheck(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"));
    for (Slot& slot : slots_) slot.busy = false;
    return Status::Ok();
  }

 private:
  struct Slot {
    ScatterOp* host_ops = nullptr;
    ScatterOp* device_ops = nullptr;
    size_t capacity = 0;
    cudaEvent_t event = nullptr;
    bool busy = false;
    uint64_t generation = 0;
  };

  Result<bool> Query(Slot& slot) {
    cudaError_t err = cudaEventQuery(slot.event);
    if (err == cudaErrorNotReady) return false;
    DEVMEM_RETURN_IF_ERROR(CudaCheck(err, "the scatter kernel"));
    slot.busy = false;
    return true;
  }

  const int device_;
  const size_t max_ops_;
  int max_blocks_ = 0;
  cudaStream_t stream_ = nullptr;
  std::array<Slot, kSlots> slots_{};
  uint64_t next_ = 0;
};

}  // namespace

bool BuiltWithCudaKernels() { return true; }

Result<std::unique_ptr<ScatterEngine>> CreateCudaScatterEngine(int device, size_t max_ops) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    return Status::Error(ErrorKind::kSystem, "no CUDA device for the scatter engine: %s",
                         err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
  }
  auto engine = std::make_unique<KernelScatterEngine>(device, max_ops);
  DEVMEM_RETURN_IF_ERROR(engine->Init());
  return std::unique_ptr<ScatterEngine>(std::move(engine));
}

}  // namespace devmem::gpu
