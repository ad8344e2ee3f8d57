// One connection's side of a message stream, progressed the way NCCL's proxy progresses a
// connection (src/transport/net.cc): a window of isend/irecv requests, at most one posted per
// pass, only the oldest tested. Shared by the benchmarks (bench.cc, scale_bench.cc), with the
// page-aligned host buffers they stream from and the payload pattern --check verifies.
#pragma once

#include <sys/mman.h>

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "plugin/abi/net_abi.h"

namespace devmem::perf {

// A page-aligned, pre-faulted message buffer. Transparent huge pages are requested because
// NCCL's host buffers (cudaHostAlloc) are large pinned allocations, not 4 KiB-page heaps.
class HostBuffer final {
 public:
  explicit HostBuffer(uint64_t bytes) : size_(bytes) {
    constexpr size_t kHuge = 2 << 20;
    const size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
    void* p = nullptr;
    if (posix_memalign(&p, kHuge, rounded) != 0) throw std::bad_alloc();
    madvise(p, rounded, MADV_HUGEPAGE);
    memset(p, 0, rounded);
    data_ = static_cast<char*>(p);
  }
  HostBuffer(HostBuffer&& other) noexcept : data_(other.data_), size_(other.size_) {
    other.data_ = nullptr;
  }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  ~HostBuffer() { free(data_); }
  char* data() { return data_; }
  uint64_t size() const { return size_; }

 private:
  char* data_ = nullptr;
  uint64_t size_ = 0;
};

// Stream slots are carved out of one arena per process, each rounded up to 4 KiB pages, so
// that many connections with small messages do not cost a 2 MiB buffer per slot.
inline uint64_t SlotBytes(uint64_t largest) {
  constexpr uint64_t kSlotAlign = 4096;
  return (largest + (largest == 0) + kSlotAlign - 1) / kSlotAlign * kSlotAlign;
}

// Payload of message `salt` (connection << 32 | message index): a per-message offset that
// neighbouring messages and other connections do not share, so a swapped, crossed or stale
// message fails the check in almost every byte, even a 1-byte one.
inline uint64_t PatternSeed(uint64_t salt) { return ((salt + 1) * 0x9E3779B97F4A7C15ull) >> 40; }

inline void FillPattern(char* data, uint64_t size, uint64_t salt) {
  const uint64_t seed = PatternSeed(salt);
  for (uint64_t i = 0; i < size; ++i) data[i] = static_cast<char>((i * 131 + seed) >> 3);
}

// "" when `data` holds message `salt`'s payload, else where and what differs.
inline std::string CheckPattern(const char* data, uint64_t size, uint64_t salt, const char* what) {
  const uint64_t seed = PatternSeed(salt);
  for (uint64_t i = 0; i < size; ++i) {
    if (static_cast<uint8_t>(data[i]) != static_cast<uint8_t>((i * 131 + seed) >> 3)) {
      char text[160];
      snprintf(text, sizeof(text),
               "payload mismatch at byte %" PRIu64 " of %" PRIu64 " (%s, connection %" PRIu64
               ", message %" PRIu64 ")",
               i, size, what, salt >> 32, salt & 0xffffffffu);
      return text;
    }
  }
  return {};
}

// One connection's side of a stream: a buffer per window slot and the request in flight in
// each. Message k uses slot k % window in the default (in-order) mode.
struct Lane {
  void* comm = nullptr;
  bool sender = false;
  uint64_t index = 0;          // the connection's number: part of every message's pattern
  std::vector<char*> buffers;  // per slot
  std::vector<void*> mhandles;
  std::vector<void*> requests;  // per slot; nullptr when free
  std::vector<uint64_t> salts;  // per slot: the payload of the message it carries
  int posted = 0;
  int completed = 0;

