// The GPU scatter's work list: an offset table cut into pieces a warp copies in one go. Plain
// C++ (no CUDA headers) so the plugin, tests and benchmarks share it on machines without GPUs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "plugin/devmem/offset_table.h"

namespace devmem::gpu {

// One warp's copy: `length` bytes from region + src_offset to destination + dst_offset.
struct ScatterOp {
  uint64_t src_offset;
  uint64_t dst_offset;
  uint32_t length;
  uint32_t reserved;
};
static_assert(sizeof(ScatterOp) == 24);

// Entries longer than this are split so that one huge frag does not serialize on one warp.
inline constexpr uint32_t kMaxOpBytes = 64 << 10;

// Appends the ops for `entries` to *ops (order preserved; every byte covered exactly once).
void BuildScatterPlan(const std::vector<ScatterEntry>& entries, std::vector<ScatterOp>* ops,
                      uint32_t max_op_bytes = kMaxOpBytes);

// The reference: what the kernel must produce, executed on the CPU.
void ExecuteScatterPlanOnHost(const ScatterOp* ops, size_t count, const char* region, char* dst);

}  // namespace devmem::gpu
