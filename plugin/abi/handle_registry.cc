#include "plugin/abi/handle_registry.h"

#include <algorithm>

namespace devmem::api {
namespace {

constexpr uint64_t kMarker = uint64_t{1} << 63;
constexpr int kRequestShift = 4;
constexpr uint64_t kRequestMask = 0x3f;
constexpr int kSlotShift = 10;
constexpr uint64_t kSlotMask = (uint64_t{1} << 22) - 1;
constexpr int kGenerationShift = 32;
constexpr uint32_t kGenerationMask = 0x7fffffff;
constexpr uint64_t kKindMask = 0xf;

static_assert(sizeof(void*) == sizeof(uint64_t), "handles are 64-bit values");
static_assert(HandleRegistry::kMaxSlots - 1 <= kSlotMask);
static_assert(HandleRegistry::kMaxRequestsPerComm + 1 <= kRequestMask);

bool OwnsRequests(HandleKind kind) {
  return kind == HandleKind::kSendComm || kind == HandleKind::kRecvComm;
}

}  // namespace

const char* HandleKindName(HandleKind kind) {
  switch (kind) {
    case HandleKind::kContext:
      return "context";
    case HandleKind::kListenComm:
      return "listen comm";
    case HandleKind::kSendComm:
      return "send comm";
    case HandleKind::kRecvComm:
      return "recv comm";
    case HandleKind::kMemory:
      return "mhandle";
    case HandleKind::kConnector:
      return "connector";
  }
  return "handle";
}

HandleRegistry& HandleRegistry::Global() {
  static HandleRegistry* const registry = new HandleRegistry();
  return *registry;
}

HandleRegistry::HandleRegistry(uint32_t max_slots)
    : max_slots_(std::min(max_slots, kMaxSlots)),
      chunks_((max_slots_ + kChunkSlots - 1) / kChunkSlots) {}

HandleRegistry::~HandleRegistry() {
  for (std::atomic<Slot*>& chunk : chunks_) delete[] chunk.load(std::memory_order_relaxed);
}

uint64_t HandleRegistry::StateOf(uint32_t generation, HandleKind kind) {
  return (uint64_t{generation} << 8) | static_cast<uint64_t>(kind);
}

void* HandleRegistry::Encode(HandleKind kind, uint32_t slot, uint32_t generation,
                             uint32_t request) {
  const uint64_t value = kMarker | (uint64_t{generation & kGenerationMask} << kGenerationShift) |
                         (uint64_t{slot} << kSlotShift) | (uint64_t{request} << kRequestShift) |
                         static_cast<uint64_t>(kind);
  return reinterpret_cast<void*>(static_cast<uintptr_t>(value));
}

bool HandleRegistry::Decode(const void* handle, Decoded* out) {
  const auto value = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(handle));
  if ((value & kMarker) == 0) return false;  // a pointer (or NULL, or 0x1): never ours
  const uint64_t kind = value & kKindMask;
  if (kind < static_cast<uint64_t>(HandleKind::kContext) ||
      kind > static_cast<uint64_t>(HandleKind::kConnector)) {
    return false;
  }
  out->kind = static_cast<HandleKind>(kind);
  out->request = static_cast<uint32_t>((value >> kRequestShift) & kRequestMask);
  out->slot = static_cast<uint32_t>((value >> kSlotShift) & kSlotMask);
  out->generation = static_cast<uint32_t>(value >> kGenerationShift) & kGenerationMask;
  return true;
}

HandleRegistry::Slot* HandleRegistry::SlotAt(uint32_t index) const {
  if (index >= max_slots_) return nullptr;
  Slot* chunk = chunks_[index / kChunkSlots].load(std::memory_order_acquire);
  return chunk != nullptr ? &chunk[index % kChunkSlots] : nullptr;
}

HandleRegistry::Slot* HandleRegistry::LiveSlot(const Decoded& d) const {
  Slot* slot = SlotAt(d.slot);
  if (slot == nullptr) return nullptr;
  // Acquire pairs with Add's release: the object stored before the state is the one we read.
  if (slot->state.load(std::memory_order_acquire) != StateOf(d.generation, d.kind)) return nullptr;
  return slot;
}

void* HandleRegistry::Find(const void* handle, HandleKind kind) const {
  Decoded d;
  if (!Decode(handle, &d) || d.kind != kind || d.request != 0) return nullptr;
  const Slot* slot = LiveSlot(d);
  return slot != nullptr ? slot->object.load(std::memory_order_relaxed) : nullptr;
}

