// Every handle the plugin gives NCCL (contexts, listen/send/recv comms, mhandles, requests, and
// the connector parked in a listen handle) and the one place a handle NCCL passes back is
// checked. A handle is not a pointer: it names a slot of a table the plugin owns plus the slot's
// generation, so a handle whose object was closed (even after its memory and its slot were
// reused), a pointer to anything else, or a handle of another kind never reaches an object, and
// checking one never reads memory the caller gave us.
//
// Layout (64 bits): bit 63 set (no user-space pointer has it); bits 32..62 the slot's
// generation; bits 10..31 the slot; bits 4..9 a request's pool index + 1 (0: not a request);
// bits 0..3 the kind. Never NULL, never NCCL's 0x1 receive hint.
//
// Lookups are lock-free and O(1) (isend/irecv/test call them at message rate); adding and
// removing take one mutex (connection setup, regMr, close). A call that races the close of its
// own handle on another thread is outside NCCL's contract and not made safe here: the check
// passes before the close and the object may go while the call runs. Sequential misuse (a
// handle used after its close, on any thread) is always caught, until one slot has been reused
// 2^31 times and its generation wraps.
//
// A request handle is its comm's handle plus the request's index in the comm's fixed pool: it
// dies with the comm, and whether it is still in flight is the pool's business (in_use).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "plugin/core/status.h"

namespace devmem::api {

enum class HandleKind : uint8_t {
  kContext = 1,
  kListenComm = 2,
  kSendComm = 3,
  kRecvComm = 4,
  kMemory = 5,
  kConnector = 6,
};

// "send comm", "mhandle", ...: for log lines.
const char* HandleKindName(HandleKind kind);

// What a removed handle owned (a comm's mhandles), removed with it.
struct OwnedObject {
  HandleKind kind;
  void* object;
};

// A live request handle: its comm (kSendComm or kRecvComm) and the index in its request pool.
struct RequestRef {
  HandleKind comm_kind;
  void* comm;
  uint32_t index;
};

class HandleRegistry final {
 public:
  static constexpr uint32_t kMaxSlots = 1u << 22;  // live handles at once
  static constexpr uint32_t kMaxRequestsPerComm = 62;

  // The process's registry. Never destroyed: NCCL may call in while the process exits.
  static HandleRegistry& Global();

  explicit HandleRegistry(uint32_t max_slots = kMaxSlots);
  HandleRegistry(const HandleRegistry&) = delete;
  HandleRegistry& operator=(const HandleRegistry&) = delete;
  ~HandleRegistry();

  // A new handle for `object`. `owner`: a live handle whose removal removes this one too (a
  // comm owns its mhandles). Fails when the table is full or `owner` is not live.
  Result<void*> Add(HandleKind kind, void* object, const void* owner = nullptr);
  // The object of a live handle of `kind`; nullptr for anything else. Lock-free.
  void* Find(const void* handle, HandleKind kind) const;
  // Removes a live handle of `kind` (owned by `owner` when that is given) and returns its
  // object; nullptr (nothing removed) when `handle` is no such handle. What it owned is removed
  // too and appended to `owned`, whose objects the caller now owns.
  void* Remove(const void* handle, HandleKind kind, const void* owner = nullptr,
               std::vector<OwnedObject>* owned = nullptr);
  size_t live() const;

  // The handle of request `index` of the pool of `comm` (a live send or recv comm handle): it is
  // valid exactly as long as the comm's handle. Pure arithmetic, no lookup.
  static void* RequestHandle(const void* comm, uint32_t index);
  // Fills `ref` when `handle` is a request handle of a live comm. Lock-free.
  bool FindRequest(const void* handle, RequestRef* ref) const;

 private:
  static constexpr uint32_t kChunkSlots = 1024;
  static constexpr uint32_t kNoSlot = UINT32_MAX;
  struct Decoded {
    HandleKind kind;
    uint32_t request;  // pool index + 1; 0: not a request
    uint32_t slot;
    uint32_t generation;
  };
  struct Slot {
    // (generation << 8) | kind while live; kind 0 while free. What lock-free lookups compare.
    std::atomic<uint64_t> state{0};
    std::atomic<void*> object{nullptr};
    // Guarded by mutex_.
    uint32_t generation = 0;
    uint32_t owner = kNoSlot;
    std::vector<uint32_t> owned;
  };

  static bool Decode(const void* handle, Decoded* out);
  static void* Encode(HandleKind kind, uint32_t slot, uint32_t generation, uint32_t request);
  static uint64_t StateOf(uint32_t generation, HandleKind kind);
  Slot* SlotAt(uint32_t index) const;
  // The live slot `d` names, or nullptr.
  Slot* LiveSlot(const Decoded& d) const;
  Result<uint32_t> TakeSlot();
  // Frees `index` (and, recursively, what it owns) under mutex_.
  void FreeSlot(uint32_t index, std::vector<OwnedObject>* owned);

  const uint32_t max_slots_;
  // Chunks are allocated on demand and kept until the registry goes, so a lookup may read any
  // published chunk without a lock.
  std::vector<std::atomic<Slot*>> chunks_;
  mutable std::mutex mutex_;
  std::vector<uint32_t> free_;  // freed slots, reused last-in first-out
  uint32_t next_fresh_ = 0;
  size_t live_ = 0;
};

}  // namespace devmem::api
