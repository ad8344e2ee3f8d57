// The plugin's host <-> device copies, on a stream of their own.
//
// Never the legacy default stream: on an H200 under MPS (two NCCL ranks on one GPU, the way
// tests/gpu/gpu_verify.sh runs them) a synchronous cuMemcpyHtoD on a plugin worker thread never
// returned while NCCL's kernel spun waiting for the very bytes it was copying, and NCCL's
// next cuEventRecord blocked behind it on a driver lock: every rank hung (perf/RESULTS.md,
// 2026-11-26 GPU run, stacks from cuda-gdb). NCCL itself copies only on non-blocking streams
// of its own (v2.28.9 src/misc/strongstream.cc:131, src/transport/p2p.cc:693). So: enqueue
// on a non-blocking stream, then wait for that stream alone.
#pragma once

#include <chrono>
#include <cstddef>

#include "plugin/core/status.h"

namespace devmem {

class CudaDriver;

// Once per process: a WARN when GPU `device` is shared through MPS with the default number of
// hardware work queues per client, the setting under which the plugin's GPU work was seen to
// wait forever behind NCCL's kernel (perf/RESULTS.md, 2026-11-26). Called wherever the plugin
// starts doing GPU work on NCCL's data path (copy streams, the scatter engine's comm).
void WarnIfMpsSharesWorkQueues(int device);

class CopyStream final {
 public:
  // A non-blocking stream in GPU `device`'s primary context, or, for device < 0, in the
  // calling thread's current context (where NCCL's buffers of a comm without a GPU region
  // live). Every call below runs in that context, whatever the calling thread has current.
  // `gpu_work_limit`: how long Wait() waits (0: forever); see Wait().
  static Result<CopyStream> Create(
      int device, std::chrono::milliseconds gpu_work_limit = std::chrono::milliseconds(0));
  CopyStream(CopyStream&& other) noexcept;
  CopyStream& operator=(CopyStream&& other) noexcept;
  CopyStream(const CopyStream&) = delete;
  CopyStream& operator=(const CopyStream&) = delete;
  ~CopyStream();

  // Queue a copy; `src`/`dst` host memory must stay valid until Wait() returned. Pinned host
  // memory makes the copy asynchronous; pageable memory works too (the driver stages it).
  Status EnqueueToDevice(void* dst_device, const void* src, size_t bytes);
  Status EnqueueToHost(void* dst, const void* src_device, size_t bytes);
  // Returns once every queued copy is complete. Past the GPU work limit the copies are given
  // up on (plugin/cuda/gpu_quarantine.h): an error naming the cause, and the stream is kept,
  // never synchronized or destroyed, as the quarantine keeps all plugin GPU and pinned memory
  // from then on: the queued copies may still run one day. A copy that never runs was seen on
  // an H200 under MPS (perf/RESULTS.md, 2026-11-26): the driver aliases streams onto a small
  // pool of hardware work queues, and one aliased onto the queue of NCCL's spinning kernel
  // waits behind it forever, as does every thread waiting for it.
  Status Wait();
  bool abandoned() const { return abandoned_; }
  // Enqueue + Wait.
  Status ToDevice(void* dst_device, const void* src, size_t bytes);
  Status ToHost(void* dst, const void* src_device, size_t bytes);

 private:
  CopyStream(const CudaDriver* driver, void* context, void* stream,
             std::chrono::milliseconds gpu_work_limit)
      : driver_(driver), context_(context), stream_(stream), gpu_work_limit_(gpu_work_limit) {}
  void Reset();
  // The quarantine's wait for this stream's copies (within its context); `since` names the
  // start of the wait in the WARN.
  Status WaitForQueuedCopies(const char* since);

  const CudaDriver* driver_ = nullptr;
  void* context_ = nullptr;  // CUcontext
  void* stream_ = nullptr;   // CUstream; nullptr once moved from
  std::chrono::milliseconds gpu_work_limit_{0};
  bool abandoned_ = false;
};

}  // namespace devmem
