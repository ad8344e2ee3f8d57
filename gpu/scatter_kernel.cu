// The scatter kernel and its engine. Each warp copies one op at a time (grid-stride over ops);
// what each lane copies (the widest width source and destination share, with head and tail
// bytes) is gpu/scatter_copy.h, which a CPU test runs lane by lane.
#include <cuda_runtime.h>

#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <vector>

#include "gpu/scatter_copy.h"
#include "gpu/scatter_engine.h"
#include "plugin/cuda/cuda_driver.h"
#include "plugin/cuda/gpu_quarantine.h"

namespace devmem::gpu {
namespace {

// A CUDA runtime failure as a Status ("what: message (name)"). Also clears the thread's
// last-error slot, so that a later cudaGetLastError does not report the same failure again.
Status CudaCheck(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::Ok();
  (void)cudaGetLastError();
  return Status::Error(ErrorKind::kSystem, "%s: %s (%s)", what, cudaGetErrorString(err),
                       cudaGetErrorName(err));
}

constexpr uint32_t kWarpSize = 32;
constexpr uint32_t kThreadsPerBlock = 256;
constexpr uint32_t kWarpsPerBlock = kThreadsPerBlock / kWarpSize;

__global__ void __launch_bounds__(kThreadsPerBlock)
    ScatterKernel(const ScatterOp* __restrict__ ops, uint32_t count,
                  const char* __restrict__ region, char* __restrict__ dst) {
  const uint32_t thread = blockIdx.x * blockDim.x + threadIdx.x;
  ScatterOpsLane(ops, count, region, dst, thread / kWarpSize, gridDim.x * blockDim.x / kWarpSize,
                 threadIdx.x % kWarpSize, kWarpSize);
}

// The scatter stream of `device`, one for the whole process, created by the first engine there
// and never destroyed (engines of every receive comm share it; called with that device's
// primary context current). Why one: the driver aliases streams onto a small pool of
// hardware work queues (CUDA_DEVICE_MAX_CONNECTIONS; under MPS the clients share one pool, so
// each gets fewer), and work on a stream aliased onto the queue of NCCL's kernel waits behind
// that kernel, which spins until our work is done: a deadlock. On the H200 under MPS
// (perf/RESULTS.md, 2026-11-26) the engines of the receive comms NCCL connects later (its
// Simple-protocol connections, at 512 KiB) hung that way while the first ones ran. One stream,
// made when the first receive comm opens, keeps later comms from drawing that lot again. It
// is not the whole cure (the copy streams drew it next, same run, same size): what made every
// run pass was CUDA_DEVICE_MAX_CONNECTIONS=32 (WarnIfMpsSharesWorkQueues says so at run time);
// without MPS nothing hung.
Result<cudaStream_t> SharedScatterStream(int device) {
  static std::mutex mutex;
  static auto* const streams = new std::map<int, cudaStream_t>();  // NOLINT: process lifetime
  std::lock_guard<std::mutex> lock(mutex);
  auto found = streams->find(device);
  if (found != streams->end()) return found->second;
  // The highest priority: the kernels are short and NCCL's kernel waits for them.
  int least = 0, greatest = 0;
  DEVMEM_RETURN_IF_ERROR(CudaCheck(cudaDeviceGetStreamPriorityRange(&least, &greatest),
                                   "cudaDeviceGetStreamPriorityRange"));
  cudaStream_t stream = nullptr;
  DEVMEM_RETURN_IF_ERROR(
      CudaCheck(cudaStreamCreateWithPriority(&stream, cudaStreamNonBlocking, greatest),
                "cudaStreamCreateWithPriority"));
  (*streams)[device] = stream;
  return stream;
}

// Every entry point, the destructor included, runs inside the device's primary context
// (CudaDriver::EnterContext), which puts back the calling thread's own context and stream
// capture mode when it returns: NCCL's threads call it, and their CUDA state is NCCL's
// (plugin/cuda/cuda_driver.h, ScopedDeviceContext). The runtime calls below then act on that
// context; memory comes from the driver layer, so its frees honour the GPU quarantine.
class KernelScatterEngine final : public ScatterEngine {
 public:
  KernelScatterEngine(const CudaDriver* driver, size_t max_ops, size_t slots)
      : driver_(driver), max_ops_(max_ops), slot_count_(slots) {}

