// The CUDA context the scatter engine works in, and the guard around each of its entry points.
// Built only with the CUDA toolkit (the engine is its only user).
//
// The engine is called on NCCL's threads (accept on the proxy service thread, test() on the
// proxy progress thread), which must get their CUDA state back untouched:
// - Their current context is NCCL's business. Usually it is the device's primary context, but
//   with NCCL_CREATE_THREAD_CONTEXT=1 the proxy thread runs in a context NCCL created itself
//   (proxy.cc setProxyThreadContext), and a thread may have none at all. A runtime-level
//   cudaGetDevice/cudaSetDevice restore cannot express either: cudaSetDevice(previous) would
//   replace NCCL's own context with a primary one, and with no context current cudaGetDevice
//   reports device 0 and the "restore" would leave device 0's primary context current. So the
//   guard pushes our context on the thread's driver context stack (cuCtxPushCurrent) and pops
//   it (cuCtxPopCurrent), which puts back exactly what was current, nothing included; the same
//   as TCPX's gpu_push_current/gpu_pop_current around its CUDA calls.
// - Another thread may be capturing a CUDA graph in global mode; then this thread's
//   potentially-unsafe calls (allocation, free, stream creation) fail. Like NCCL's alloc.h, the
//   guard relaxes this thread's capture mode (cudaThreadExchangeStreamCaptureMode) and restores
//   it. Our stream is never captured, so relaxed mode costs nothing.
// The current context is driver state, per thread, shared by every CUDA runtime in the process
// (ours is linked statically into the plugin, a runtime instance apart from NCCL's), which is
// one more reason to guard it at the driver level. The driver entry points come from our
// runtime (cudaGetDriverEntryPointByVersion): the libcuda it loaded, no link-time dependency.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include "plugin/core/status.h"

namespace devmem::gpu {

// A CUDA runtime failure as a Status ("what: message (name)"). Also clears the thread's
// last-error slot, so that a later cudaGetLastError does not report the same failure again.
Status CudaCheck(cudaError_t err, const char* what);

// The primary context of one device, retained for this object's lifetime: the context the
// GPU RX region and NCCL's buffers (allocated through the runtime) live in, so the one our
// kernel must run in. Never another device's: an invalid ordinal is an error.
class PrimaryContext final {
 public:
  PrimaryContext() = default;
  PrimaryContext(const PrimaryContext&) = delete;
  PrimaryContext& operator=(const PrimaryContext&) = delete;
  ~PrimaryContext();

  Status Retain(int device);
  CUcontext get() const { return context_; }

 private:
  CUdevice device_ = 0;
  CUcontext context_ = nullptr;
};

// For its lifetime, `context` is current on this thread and the thread's stream capture mode
// is relaxed; the destructor restores both. Check status() before any CUDA call: on failure
// the destructor undoes whatever part did take effect.
class ScopedContext final {
 public:
  explicit ScopedContext(const PrimaryContext& context);
  ScopedContext(const ScopedContext&) = delete;
  ScopedContext& operator=(const ScopedContext&) = delete;
  ~ScopedContext();

  const Status& status() const { return status_; }

 private:
  Status status_;
  bool pushed_ = false;
  bool mode_exchanged_ = false;
  cudaStreamCaptureMode saved_mode_ = cudaStreamCaptureModeRelaxed;
};

}  // namespace devmem::gpu
