// The scatter plan of one receive: where each devmem frag sits in the bound region and where
// it goes in the destination buffer. The same table feeds the host scatter (host destinations
// and test reference) and, for CUDA destinations, the GPU scatter engine.
#pragma once

#include <cstdint>
#include <vector>

#include "plugin/core/status.h"
#include "plugin/devmem/frag_parser.h"

namespace devmem {

struct ScatterEntry {
  uint64_t region_offset;
  uint64_t dst_offset;
  uint32_t length;
};

// Bytes of the destination that arrived as host data (linear frags, plain data): they were
// copied to the host landing buffer at once and only need moving if that is not the target.
struct HostRange {
  uint64_t dst_offset;
  uint64_t length;
};

class OffsetTable {
 public:
  // Adds the region segments of a stream piece that starts at `dst_offset` in the destination;
  // host segments are recorded as host ranges (their bytes are copied out of the bounce buffer
  // at once) and advance the destination offset. Entries contiguous in both region and
  // destination merge. Returns the destination offset after the piece.
  uint64_t Append(const StreamSegment* segments, size_t count, uint64_t dst_offset);
  void Clear() {
    entries_.clear();
    host_ranges_.clear();
  }
  const std::vector<ScatterEntry>& entries() const { return entries_; }
  const std::vector<HostRange>& host_ranges() const { return host_ranges_; }
  uint64_t bytes() const;

 private:
  std::vector<ScatterEntry> entries_;
  std::vector<HostRange> host_ranges_;
};

// Copies every entry from `region` to `dst` after checking it stays inside both.
Status HostScatter(const OffsetTable& table, const char* region, uint64_t region_bytes, char* dst,
                   uint64_t dst_bytes);

}  // namespace devmem
