// Requests handed to NCCL: a fixed pool per comm (NCCL keeps at most NCCL_STEPS = 8 in flight
// per connection; we allow NCCL_NET_MAX_REQUESTS = 32), so the data path never allocates.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include <vector>

#include "plugin/abi/net_abi.h"
#include "plugin/config.h"
#include "plugin/data_socket.h"
#include "plugin/memory.h"
#include "plugin/status.h"

namespace devmem {

class Comm;

struct SubRequest {
  char* data = nullptr;   // where payload lands (user buffer or staging)
  uint64_t capacity = 0;  // recv: posted size; send: message size
  int tag = 0;
  uint64_t size = 0;         // bytes actually carried
  bool matched = false;      // recv: a message header was matched to this sub
  bool holds_frags = false;  // recv, devmem modes: frags of this sub await scatter + release
  uint64_t seq = 0;          // recv, devmem modes: message sequence number
  const MemoryRegion* region = nullptr;
  void* user_data = nullptr;  // the caller's pointer (differs from data when staged)
};

struct Request {
  static constexpr uint32_t kMagic = 0x52514452;  // "RQDR"
  uint32_t magic = kMagic;
  enum class Kind : uint8_t { kSend, kRecv } kind = Kind::kSend;
  Comm* comm = nullptr;
  bool in_use = false;
  int count = 0;  // sub-requests
  std::array<SubRequest, kMaxRecvsLimit> subs{};
  int unmatched = 0;                  // recv: subs still waiting for a header
  int inline_pending = 0;             // recv: subs whose inline payload is still arriving
  uint64_t control_end = 0;           // send: control-stream offset that must reach the kernel
  std::atomic<int> pending_tasks{0};  // socket tasks not finished by the workers
  Status error;                       // request-level failure (e.g. truncation), reported by test()
  StagingBuffer staging;              // pinned host memory when a sub is a CUDA buffer
  // Devmem modes: per sub-request x data socket, what the frag receivers recorded. Sized on
  // first use and reused, so the steady state allocates nothing.
  std::vector<FragResult> frag_results;

  void Reset(Comm* owner, Kind k) {
    comm = owner;
    kind = k;
    in_use = true;
    count = 0;
    unmatched = 0;
    inline_pending = 0;
    control_end = 0;
    pending_tasks.store(0, std::memory_order_relaxed);
    error = Status::Ok();
  }
};

class RequestPool {
 public:
  // nullptr when all are in flight: the caller returns a NULL request and NCCL retries.
  Request* Acquire(Comm* owner, Request::Kind kind) {
    for (Request& request : requests_) {
      if (!request.in_use) {
        request.Reset(owner, kind);
        return &request;
      }
    }
    return nullptr;
  }
  void Release(Request* request) { request->in_use = false; }
  bool Owns(const Request* request) const {
    return request >= requests_.data() && request < requests_.data() + requests_.size();
  }
  int InUse() const {
    int n = 0;
    for (const Request& request : requests_) n += request.in_use ? 1 : 0;
    return n;
  }

 private:
  std::array<Request, abi::kNetMaxRequests> requests_;
};

}  // namespace devmem
