#include "plugin/cuda/gpu_quarantine.h"

#include <utility>

#include "plugin/core/log.h"

namespace devmem {

GpuQuarantine& GpuQuarantine::Process() {
  // Never destroyed: what it keeps must outlive static destructors (and the driver's shutdown
  // at exit must not free memory that work still queued may touch).
  static auto* const process = new GpuQuarantine();  // NOLINT: process lifetime, on purpose
  return *process;
}

Status GpuQuarantine::GiveUp(const std::string& what, const char* since,
                             std::chrono::milliseconds limit) {
  stopped_freeing_.store(true, std::memory_order_release);
  give_ups_.fetch_add(1, std::memory_order_relaxed);
  const std::string text = Format(
      "%s has not finished %lld ms after %s: the plugin's GPU work is not running (seen when it "
      "waits behind NCCL's spinning kernel on a hardware work queue the process shares: MPS "
      "clients share one pool, CUDA_DEVICE_MAX_CONNECTIONS). Given up on: what it may still "
      "touch is kept, and from now on the plugin frees no GPU or pinned memory "
      "(docs/gpu-hosts.md); the limit is NCCL_DEVMEM_GPU_CONSUMER_TIMEOUT_MS",
      what.c_str(), static_cast<long long>(limit.count()), since);
  log::Warn("GPU work given up on: %s", text.c_str());
  return Status::Error(ErrorKind::kSystem, "%s", text.c_str());
}

void GpuQuarantine::Keep(std::shared_ptr<const void> object) {
  if (object == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  kept_.push_back(std::move(object));
}

size_t GpuQuarantine::kept() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return kept_.size();
}

}  // namespace devmem