  ~KernelScatterEngine() override {
    // Without the context (creation failed before it was known) there is nothing to free.
    if (context_ == nullptr) return;
    // GPU work of the plugin was given up on: nothing is waited for or freed any more, this
    // engine's work may sit behind it (plugin/cuda/gpu_quarantine.h).
    if (GpuQuarantine::Process().stopped_freeing()) return;
    Result<ScopedDeviceContext> scope = driver_->EnterContext(context_);
    if (!scope.ok()) return;
    // Our own submissions only: the stream is shared with other engines. A receive comm's
    // consumer drained them within the GPU work limit before it let the engine go, so this
    // returns at once there; a kernel that failed (an error, not a hang) leaves nothing to wait
    // for either.
    (void)GpuQuarantine::Process().Wait("the scatter engine's submissions", "it began closing",
                                        std::chrono::milliseconds(0),
                                        [this] { return OwnSubmissionsDone(); });
    for (Slot& slot : slots_) {
      if (slot.event != nullptr) (void)cudaEventDestroy(slot.event);
    }
    if (device_ops_ != nullptr) driver_->Free(reinterpret_cast<uintptr_t>(device_ops_));
    if (host_ops_ != nullptr) driver_->HostFree(host_ops_);
  }

  Status Init(int device) {
    Result<void*> primary = driver_->PrimaryContext(device);
    if (!primary.ok()) return primary.status();
    Result<ScopedDeviceContext> scope = driver_->EnterContext(primary.value());
    if (!scope.ok()) return scope.status();
    context_ = primary.value();
    // Load the kernel now, in the context it will run in, as NCCL's ncclInitKernelsForDevice
    // does for its own: with lazy loading (the default since CUDA 12.2) the first launch would
    // load it on NCCL's proxy thread while NCCL's kernel spins waiting for that thread, and
    // loading may need a context synchronization that then never completes.
    cudaFuncAttributes attributes{};
    DEVMEM_RETURN_IF_ERROR(
        CudaCheck(cudaFuncGetAttributes(&attributes, reinterpret_cast<const void*>(&ScatterKernel)),
                  "loading the scatter kernel (cudaFuncGetAttributes)"));
    if (attributes.maxThreadsPerBlock < static_cast<int>(kThreadsPerBlock)) {
      return Status::Error(ErrorKind::kSystem,
                           "the scatter kernel runs at most %d threads per block on GPU %d, it "
                           "needs %u",
                           attributes.maxThreadsPerBlock, device, kThreadsPerBlock);
    }
    int sms = 0;
    DEVMEM_RETURN_IF_ERROR(CudaCheck(
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "SM count"));
    max_blocks_ = sms > 0 ? static_cast<uint32_t>(sms) * 4 : 1;
    Result<cudaStream_t> stream = SharedScatterStream(device);
    if (!stream.ok()) return stream.status();
    stream_ = stream.value();
    // Every slot's op buffers, once (Create checked that this product fits): pinned host memory
    // the op copies read, device memory the kernel reads.
    const size_t bytes = slot_count_ * max_ops_ * sizeof(ScatterOp);
    void* host = nullptr;
    DEVMEM_RETURN_IF_ERROR(driver_->HostAlloc(bytes, &host).WithContext("the scatter ops"));
    host_ops_ = static_cast<ScatterOp*>(host);
    CudaDriver::CUdeviceptr device_ops = 0;
    DEVMEM_RETURN_IF_ERROR(driver_->Allocate(bytes, &device_ops).WithContext("the scatter ops"));
    device_ops_ = reinterpret_cast<ScatterOp*>(static_cast<uintptr_t>(device_ops));
    slots_.resize(slot_count_);
    for (Slot& slot : slots_) {
      DEVMEM_RETURN_IF_ERROR(CudaCheck(
          cudaEventCreateWithFlags(&slot.event, cudaEventDisableTiming), "cudaEventCreate"));
    }
    return Status::Ok();
  }

