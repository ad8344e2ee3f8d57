// The FragSource seam of the receive path, per data socket. A receiver consumes bytes of one
// TCP stream and describes them as StreamSegments: host bytes (copied into place at once) and
// region frags that pin a token until the consumer has scattered them.
//   - DevmemFragReceiver: recvmsg(MSG_SOCK_DEVMEM) + SCM_DEVMEM_* cmsgs (real NIC binding).
//   - EmulatedFragReceiver: plain recv into pages of a host region, cut like a NIC would,
//     with per-socket tokens and a shared, limited page pool (NCCL_DEVMEM_EMULATE=1).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>

#include <sys/uio.h>
#include <string>
#include <vector>

#include "plugin/core/relaxed_counter.h"
#include "plugin/core/status.h"
#include "plugin/core/unique_fd.h"
#include "plugin/cuda/copy_stream.h"
#include "plugin/cuda/memory.h"
#include "plugin/devmem/frag_geometry.h"
#include "plugin/devmem/frag_parser.h"
#include "plugin/devmem/rx_region.h"
#include "plugin/devmem/steering_miss_warning.h"
#include "plugin/devmem/token_batch.h"

namespace devmem {

// Host memory standing in for a bound dmabuf (a mapped memfd, shared memory like a dmabuf's).
class HostRegion final : public RxRegion {
 public:
  static Result<std::unique_ptr<HostRegion>> Create(uint64_t bytes);
  HostRegion(const HostRegion&) = delete;
  HostRegion& operator=(const HostRegion&) = delete;
  ~HostRegion() override;
  char* data() const { return data_; }
  uint64_t bytes() const override { return bytes_; }
  char* host_base() const override { return data_; }
  uint64_t device_base() const override { return reinterpret_cast<uintptr_t>(data_); }
  int gpu() const override { return -1; }
  Status Write(uint64_t offset, const char* src, size_t len, CopyStream* stream) override;

 private:
  HostRegion() = default;
  char* data_ = nullptr;
  uint64_t bytes_ = 0;
};

// The pages of a region, shared by every data socket of a comm like a NIC queue's page pool.
// Half the pool is held back for the oldest unreleased message, so newer messages can never
// starve the one the consumer waits for. Pages are `page_bytes` (a power of two, like a
// binding's niovs: PAGE_SIZE or NCCL_DEVMEM_RX_PAGE_SIZE).
class PagePool final {
 public:
  PagePool(uint64_t region_bytes, uint32_t page_bytes);
  uint32_t page_bytes() const { return page_bytes_; }
  // Takes up to `want` pages; `oldest` may dip into the reserve. Returns how many.
  size_t Take(size_t want, bool oldest, uint32_t* pages);
  void Give(const uint32_t* pages, size_t count);
  size_t free_pages() const;
  size_t total_pages() const { return total_; }

 private:
  mutable std::mutex mutex_;
  std::vector<uint32_t> free_;
  uint32_t page_bytes_;
  size_t total_ = 0;
};

// Written by the socket's mover (release: under the receiver's token lock), read by the
// metrics writer while the comm runs.
struct ReceiverCounters {
  RelaxedCounter frags;
  RelaxedCounter region_bytes;
  RelaxedCounter host_bytes;   // linear bytes (devmem) or plain bytes without cmsgs
  RelaxedCounter stalls;       // receives that found no free page
  RelaxedCounter plain_reads;  // devmem: reads without a devmem cmsg (flow steering missed)
  TokenReleaseStats release;
};

class FragReceiver {
 public:
  enum class State { kProgress, kWouldBlock, kStalled };
  virtual ~FragReceiver() = default;
  // Consumes up to `max_bytes` of the stream. Host bytes go to host_dst (nullptr: dropped);
  // every byte is described in *segments, in stream order. *consumed = stream bytes taken.
  virtual Result<State> Receive(int fd, uint64_t max_bytes, bool oldest, char* host_dst,
                                std::vector<StreamSegment>* segments, uint64_t* consumed) = 0;
  // Returns tokens whose frags the consumer no longer needs.
  virtual Status Release(int fd, const uint32_t* tokens, size_t count) = 0;
  virtual const char* mode() const = 0;
  const ReceiverCounters& counters() const { return counters_; }
  // Tokens handed out and not yet released.
  size_t outstanding() const { return outstanding_.load(std::memory_order_relaxed); }

