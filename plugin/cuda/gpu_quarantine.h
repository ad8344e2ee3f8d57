// GPU work that does not finish: the plugin's one policy for it, and its one owner.
//
// The plugin waits for GPU work of its own in a few places: a host<->device copy on a copy
// stream (plugin/cuda/copy_stream.h), a receive's scatter kernel (test() polls it, closing the
// comm drains it: plugin/consumers/kernel_scatter_consumer.h), the scatter engine's own close
// (gpu/scatter_kernel.cu). That work can fail to run at all: on an H200 under MPS it sat on the
// hardware work queue of NCCL's kernel, which spins until the plugin's work is done
// (perf/RESULTS.md, 2026-11-26; docs/gpu-hosts.md "When GPU work does not finish"). Waiting
// for it would hang NCCL's proxy thread, and every rank with it. So every wait polls, is bounded
// by one limit, NCCL_DEVMEM_GPU_CONSUMER_TIMEOUT_MS (Config::gpu_consumer_timeout_ms; 0: no
// limit), and past it the work is given up on here, the same way wherever it was:
//
// 1. Whatever the work may still touch is kept for the life of the process (Keep): the engine
//    and its op buffers, the RX region the kernel reads, a copy stream. The work is still
//    queued and may run one day; freeing or reusing that memory under it would corrupt NCCL's
//    buffers or the next comm's.
// 2. The process stops freeing pinned and device memory of the plugin (stopped_freeing();
//    CudaDriver::Free and HostFree honour it), and stops synchronizing streams it closes. Not
//    only the stuck work's own objects: cuMemFree and cuMemFreeHost may synchronize the whole
//    device (NCCL PR #194), and so may destroying what a stream still uses, so closing any other
//    comm would then hang behind the work that never runs: a hang instead of a failure, the
//    very thing the limit is there to prevent. And the plugin's streams share hardware queues
//    (the scatter stream is one per GPU for every receive comm; copy streams alias onto the same
//    pool), so work of other comms may sit behind the stuck work too. Until then each object
//    was kept by its own owner with its own rule; the narrower one (keep a stuck engine and its
//    region, free everything else) hung in exactly that way. Leaking is the safe end: a comm of
//    the process has failed, NCCL aborts it, and what is held goes with the process.
// 3. One WARN per give-up (GiveUp's format, docs/troubleshooting.md), naming the work, how long
//    it was waited for and the variable; the caller gets the same text as its error.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "plugin/core/status.h"

namespace devmem {

class GpuQuarantine final {
 public:
  using Clock = std::chrono::steady_clock;

  // The process's: the one CudaDriver's frees ask, and every product wait gives up through.
  static GpuQuarantine& Process();
  // Tests make their own, so that giving up in one does not stop the frees of the process.
  GpuQuarantine() = default;
  GpuQuarantine(const GpuQuarantine&) = delete;
  GpuQuarantine& operator=(const GpuQuarantine&) = delete;

  // The one wait for plugin GPU work. Polls `finished` (a callable returning Result<bool>: true
  // once the work completed, an error where it failed) until it says true or returns an error,
  // or until `limit` has passed (zero: no limit); past the limit, GiveUp(what, since, limit)
  // and *gave_up (where given) becomes true: the caller then keeps what the work may touch.
  // `since` says in the WARN when the wait began ("it was queued", "close began").
  // Small copies finish in microseconds, so the polls only yield the CPU; the clock is read every
  // 64 polls, and from the 4096th poll on those also sleep 50 us (the copy streams' loop).
  // Allocates nothing until it gives up (copy streams wait once per staged message).
  template <typename Poll>
  Status Wait(const char* what, const char* since, std::chrono::milliseconds limit,
              Poll&& finished, bool* gave_up = nullptr) {
    const Clock::time_point start = Clock::now();
    for (uint64_t polls = 1;; ++polls) {
      Result<bool> done = finished();
      if (!done.ok()) return done.status();
      if (done.value()) return Status::Ok();
      if (polls % 64 == 0) {
        if (Overdue(start, limit, Clock::now())) {
          if (gave_up != nullptr) *gave_up = true;
          return GiveUp(what, since, limit);
        }
        if (polls >= 4096) std::this_thread::sleep_for(std::chrono::microseconds(50));
      } else {
        std::this_thread::yield();
      }
    }
  }

  // For work polled elsewhere, one poll per call (test() polls a receive's consumer): whether
  // work waited for since `since` has run past `limit` at `now` (never for a zero limit).
  static bool Overdue(Clock::time_point since, std::chrono::milliseconds limit,
                      Clock::time_point now) {
    return limit.count() > 0 && now - since > limit;
  }

  // Gives up on GPU work `what` that has not finished `limit` after `since`: from now on the
  // plugin frees no pinned or device memory (stopped_freeing()), the WARN is logged, and the
  // same text comes back as a kSystem error for the caller to fail with. The caller keeps
  // (Keep) whatever that work may still touch.
  Status GiveUp(const std::string& what, const char* since, std::chrono::milliseconds limit);

  // Keeps `object` alive until the process exits (anything given-up work may still touch).
  // Reachable from a static, so leak checkers do not report it.
  void Keep(std::shared_ptr<const void> object);

  // True once any plugin GPU work was given up on: frees of plugin pinned and device memory do
  // nothing, and closing streams does not synchronize them, from then on.
  bool stopped_freeing() const { return stopped_freeing_.load(std::memory_order_acquire); }
  // How many objects Keep() holds; how many give-ups there were.
  size_t kept() const;
  uint64_t give_ups() const { return give_ups_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> stopped_freeing_{false};
  std::atomic<uint64_t> give_ups_{0};
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<const void>> kept_;
};

}  // namespace devmem