  void Reset(int window) {
    posted = completed = 0;
    requests.assign(static_cast<size_t>(window), nullptr);
    salts.assign(static_cast<size_t>(window), 0);
  }
};

struct StreamStep {
  const abi::NetV11* net;
  uint64_t size;
  int iters;  // per connection
  int window;
  bool check;
  void** phandles = nullptr;  // NCCL's proxy event handles for isend/irecv (NetPeer::phandles)
};

// Posts the next message of `lane` in `slot`; false when the plugin had no request free
// (it returned NULL: NCCL retries on a later pass) or on failure (*error set).
inline bool Post(const StreamStep& s, Lane& lane, int slot, std::string* error) {
  void* request = nullptr;
  void* data = lane.buffers[static_cast<size_t>(slot)];
  void* mhandle = lane.mhandles[static_cast<size_t>(slot)];
  const uint64_t salt = lane.index << 32 | static_cast<uint64_t>(lane.posted);
  if (lane.sender) {
    if (s.check) FillPattern(static_cast<char*>(data), s.size, salt);
    if (s.net->isend(lane.comm, data, s.size, 1, mhandle, s.phandles ? s.phandles[0] : nullptr,
                     &request) != abi::kSuccess) {
      *error = "isend failed";
      return false;
    }
  } else {
    size_t capacity = s.size;
    int tag = 1;
    if (s.net->irecv(lane.comm, 1, &data, &capacity, &tag, &mhandle, s.phandles, &request) !=
        abi::kSuccess) {
      *error = "irecv failed";
      return false;
    }
  }
  if (request == nullptr) return false;
  lane.requests[static_cast<size_t>(slot)] = request;
  lane.salts[static_cast<size_t>(slot)] = salt;
  ++lane.posted;
  return true;
}

// Tests the request in `slot` once; true when it completed, false when not yet or on failure
// (*error set).
inline bool Complete(const StreamStep& s, Lane& lane, int slot, std::string* error) {
  int done = 0;
  int got = 0;
  if (s.net->test(lane.requests[static_cast<size_t>(slot)], &done, &got) != abi::kSuccess) {
    *error = "test failed";
    return false;
  }
  if (!done) return false;
  if (!lane.sender && static_cast<uint64_t>(got) != s.size) {
    *error = "short receive: " + std::to_string(got) + " of " + std::to_string(s.size) + " bytes";
    return false;
  }
  if (!lane.sender && s.check) {
    *error = CheckPattern(lane.buffers[static_cast<size_t>(slot)], s.size,
                          lane.salts[static_cast<size_t>(slot)], "stream");
    if (!error->empty()) return false;
  }
  lane.requests[static_cast<size_t>(slot)] = nullptr;
  ++lane.completed;
  return true;
}

// NCCL's proxy (src/transport/net.cc): on each pass over a connection it posts at most one
// request and tests only the oldest one in flight. True when the pass made progress.
inline bool ProgressInOrder(const StreamStep& s, Lane& lane, std::string* error) {
  bool progressed = false;
  if (lane.posted < s.iters && lane.posted - lane.completed < s.window) {
    progressed = Post(s, lane, lane.posted % s.window, error);
  }
  if (lane.completed < lane.posted && Complete(s, lane, lane.completed % s.window, error)) {
    progressed = true;
  }
  return progressed;
}

// --test-any: fills every free slot and tests every request in flight, in slot order, so
// requests complete out of posting order.
inline bool ProgressAnySlot(const StreamStep& s, Lane& lane, std::string* error) {
  bool progressed = false;
  for (int slot = 0; slot < s.window && error->empty(); ++slot) {
    if (lane.requests[static_cast<size_t>(slot)] == nullptr && lane.posted < s.iters &&
        lane.posted - lane.completed < s.window && Post(s, lane, slot, error)) {
      progressed = true;
    }
    if (lane.requests[static_cast<size_t>(slot)] != nullptr && Complete(s, lane, slot, error)) {
      progressed = true;
    }
  }
  return progressed;
}

}  // namespace devmem::perf
