#include "plugin/devmem/rx_arena.h"

#include <cstring>
#include <utility>

#include "plugin/cuda/copy_stream.h"
#include "plugin/cuda/cuda_driver.h"
#include "plugin/cuda/gpu_region.h"
#include "plugin/devmem/frag_receiver.h"

namespace devmem {

// A region that is a slice of an arena: its frag offsets are relative to the slice (that is
// what the NIC reports for a dmabuf of the sub-range), bounce_offset() places it in the arena.
class ArenaSlice final : public RxRegion {
 public:
  ArenaSlice(std::shared_ptr<RxArena> arena, uint64_t offset, uint64_t bytes, bool writable)
      : arena_(std::move(arena)), offset_(offset), bytes_(bytes), writable_(writable) {}
  ~ArenaSlice() override { arena_->Return(offset_, bytes_); }
  uint64_t bytes() const override { return bytes_; }
  char* host_base() const override {
    return arena_->host_base() != nullptr ? arena_->host_base() + offset_ : nullptr;
  }
  uint64_t device_base() const override { return arena_->device_base() + offset_; }
  uint64_t bounce_base() const override { return arena_->device_base(); }
  uint64_t bounce_offset() const override { return offset_; }
  int gpu() const override { return arena_->gpu(); }
  Status Write(uint64_t offset, const char* src, size_t len, CopyStream* stream) override {
    if (!writable_) {
      return Status::Error(ErrorKind::kInternal,
                           "the RX region bound to the NIC is written by the NIC only");
    }
    if (offset > bytes_ || len > bytes_ - offset) {
      return Status::Error(ErrorKind::kInternal, "write [%llu, +%zu) outside the %llu-byte region",
                           static_cast<unsigned long long>(offset), len,
                           static_cast<unsigned long long>(bytes_));
    }
    if (char* host = host_base(); host != nullptr) {
      memcpy(host + offset, src, len);
      return Status::Ok();
    }
    if (stream == nullptr) {
      return Status::Error(ErrorKind::kInternal, "a GPU region write without a copy stream");
    }
    return stream->EnqueueToDevice(reinterpret_cast<void*>(device_base() + offset), src, len);
  }

 private:
  std::shared_ptr<RxArena> arena_;
  uint64_t offset_;
  uint64_t bytes_;
  bool writable_;
};

Result<std::shared_ptr<RxArena>> RxArena::Create(int gpu, uint64_t bytes) {
  std::shared_ptr<RxArena> arena(new RxArena());
  arena->gpu_ = gpu;
  const uint64_t align = arena->alignment();
  arena->bytes_ = (bytes + align - 1) / align * align;
  if (gpu >= 0) {
    // No dmabuf of the whole: each NIC gets an export of its own slice.
    Result<std::unique_ptr<GpuRegion>> memory =
        GpuRegion::Create(gpu, arena->bytes_, /*export_dmabuf=*/false);
    if (!memory.ok()) return memory.status().WithContext("RX arena on GPU " + std::to_string(gpu));
    arena->gpu_memory_ = std::move(memory).value();
    arena->device_base_ = arena->gpu_memory_->device_ptr();
    arena->bytes_ = arena->gpu_memory_->bytes();
  } else {
    Result<std::unique_ptr<HostRegion>> memory = HostRegion::Create(arena->bytes_);
    if (!memory.ok()) return memory.status().WithContext("host RX arena");
    arena->host_memory_ = std::move(memory).value();
    arena->host_base_ = arena->host_memory_->data();
    arena->device_base_ = reinterpret_cast<uintptr_t>(arena->host_base_);
  }
  arena->free_.emplace(0, arena->bytes_);
  return arena;
}

Result<std::shared_ptr<RxArena>> RxArena::Of(int gpu, uint64_t bytes) {
  static std::mutex mutex;
  // Never destroyed: GPU memory must not be freed from a static destructor (the CUDA driver
  // may be torn down first); the process's exit releases it.
  static auto& arenas = *new std::map<int, std::shared_ptr<RxArena>>();  // NOLINT
  std::lock_guard<std::mutex> lock(mutex);
  if (auto it = arenas.find(gpu); it != arenas.end()) return it->second;
  Result<std::shared_ptr<RxArena>> created = Create(gpu, bytes);
  if (!created.ok()) return created.status();
  arenas.emplace(gpu, created.value());
  return created;
}

Result<std::shared_ptr<RxArena>> RxArena::CreateForTest(int gpu, uint64_t bytes) {
  return Create(gpu, bytes);
}

RxArena::~RxArena() = default;

uint64_t RxArena::free_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  uint64_t total = 0;
  for (const auto& [offset, bytes] : free_) total += bytes;
  return total;
}

Result<std::unique_ptr<RxRegion>> RxArena::Carve(uint64_t bytes, bool writable) {
  const uint64_t align = alignment();
  if (bytes == 0 || bytes > bytes_) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "a %llu-byte RX region does not fit the %llu-byte RX arena of %s",
                         static_cast<unsigned long long>(bytes),
                         static_cast<unsigned long long>(bytes_),
                         gpu_ >= 0 ? ("GPU " + std::to_string(gpu_)).c_str() : "host memory");
  }
  const uint64_t want = (bytes + align - 1) / align * align;
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < want) continue;
    const uint64_t offset = it->first;
    const uint64_t left = it->second - want;
    free_.erase(it);
    if (left > 0) free_.emplace(offset + want, left);
    return std::unique_ptr<RxRegion>(
        std::make_unique<ArenaSlice>(shared_from_this(), offset, want, writable));
  }
  uint64_t largest = 0;
  for (const auto& [offset, size] : free_) largest = std::max(largest, size);
  return Status::Error(ErrorKind::kSystem,
                       "the %llu-byte RX arena of %s has no free %llu-byte range (largest free: "
                       "%llu bytes): too many receive connections for NCCL_DEVMEM_RX_REGION_BYTES",
                       static_cast<unsigned long long>(bytes_),
                       gpu_ >= 0 ? ("GPU " + std::to_string(gpu_)).c_str() : "host memory",
                       static_cast<unsigned long long>(want),
                       static_cast<unsigned long long>(largest));
}

void RxArena::Return(uint64_t offset, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto [it, inserted] = free_.emplace(offset, bytes);
  if (!inserted) return;  // cannot happen: a slice is returned once
  // Coalesce with the neighbours so a large slice fits again later.
  if (auto next = std::next(it); next != free_.end() && it->first + it->second == next->first) {
    it->second += next->second;
    free_.erase(next);
  }
  if (it != free_.begin()) {
    auto prev = std::prev(it);
    if (prev->first + prev->second == it->first) {
      prev->second += it->second;
      free_.erase(it);
    }
  }
}

}  // namespace devmem
