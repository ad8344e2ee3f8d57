// Requests handed to NCCL: a fixed pool per comm (NCCL keeps at most NCCL_STEPS = 8 in flight
// per connection; we allow NCCL_NET_MAX_REQUESTS = 32), so the data path never allocates.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <new>

#include <vector>

#include "plugin/consumers/frag_consumer.h"
#include "plugin/core/config.h"
#include "plugin/core/nccl_contract.h"
#include "plugin/core/status.h"
#include "plugin/cuda/memory.h"
#include "plugin/observe/profiler.h"
#include "plugin/transport/data_socket.h"

namespace devmem {

class Comm;

struct SubRequest {
  char* data = nullptr;   // where payload lands (user buffer or staging)
  uint64_t capacity = 0;  // recv: posted size; send: message size
  int tag = 0;
  uint64_t size = 0;         // bytes actually carried
  bool matched = false;      // recv: a message header was matched to this sub
  bool holds_frags = false;  // recv, devmem modes: frags of this sub await scatter + release
  bool scatter_on_arrival = false;  // recv: its consumer copies frags as they arrive
  uint64_t seq = 0;          // recv, devmem modes: message sequence number
  const MemoryRegion* region = nullptr;
  void* user_data = nullptr;      // the caller's pointer (differs from data when staged)
  void* device_target = nullptr;  // where a GPU consumer writes the frags
  HostDelivery delivery = HostDelivery::kNone;
  bool inline_payload = false;  // arrived on the control connection (all host bytes)
  ConsumerJob job;              // recv: the consumer's state for this sub's frags
};

struct Request {
  enum class Kind : uint8_t { kSend, kRecv } kind = Kind::kSend;
  // One life, one stage: RecvComm::Test / SendComm::Test advance it.
  //   kFree              in the pool
  //   kPosted            handed to NCCL; bytes still arriving (recv) or leaving (send)
  //   kConsuming         recv: every byte arrived, the frags' consumer runs
  //   kAwaitingConsumed  recv, NCCL unpack: reported done, its tokens wait for irecvConsumed
  enum class Stage : uint8_t { kFree, kPosted, kConsuming, kAwaitingConsumed };
  Stage stage = Stage::kFree;
  bool in_use() const { return stage != Stage::kFree; }
  Comm* comm = nullptr;
  size_t pool_index = 0;  // its index in the comm's RequestPool (the ABI's name for it)
  int count = 0;  // sub-requests
  std::array<SubRequest, kMaxRecvsLimit> subs{};
  int unmatched = 0;                  // recv: subs still waiting for a header
  int inline_pending = 0;             // recv: subs whose inline payload is still arriving
  uint64_t control_end = 0;           // send: control-stream offset that must reach the kernel
  std::atomic<int> pending_tasks{0};  // socket tasks not finished by the workers
  // send, zero-copy: MSG_ZEROCOPY calls whose completion the kernel has not reported yet
  // (until then it may still read the buffer: plugin/transport/zerocopy.h)
  std::atomic<int> zerocopy_pending{0};
  Status error;           // request-level failure (e.g. truncation), reported by test()
  StagingBuffer staging;  // pinned host memory when a sub is a CUDA buffer
  // Devmem modes: per sub-request x data socket, what the frag receivers recorded. Sized on
  // first use and reused, so the steady state allocates nothing.
  std::vector<FragResult> frag_results;
  // recv: who reads the held frags (nullptr: plain path, nothing held).
  FragConsumer* consumer = nullptr;
  std::chrono::steady_clock::time_point consuming_since;  // recv: when consuming began
  // NCCL's profiler (plugin/observe/profiler.h): one record per sub-request, made the first time
  // NCCL passes this request slot a profiler handle; nullptr while it never did.
  std::unique_ptr<std::array<observe::MessageProfile, kMaxRecvsLimit>> profiles;

  void Reset(Comm* owner, Kind k) {
    comm = owner;
    kind = k;
    stage = Stage::kPosted;
    count = 0;
    unmatched = 0;
    inline_pending = 0;
    control_end = 0;
    pending_tasks.store(0, std::memory_order_relaxed);
    zerocopy_pending.store(0, std::memory_order_relaxed);
    error = Status::Ok();
    consumer = nullptr;
  }
};

// The profile of `sub` (one of `request`'s) while NCCL's profiler follows its message.
inline observe::MessageProfile* ProfileOf(Request* request, const SubRequest* sub) {
  if (request->profiles == nullptr) return nullptr;
  observe::MessageProfile& profile = (*request->profiles)[sub - request->subs.data()];
  return profile.phandle != nullptr ? &profile : nullptr;
}

// Requests NCCL keeps in flight per connection (NCCL_STEPS).
inline constexpr size_t kStagedInFlight = nccl::kSteps;

// NCCL keeps NCCL_STEPS (8) requests in flight per connection, but may post up to 32: the pool
// holds them in blocks of 8, the first made with the comm and the others the first time the
// comm has more in flight (a Request is ~1 KiB; a job has thousands of comms).
class RequestPool {
 public:
  static constexpr size_t kSize = nccl::kNetMaxRequests;
  static constexpr size_t kBlock = nccl::kSteps;
  static_assert(kSize % kBlock == 0);

  RequestPool() { blocks_[0] = NewBlock(0); }

  // nullptr when all are in flight (or no memory for another block): the caller returns a NULL
  // request and NCCL retries.
  Request* Acquire(Comm* owner, Request::Kind kind) {
    for (size_t b = 0; b < blocks_.size(); ++b) {
      if (blocks_[b] == nullptr) {
        blocks_[b] = NewBlock(b);
        if (blocks_[b] == nullptr) return nullptr;
      }
      for (Request& request : *blocks_[b]) {
        if (!request.in_use()) {
          request.Reset(owner, kind);
          ++in_use_;
          return &request;
        }
      }
    }
    return nullptr;
  }
  void Release(Request* request) {
    if (!request->in_use()) return;
    request->stage = Request::Stage::kFree;
    --in_use_;
  }
  // Gives the staging of the first `count` requests (the ones Acquire hands out first) at least
  // `bytes`, so the data path finds it allocated.
  Status PresizeStaging(size_t count, size_t bytes) {
    for (size_t i = 0; i < count && i < kBlock; ++i) {
      Result<char*> reserved = (*blocks_[0])[i].staging.Reserve(bytes);
      if (!reserved.ok()) return reserved.status();
    }
    return Status::Ok();
  }
  // The ABI names a request by its comm and its index here (never by its address).
  size_t IndexOf(const Request* request) const { return request->pool_index; }
  Request* At(size_t index) {
    if (index >= kSize || blocks_[index / kBlock] == nullptr) return nullptr;
    return &(*blocks_[index / kBlock])[index % kBlock];
  }
  // Requests acquired and not yet released (the thread that posts and tests: NCCL's proxy).
  int InUse() const { return in_use_; }

 private:
  using Block = std::array<Request, kBlock>;
  static std::unique_ptr<Block> NewBlock(size_t b) {
    std::unique_ptr<Block> block(new (std::nothrow) Block());
    if (block == nullptr) return nullptr;
    for (size_t i = 0; i < kBlock; ++i) (*block)[i].pool_index = b * kBlock + i;
    return block;
  }
  std::array<std::unique_ptr<Block>, kSize / kBlock> blocks_;
  int in_use_ = 0;
};

}  // namespace devmem