 protected:
  ReceiverCounters counters_;
  std::atomic<size_t> outstanding_{0};
};

struct EmulationMix {
  int split_percent = 10;  // frags that use the second half of a page
  int linear_percent = 5;  // receives that start with linear (host) bytes
};

class EmulatedFragReceiver final : public FragReceiver {
 public:
  // `region` in host memory: recv() lands in its pages directly. In GPU memory: recv() lands in
  // a pinned host bounce laid out like the pages it stands for, and each contiguous run goes
  // to the region with one copy, standing in for the NIC's DMA. A copy from pinned memory is
  // synchronous, so the bytes are in the region before the frag is described to any consumer
  // (a pageable copy may return before its DMA completed).
  static Result<std::unique_ptr<EmulatedFragReceiver>> Create(
      RxRegion* region, PagePool* pool, EmulationMix mix, uint64_t seed,
      std::chrono::milliseconds gpu_work_limit = std::chrono::milliseconds(0));
  // Host regions only (tests): no bounce is needed.
  EmulatedFragReceiver(RxRegion* region, PagePool* pool, EmulationMix mix, uint64_t seed);
  Result<State> Receive(int fd, uint64_t max_bytes, bool oldest, char* host_dst,
                        std::vector<StreamSegment>* segments, uint64_t* consumed) override;
  Status Release(int fd, const uint32_t* tokens, size_t count) override;
  const char* mode() const override { return "emulated devmem"; }

 private:
  uint32_t IssueToken(uint32_t page);
  uint64_t NextRandom();
  size_t max_pages() const { return pages_.size(); }

  RxRegion* region_;
  Status CopyRunsToRegion(const StreamSegment* plan, const iovec* iov, size_t n, uint64_t bytes);

  PinnedBuffer dma_bounce_;                // GPU regions: where recv() lands before the copy
  std::optional<CopyStream> copy_stream_;  // GPU regions: the bounce -> region copies
  PagePool* pool_;
  EmulationMix mix_;
  uint64_t rng_;
  std::mutex tokens_mutex_;          // worker issues, consumer releases
  std::vector<int64_t> token_page_;  // token -> page, -1 when free
  std::vector<uint32_t> free_tokens_;
  std::vector<uint32_t> pages_;      // scratch: the pages of one receive
  std::vector<iovec> iov_;           // scratch: where each planned segment lands
  std::vector<StreamSegment> plan_;  // scratch: the planned segments
  std::vector<uint32_t> returned_;   // scratch for Release
  char linear_bounce_[1024];
};

// Where a devmem connection's payload should land, for the report when it does not (N8): a
// read without any devmem cmsg means the kernel copied the bytes because the flow reached a
// queue that is not bound (tcp_recvmsg_locked copies readable skbs even under MSG_SOCK_DEVMEM;
// ncdevmem calls that a "flow steering error").
struct SteeringExpectation {
  std::string flow;  // "LOCAL <- PEER"
  std::string nic;
  uint32_t queue = 0;
  // NCCL_DEVMEM_REQUIRE=1: such a read fails the comm instead of a WARN.
  bool required = false;
  // The comm's, shared by its receivers: one WARN per comm and a few per process. Null: the
  // receiver is a comm of its own.
  std::shared_ptr<SteeringMissWarning> warning;
};

class DevmemFragReceiver final : public FragReceiver {
 public:
  // The recvmsg seam, the receive-side twin of TokenBatch::ReleaseFn: recvmsg(2) in production;
  // the receive-pipeline bench (perf/bench/rx_pipeline_bench.cc) answers with a synthetic NIC's
  // cmsgs. Same contract as recvmsg: bytes consumed, 0 at EOF, or -1 with errno set.
  using ReceiveFn = ssize_t (*)(int fd, msghdr* msg, int flags);
  static ssize_t KernelReceive(int fd, msghdr* msg, int flags);

  // `release` returns tokens to the kernel (SO_DEVMEM_DONTNEED; tests pass a fake).
  // `geometry`: the NIC's frag sizes, which size the control buffer (one cmsg per frag).
  DevmemFragReceiver(RegionBinding binding, const FragGeometry& geometry,
                     TokenBatch::ReleaseFn release = TokenBatch::KernelRelease,
                     SteeringExpectation steering = SteeringExpectation(),
                     ReceiveFn receive = KernelReceive);
  Result<State> Receive(int fd, uint64_t max_bytes, bool oldest, char* host_dst,
                        std::vector<StreamSegment>* segments, uint64_t* consumed) override;
  Status Release(int fd, const uint32_t* tokens, size_t count) override;
  const char* mode() const override { return "devmem"; }

 private:
  RegionBinding binding_;
  std::vector<char> bounce_;   // linear bytes / plain data land here first
  std::vector<char> control_;  // cmsgs: 40 bytes per frag the bounce's bytes can be
  std::mutex release_mutex_;
  TokenBatch batch_;  // tokens not yet back in the kernel, a failed call's included
  TokenBatch::ReleaseFn release_;
  SteeringExpectation steering_;
  ReceiveFn receive_;
};

}  // namespace devmem
