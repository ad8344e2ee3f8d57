#include "gpu/scatter_plan.h"

#include <algorithm>
#include <cstring>

namespace devmem::gpu {

void BuildScatterPlan(const std::vector<ScatterEntry>& entries, std::vector<ScatterOp>* ops,
                      uint32_t max_op_bytes) {
  for (const ScatterEntry& e : entries) {
    for (uint32_t done = 0; done < e.length;) {
      const uint32_t piece = std::min(max_op_bytes, e.length - done);
      ops->push_back({e.region_offset + done, e.dst_offset + done, piece, 0});
      done += piece;
    }
  }
}

void ExecuteScatterPlanOnHost(const ScatterOp* ops, size_t count, const char* region, char* dst) {
  for (size_t i = 0; i < count; ++i) {
    memcpy(dst + ops[i].dst_offset, region + ops[i].src_offset, ops[i].length);
  }
}

}  // namespace devmem::gpu
