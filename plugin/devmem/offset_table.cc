#include "plugin/devmem/offset_table.h"

#include <cstring>

namespace devmem {

uint64_t OffsetTable::Append(const StreamSegment* segments, size_t count, uint64_t dst_offset) {
  for (size_t i = 0; i < count; ++i) {
    const StreamSegment& s = segments[i];
    if (s.kind == StreamSegment::Kind::kRegion) {
      if (!entries_.empty()) {
        ScatterEntry& last = entries_.back();
        if (last.region_offset + last.length == s.source_offset &&
            last.dst_offset + last.length == dst_offset &&
            uint64_t{last.length} + s.length <= UINT32_MAX) {
          last.length += s.length;
          dst_offset += s.length;
          continue;
        }
      }
      entries_.push_back({s.source_offset, dst_offset, s.length});
    } else if (s.length > 0) {
      if (!host_ranges_.empty() &&
          host_ranges_.back().dst_offset + host_ranges_.back().length == dst_offset) {
        host_ranges_.back().length += s.length;
      } else {
        host_ranges_.push_back({dst_offset, s.length});
      }
    }
    dst_offset += s.length;
  }
  return dst_offset;
}

uint64_t OffsetTable::bytes() const {
  uint64_t total = 0;
  for (const ScatterEntry& e : entries_) total += e.length;
  return total;
}

Status HostScatter(const OffsetTable& table, const char* region, uint64_t region_bytes, char* dst,
                   uint64_t dst_bytes) {
  for (const ScatterEntry& e : table.entries()) {
    if (e.region_offset > region_bytes || e.length > region_bytes - e.region_offset ||
        e.dst_offset > dst_bytes || e.length > dst_bytes - e.dst_offset) {
      return Status::Error(ErrorKind::kInternal,
                           "scatter entry region [%llu, +%u) -> dst %llu outside region %llu / "
                           "destination %llu",
                           static_cast<unsigned long long>(e.region_offset), e.length,
                           static_cast<unsigned long long>(e.dst_offset),
                           static_cast<unsigned long long>(region_bytes),
                           static_cast<unsigned long long>(dst_bytes));
    }
  }
  for (const ScatterEntry& e : table.entries()) {
    memcpy(dst + e.dst_offset, region + e.region_offset, e.length);
  }
  return Status::Ok();
}

}  // namespace devmem