  Result<std::optional<ScatterTicket>> Submit(const ScatterOp* ops, size_t count,
                                              const void* region_dptr, void* dst_dptr) override {
    if (count > max_ops_) {
      return Status::Error(ErrorKind::kInvalidUsage,
                           "%zu scatter ops in one submission, but the engine was created for "
                           "at most %zu (max_ops): split the submission or size max_ops for it",
                           count, max_ops_);
    }
    Result<ScopedDeviceContext> scope = driver_->EnterContext(context_);
    if (!scope.ok()) return scope.status();
    // Slots are taken in turn on one in-order stream, so the next slot holds the oldest
    // submission: if that one still runs, so do all the others.
    const size_t index = next_ % slots_.size();
    Slot& slot = slots_[index];
    if (slot.busy) {
      Result<bool> done = Query(slot);
      if (!done.ok()) return done.status();
      if (!done.value()) return std::optional<ScatterTicket>();  // busy: back-pressure
    }
    Status enqueued = Enqueue(index, ops, count, region_dptr, dst_dptr);
    // Recorded even after a failed launch: a queued op copy reads the slot's host buffer until
    // the event passes, so the slot must not be reused before.
    Status recorded = CudaCheck(cudaEventRecord(slot.event, stream_), "cudaEventRecord");
    if (recorded.ok()) {
      slot.busy = true;
      ++slot.generation;
      ++next_;
    }
    DEVMEM_RETURN_IF_ERROR(enqueued);
    DEVMEM_RETURN_IF_ERROR(recorded);
    return std::optional<ScatterTicket>(
        ScatterTicket{static_cast<uint32_t>(index), slot.generation});
  }

  Result<bool> Done(const ScatterTicket& ticket) override {
    if (ticket.slot >= slots_.size() || ticket.generation == 0 ||
        ticket.generation > slots_[ticket.slot].generation) {
      return Status::Error(
          ErrorKind::kInvalidArgument,
          "scatter ticket (slot %u, generation %llu) was not issued by this engine", ticket.slot,
          static_cast<unsigned long long>(ticket.generation));
    }
    Slot& slot = slots_[ticket.slot];
    // Reused since (only a finished slot is), or already seen finished.
    if (slot.generation != ticket.generation || !slot.busy) return true;
    Result<ScopedDeviceContext> scope = driver_->EnterContext(context_);
    if (!scope.ok()) return scope.status();
    return Query(slot);
  }

  // Idle and Synchronize look at this engine's own submissions (its slots' events), never at
  // the shared stream, which also carries other receive comms' work.
  Result<bool> Idle() override {
    Result<ScopedDeviceContext> scope = driver_->EnterContext(context_);
    if (!scope.ok()) return scope.status();
    return OwnSubmissionsDone();
  }

  Status Synchronize() override {
    Result<ScopedDeviceContext> scope = driver_->EnterContext(context_);
    if (!scope.ok()) return scope.status();
    return GpuQuarantine::Process().Wait("the scatter engine's submissions", "it was asked to",
                                         std::chrono::milliseconds(0),
                                         [this] { return OwnSubmissionsDone(); });
  }

 private:
  struct Slot {
    cudaEvent_t event = nullptr;
    bool busy = false;
    uint64_t generation = 0;
  };