void* HandleRegistry::RequestHandle(const void* comm, uint32_t index) {
  Decoded d;
  if (!Decode(comm, &d) || !OwnsRequests(d.kind) || d.request != 0 ||
      index >= kMaxRequestsPerComm) {
    return nullptr;
  }
  return Encode(d.kind, d.slot, d.generation, index + 1);
}

bool HandleRegistry::FindRequest(const void* handle, RequestRef* ref) const {
  Decoded d;
  if (!Decode(handle, &d) || !OwnsRequests(d.kind) || d.request == 0) return false;
  const Slot* slot = LiveSlot(d);
  if (slot == nullptr) return false;
  ref->comm_kind = d.kind;
  ref->comm = slot->object.load(std::memory_order_relaxed);
  ref->index = d.request - 1;
  return true;
}

Result<uint32_t> HandleRegistry::TakeSlot() {
  if (!free_.empty()) {
    const uint32_t index = free_.back();
    free_.pop_back();
    return index;
  }
  if (next_fresh_ >= max_slots_) {
    return Status::Error(ErrorKind::kInternal,
                         "the plugin's handle table is full (%zu live handles: comms, requests' "
                         "comms, mhandles, contexts); close or deregister some first",
                         live_);
  }
  const uint32_t index = next_fresh_;
  std::atomic<Slot*>& chunk = chunks_[index / kChunkSlots];
  if (chunk.load(std::memory_order_relaxed) == nullptr) {
    chunk.store(new Slot[kChunkSlots], std::memory_order_release);
  }
  ++next_fresh_;
  return index;
}

Result<void*> HandleRegistry::Add(HandleKind kind, void* object, const void* owner) {
  std::lock_guard<std::mutex> lock(mutex_);
  uint32_t owner_slot = kNoSlot;
  if (owner != nullptr) {
    Decoded o;
    if (!Decode(owner, &o) || o.request != 0 || LiveSlot(o) == nullptr) {
      return Status::Error(ErrorKind::kInvalidArgument, "owner %p is not a live handle", owner);
    }
    owner_slot = o.slot;
  }
  Result<uint32_t> taken = TakeSlot();
  if (!taken.ok()) return taken.status();
  const uint32_t index = taken.value();
  Slot* slot = SlotAt(index);
  slot->owner = owner_slot;
  slot->owned.clear();
  slot->object.store(object, std::memory_order_relaxed);
  slot->state.store(StateOf(slot->generation, kind), std::memory_order_release);
  if (owner_slot != kNoSlot) SlotAt(owner_slot)->owned.push_back(index);
  ++live_;
  return Encode(kind, index, slot->generation, 0);
}

void HandleRegistry::FreeSlot(uint32_t index, std::vector<OwnedObject>* owned) {
  Slot* slot = SlotAt(index);
  for (uint32_t child : slot->owned) {
    Slot* c = SlotAt(child);
    const auto kind = static_cast<HandleKind>(c->state.load(std::memory_order_relaxed) & 0xff);
    if (owned != nullptr) owned->push_back({kind, c->object.load(std::memory_order_relaxed)});
    c->owner = kNoSlot;  // its owner goes anyway: no need to unlink
    FreeSlot(child, owned);
  }
  slot->owned.clear();
  // A new generation: every handle of the old one (requests included) stops matching.
  slot->generation = (slot->generation + 1) & kGenerationMask;
  slot->state.store(StateOf(slot->generation, HandleKind{}), std::memory_order_release);
  slot->object.store(nullptr, std::memory_order_relaxed);
  if (slot->owner != kNoSlot) {
    std::vector<uint32_t>& siblings = SlotAt(slot->owner)->owned;
    auto it = std::find(siblings.begin(), siblings.end(), index);
    if (it != siblings.end()) {
      *it = siblings.back();
      siblings.pop_back();
    }
    slot->owner = kNoSlot;
  }
  free_.push_back(index);
  --live_;
}

void* HandleRegistry::Remove(const void* handle, HandleKind kind, const void* owner,
                             std::vector<OwnedObject>* owned) {
  Decoded d;
  if (!Decode(handle, &d) || d.kind != kind || d.request != 0) return nullptr;
  std::lock_guard<std::mutex> lock(mutex_);
  Slot* slot = LiveSlot(d);
  if (slot == nullptr) return nullptr;
  if (owner != nullptr) {
    Decoded o;
    if (!Decode(owner, &o) || o.request != 0 || LiveSlot(o) == nullptr || slot->owner != o.slot) {
      return nullptr;
    }
  }
  void* object = slot->object.load(std::memory_order_relaxed);
  FreeSlot(d.slot, owned);
  return object;
}

size_t HandleRegistry::live() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return live_;
}

}  // namespace devmem::api
