#include "plugin/consumers/unpack_queue.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "plugin/cuda/cuda_driver.h"

namespace devmem::unpack {

Result<std::unique_ptr<UnpackQueue>> UnpackQueue::Create(uint64_t bounce_base,
                                                         uint64_t region_offset,
                                                         uint64_t region_bytes,
                                                         NicWriteBarrier barrier) {
  if (region_offset + region_bytes > uint64_t{UINT32_MAX} + 1) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "NCCL's unpack addresses the RX arena with 32-bit offsets; a %llu-byte "
                         "region at offset %llu is beyond them (NCCL_DEVMEM_RX_REGION_BYTES too "
                         "large for NCCL_DEVMEM_UNPACK=nccl)",
                         static_cast<unsigned long long>(region_bytes),
                         static_cast<unsigned long long>(region_offset));
  }
  std::unique_ptr<UnpackQueue> queue(new UnpackQueue());
  const size_t bytes = sizeof(NetUnpackMeta) + sizeof(UnpackDeviceHandle);
  void* memory = nullptr;
  Result<const CudaDriver*> driver = CudaDriver::Get();
  if (driver.ok() && driver.value()->HostAlloc(bytes, &memory).ok()) {
    queue->pinned_ = true;
  } else if (posix_memalign(&memory, 4096, bytes) != 0) {
    return Status::Error(ErrorKind::kSystem, "allocating %zu bytes of unpack metadata", bytes);
  }
  queue->memory_ = static_cast<char*>(memory);
  memset(queue->memory_, 0, bytes);
  queue->meta_ = new (queue->memory_) NetUnpackMeta;
  queue->handle_ = new (queue->memory_ + sizeof(NetUnpackMeta)) UnpackDeviceHandle;
  queue->handle_->meta = queue->meta_;
  queue->handle_->bounce_buf = reinterpret_cast<void*>(static_cast<uintptr_t>(bounce_base));
  // NCCL's SIMPLE primitives increment the head in waitPeer() before genericOp() unpacks the
  // step (NVIDIA/nccl src/device/prims_simple.h waitPeer -> ncclNetDeviceIncrementHead, then
  // src/device/network/unpack/unpack.h reads head[] % 16), so the first step reads slot
  // (head + 1) % 16. Starting one below zero makes that slot 0, the slot Claim() hands the
  // first SIMPLE receive; TCPX does the same (unpack1.cu: "nccl side increments the counter
  // prior to performing copy"). NCCL owns head from here on: its kernels save it back at exit
  // (ncclNetDeviceSaveHead), and the plugin never writes it again.
  queue->handle_->head = kInitialHead;
  queue->region_offset_ = region_offset;
  queue->region_bytes_ = region_bytes;
  queue->barrier_ = barrier;
  return queue;
}

UnpackQueue::~UnpackQueue() {
  if (memory_ == nullptr) return;
  if (pinned_) {
    CudaDriver::Get().value()->HostFree(memory_);
  } else {
    free(memory_);
  }
}

Result<uint32_t> UnpackQueue::Claim() {
  const uint32_t slot = static_cast<uint32_t>(claimed_ % kQueueDepth);
  if (busy_[slot]) {
    return Status::Error(ErrorKind::kInvalidUsage,
                         "more than %u receives outstanding on an unpack comm (slot %u was not "
                         "consumed yet); NCCL keeps at most 8",
                         kQueueDepth, slot);
  }
  busy_[slot] = true;
  ++claimed_;
  return slot;
}

Status UnpackQueue::Publish(uint32_t slot, const OffsetTable* const* tables, size_t count) {
  if (slot >= kQueueDepth || !busy_[slot]) {
    return Status::Error(ErrorKind::kInternal, "publishing unpack slot %u that is not claimed",
                         slot);
  }
  LoadMeta* out = meta_->mem[slot];
  uint64_t n = 0;
  for (size_t t = 0; t < count; ++t) {
    if (tables[t] == nullptr) continue;
    for (const ScatterEntry& e : tables[t]->entries()) {
      if (n == kMaxMetasPerSlot) {
        return Status::Error(ErrorKind::kInvalidUsage,
                             "a step needs more than %u unpack entries (NCCL's per-step limit); "
                             "steps are capped at %llu bytes",
                             kMaxMetasPerSlot, static_cast<unsigned long long>(kMaxSliceBytes));
      }
      if (e.region_offset > region_bytes_ || e.length > region_bytes_ - e.region_offset) {
        return Status::Error(ErrorKind::kInternal,
                             "frag [%llu, +%u) outside the %llu-byte RX region",
                             static_cast<unsigned long long>(e.region_offset), e.length,
                             static_cast<unsigned long long>(region_bytes_));
      }
      // src_off is from bounce_buf, the arena's base (Create checked it fits 32 bits).
      out[n++] =
          LoadMeta{static_cast<uint32_t>(region_offset_ + e.region_offset), e.length, e.dst_offset};
    }
  }
  // NCCL's kernels read the step once test() reports it, with no flush of their own unless NCCL
  // decides to call iflush: the NIC's writes of these frags are made visible first (N1).
  if (n > 0) DEVMEM_RETURN_IF_ERROR(barrier_.BeforeGpuReads());
  // NCCL's kernel reads cnt with a relaxed load after the proxy's seq_cst fence and tail
  // store; our release store orders the entries before the count for any reader.
  std::atomic_ref<uint64_t>(meta_->cnt[slot]).store(n, std::memory_order_release);
  return Status::Ok();
}

void UnpackQueue::Consumed(uint32_t slot) {
  if (slot < kQueueDepth) busy_[slot] = false;
}

Status UnpackQueue::Unclaim(uint32_t slot) {
  if (claimed_ == 0 || slot != (claimed_ - 1) % kQueueDepth || !busy_[slot]) {
    return Status::Error(ErrorKind::kInternal, "unclaiming unpack slot %u, which is not the latest",
                         slot);
  }
  busy_[slot] = false;
  --claimed_;
  return Status::Ok();
}

Status ExecuteOnHost(const NetUnpackMeta& meta, uint32_t slot, const char* bounce,
                     uint64_t bounce_bytes, char* dst, uint64_t dst_bytes) {
  if (slot >= kQueueDepth) {
    return Status::Error(ErrorKind::kInvalidArgument, "unpack slot %u", slot);
  }
  const uint64_t n = std::atomic_ref<uint64_t>(const_cast<uint64_t&>(meta.cnt[slot]))
                         .load(std::memory_order_acquire);
  if (n > kMaxMetasPerSlot) {
    return Status::Error(ErrorKind::kInvalidArgument, "unpack slot %u claims %llu entries", slot,
                         static_cast<unsigned long long>(n));
  }
  for (uint64_t i = 0; i < n; ++i) {
    const LoadMeta& m = meta.mem[slot][i];
    if (uint64_t{m.src_off} + m.len > bounce_bytes || m.dst_off + m.len > dst_bytes) {
      return Status::Error(ErrorKind::kInvalidArgument, "unpack entry %llu out of bounds",
                           static_cast<unsigned long long>(i));
    }
    memcpy(dst + m.dst_off, bounce + m.src_off, m.len);
  }
  return Status::Ok();
}

}  // namespace devmem::unpack
