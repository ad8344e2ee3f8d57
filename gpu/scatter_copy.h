// What one lane of the scatter kernel copies. The kernel (scatter_kernel.cu) is only thread
// index arithmetic around ScatterOpsLane; the copy itself is here, as __host__ __device__ code
// that g++ also compiles, so a CPU unit test runs it lane by lane against memcpy on machines
// without a GPU (tests/gpu/scatter_copy_test.cc). C++17: nvcc builds the kernel as C++17.
#pragma once

#include <cstdint>
#include <cstring>

#include "gpu/scatter_plan.h"

#if defined(__CUDACC__)
#include <vector_types.h>
#define DEVMEM_HOST_DEVICE __host__ __device__
#else
#define DEVMEM_HOST_DEVICE
#endif

namespace devmem::gpu {

// The widest access (16, 8, 4, 2 or 1 bytes) that source and destination can both make
// aligned: the largest width modulo which they are congruent, i.e. the lowest set bit of
// (src ^ dst) mod 16. After a common head of fewer than `width` bytes both sit on a `width`
// boundary. NCCL's unpack (bulkLoad<16/8/4/2/1>) takes the lowest set bit of (src | dst) mod 16
// and has no head; ours is never narrower, and wider when the two share a misalignment (two
// pointers both at 3 mod 16 copy 13 head bytes, then 16-byte words, where NCCL copies bytes).
DEVMEM_HOST_DEVICE inline uint32_t CommonCopyWidth(uintptr_t src, uintptr_t dst) {
  const uint32_t skew = static_cast<uint32_t>((src ^ dst) & 15u);
  return skew == 0 ? 16u : (skew & (0u - skew));
}

#if defined(__CUDACC__)
using Word16 = uint4;
#else
struct alignas(16) Word16 {
  uint64_t lo;
  uint64_t hi;
};
#endif
static_assert(sizeof(Word16) == 16 && alignof(Word16) == 16);

// One aligned word. The device dereferences (one vector load or store); the host goes through
// memcpy, which compiles to the same single move and keeps the test free of aliasing UB.
template <typename Word>
DEVMEM_HOST_DEVICE inline Word LoadWord(const char* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const Word*>(p);
#else
  Word word;
  memcpy(&word, p, sizeof(Word));
  return word;
#endif
}

template <typename Word>
DEVMEM_HOST_DEVICE inline void StoreWord(char* p, const Word& word) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<Word*>(p) = word;
#else
  memcpy(p, &word, sizeof(Word));
#endif
}

// Words `lane`, `lane + lanes`, ... of `words` aligned words: consecutive lanes touch
// consecutive words, so each warp-wide access is one contiguous run. Four loads are in flight
// per lane before their stores, to cover memory latency.
template <typename Word>
DEVMEM_HOST_DEVICE inline void CopyWordsLane(const char* __restrict__ src, char* __restrict__ dst,
                                             uint64_t words, uint64_t lane, uint64_t lanes) {
  constexpr uint64_t kBatch = 4;
  uint64_t w = lane;
  for (; w + (kBatch - 1) * lanes < words; w += kBatch * lanes) {
    Word batch[kBatch];
    for (uint64_t i = 0; i < kBatch; ++i) {
      batch[i] = LoadWord<Word>(src + (w + i * lanes) * sizeof(Word));
    }
    for (uint64_t i = 0; i < kBatch; ++i) {
      StoreWord<Word>(dst + (w + i * lanes) * sizeof(Word), batch[i]);
    }
  }
  for (; w < words; w += lanes) {
    StoreWord<Word>(dst + w * sizeof(Word), LoadWord<Word>(src + w * sizeof(Word)));
  }
}

// Lane `lane` of a group of `lanes` (a warp: 32) copies its share of `length` bytes from src to
// dst; all lanes together write every byte of [dst, dst + length) exactly once and nothing
// else, whatever the alignments. Head bytes up to the common width boundary, then
// CommonCopyWidth-wide words, then the tail bytes. src and dst must not overlap.
DEVMEM_HOST_DEVICE inline void CopyBytesLane(const char* __restrict__ src, char* __restrict__ dst,
                                             uint32_t length, uint32_t lane, uint32_t lanes) {
  const uint64_t width =
      CommonCopyWidth(reinterpret_cast<uintptr_t>(src), reinterpret_cast<uintptr_t>(dst));
  // src and dst agree modulo width, so this head aligns both.
  uint64_t head = (width - (reinterpret_cast<uintptr_t>(dst) & (width - 1))) & (width - 1);
  if (head > length) head = length;
  for (uint64_t b = lane; b < head; b += lanes) dst[b] = src[b];
  const uint64_t words = (length - head) / width;
  const char* body_src = src + head;
  char* body_dst = dst + head;
  switch (width) {
    case 16:
      CopyWordsLane<Word16>(body_src, body_dst, words, lane, lanes);
      break;
    case 8:
      CopyWordsLane<uint64_t>(body_src, body_dst, words, lane, lanes);
      break;
    case 4:
      CopyWordsLane<uint32_t>(body_src, body_dst, words, lane, lanes);
      break;
    case 2:
      CopyWordsLane<uint16_t>(body_src, body_dst, words, lane, lanes);
      break;
    default:
      CopyWordsLane<uint8_t>(body_src, body_dst, words, lane, lanes);
      break;
  }
  for (uint64_t b = head + words * width + lane; b < length; b += lanes) dst[b] = src[b];
}

// The kernel body for one thread: warp `warp` of `warps` takes ops warp, warp + warps, ... and
// its lane `lane` of `lanes` copies its share of each.
DEVMEM_HOST_DEVICE inline void ScatterOpsLane(const ScatterOp* __restrict__ ops, uint32_t count,
                                              const char* region, char* dst, uint32_t warp,
                                              uint32_t warps, uint32_t lane, uint32_t lanes) {
  for (uint64_t i = warp; i < count; i += warps) {
    const ScatterOp op = ops[i];
    CopyBytesLane(region + op.src_offset, dst + op.dst_offset, op.length, lane, lanes);
  }
}

}  // namespace devmem::gpu