  // The op upload and the kernel, into slot `index`'s buffers (the slot is idle).
  Status Enqueue(size_t index, const ScatterOp* ops, size_t count, const void* region_dptr,
                 void* dst_dptr) {
    if (count == 0) return Status::Ok();
    ScatterOp* host_ops = host_ops_ + index * max_ops_;
    ScatterOp* device_ops = device_ops_ + index * max_ops_;
    memcpy(host_ops, ops, count * sizeof(ScatterOp));
    DEVMEM_RETURN_IF_ERROR(
        CudaCheck(cudaMemcpyAsync(device_ops, host_ops, count * sizeof(ScatterOp),
                                  cudaMemcpyHostToDevice, stream_),
                  "copying the scatter ops"));
    const size_t wanted = (count + kWarpsPerBlock - 1) / kWarpsPerBlock;
    const uint32_t blocks = wanted < max_blocks_ ? static_cast<uint32_t>(wanted) : max_blocks_;
    // The kernel's parameters, of exactly its parameter types.
    const ScatterOp* kernel_ops = device_ops;
    uint32_t op_count = static_cast<uint32_t>(count);  // Create bounds max_ops to 32 bits
    const char* region = static_cast<const char*>(region_dptr);
    char* dst = static_cast<char*>(dst_dptr);
    void* args[] = {&kernel_ops, &op_count, &region, &dst};
    // The launch's own result, not whatever an earlier call left in the thread's last error.
    return CudaCheck(cudaLaunchKernel(reinterpret_cast<const void*>(&ScatterKernel), dim3(blocks),
                                      dim3(kThreadsPerBlock), args, 0, stream_),
                     "launching the scatter kernel");
  }

  // Within the context.
  Result<bool> Query(Slot& slot) {
    const cudaError_t err = cudaEventQuery(slot.event);
    if (err == cudaErrorNotReady) return false;
    DEVMEM_RETURN_IF_ERROR(CudaCheck(err, "the scatter kernel"));
    slot.busy = false;
    return true;
  }

  // Within the context: whether every submission of this engine finished.
  Result<bool> OwnSubmissionsDone() {
    for (Slot& slot : slots_) {
      if (!slot.busy) continue;
      Result<bool> done = Query(slot);
      if (!done.ok()) return done.status();
      if (!done.value()) return false;
    }
    return true;
  }

  const CudaDriver* driver_;
  void* context_ = nullptr;  // the device's primary context (CudaDriver retains it)
  const size_t max_ops_;
  const size_t slot_count_;
  uint32_t max_blocks_ = 1;
  cudaStream_t stream_ = nullptr;   // SharedScatterStream(device): not ours to destroy
  ScatterOp* host_ops_ = nullptr;    // slot i: [i * max_ops_, (i + 1) * max_ops_), pinned
  ScatterOp* device_ops_ = nullptr;  // the same layout on the device
  std::vector<Slot> slots_;
  uint64_t next_ = 0;
};

}  // namespace

bool BuiltWithCudaKernels() { return true; }

Result<std::unique_ptr<ScatterEngine>> CreateCudaScatterEngine(int device, size_t max_ops,
                                                               size_t slots) {
  if (device < 0) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "scatter engine on GPU %d: the RX region's GPU must be known, there is "
                         "no default device",
                         device);
  }
  if (max_ops == 0 || slots == 0) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "scatter engine with max_ops %zu and slots %zu: both must be >= 1",
                         max_ops, slots);
  }
  if (max_ops > std::numeric_limits<uint32_t>::max() ||
      slots > std::numeric_limits<size_t>::max() / sizeof(ScatterOp) / max_ops) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "scatter engine with max_ops %zu and slots %zu: too large", max_ops,
                         slots);
  }
  Result<const CudaDriver*> driver = CudaDriver::Get();
  if (!driver.ok()) return driver.status().WithContext("no CUDA driver for the scatter engine");
  Result<int> devices = driver.value()->DeviceCount();
  if (!devices.ok() || devices.value() == 0) {
    return Status::Error(ErrorKind::kSystem, "no CUDA device for the scatter engine: %s",
                         !devices.ok() ? devices.status().message().c_str() : "0 devices");
  }
  const int count = devices.value();
  if (device >= count) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "scatter engine on GPU %d, but this process sees GPUs 0..%d", device,
                         count - 1);
  }
  auto engine = std::make_unique<KernelScatterEngine>(driver.value(), max_ops, slots);
  Status init = engine->Init(device);
  if (!init.ok()) return init.WithContext(Format("scatter engine on GPU %d", device));
  return std::unique_ptr<ScatterEngine>(std::move(engine));
}

}  // namespace devmem::gpu
