// ParseDevmemReceive against arbitrary recvmsg results: the control buffer is raw fuzz bytes
// (any cmsg_len, level, type, truncation), the byte count, binding and bounce size too. The
// control buffer is allocated at its exact length, so ASan sees any read past msg_controllen.
//
// Input: u8 flags (bit 0: MSG_CTRUNC), u32 dmabuf id, u64 region bytes, u64 host capacity
// (taken modulo 64 GiB + 1), i64 bytes received, then the control buffer (the rest).
//
// Invariants: on success the new segments describe exactly the bytes received, in stream order;
// region segments lie inside the region, host segments inside the bounce buffer and back to
// back; the summary counts match the segments; the offset table built from them covers the
// same bytes. On failure nothing is appended.
#include <sys/socket.h>

#include <memory>
#include <vector>

#include "plugin/devmem/frag_parser.h"
#include "plugin/devmem/offset_table.h"
#include "tests/fuzz/fuzz_input.h"

namespace devmem {
namespace {

void CheckSegments(const std::vector<StreamSegment>& segments, size_t first,
                   const ParsedReceive& parsed, const RegionBinding& binding, size_t host_capacity,
                   ssize_t received) {
  uint64_t total = 0, region = 0, host = 0, host_cursor = 0;
  size_t frags = 0;
  for (size_t i = first; i < segments.size(); ++i) {
    const StreamSegment& s = segments[i];
    FUZZ_CHECK(s.length > 0 || parsed.plain, "empty segment %zu", i);
    if (s.kind == StreamSegment::Kind::kRegion) {
      FUZZ_CHECK(!parsed.plain, "region segment in a plain receive");
      FUZZ_CHECK(s.source_offset <= binding.region_bytes &&
                     s.length <= binding.region_bytes - s.source_offset,
                 "frag [%llu, +%u) outside the %llu-byte region",
                 static_cast<unsigned long long>(s.source_offset), s.length,
                 static_cast<unsigned long long>(binding.region_bytes));
      region += s.length;
      ++frags;
    } else {
      FUZZ_CHECK(s.source_offset == host_cursor, "host bytes at %llu, expected %llu",
                 static_cast<unsigned long long>(s.source_offset),
                 static_cast<unsigned long long>(host_cursor));
      host_cursor += s.length;
      FUZZ_CHECK(host_cursor <= host_capacity, "host bytes end at %llu, bounce holds %zu",
                 static_cast<unsigned long long>(host_cursor), host_capacity);
      host += s.length;
    }
    total += s.length;
  }
  FUZZ_CHECK(total == static_cast<uint64_t>(received),
             "segments describe %llu bytes, recvmsg returned %lld",
             static_cast<unsigned long long>(total), static_cast<long long>(received));
  FUZZ_CHECK(parsed.region_bytes == region && parsed.host_bytes == host && parsed.frags == frags,
             "summary %llu/%llu/%zu, segments %llu/%llu/%zu",
             static_cast<unsigned long long>(parsed.region_bytes),
             static_cast<unsigned long long>(parsed.host_bytes), parsed.frags,
             static_cast<unsigned long long>(region), static_cast<unsigned long long>(host), frags);

  // The scatter plan of these segments covers them exactly, at a destination offset > 0.
  OffsetTable table;
  const uint64_t start = 4096;
  const uint64_t end = table.Append(segments.data() + first, segments.size() - first, start);
  FUZZ_CHECK(end - start == total, "offset table advanced %llu for %llu bytes",
             static_cast<unsigned long long>(end - start), static_cast<unsigned long long>(total));
  FUZZ_CHECK(table.bytes() == region, "offset table holds %llu region bytes of %llu",
             static_cast<unsigned long long>(table.bytes()),
             static_cast<unsigned long long>(region));
  uint64_t ranged = 0;
  for (const HostRange& r : table.host_ranges()) {
    FUZZ_CHECK(r.dst_offset >= start && r.dst_offset + r.length <= end, "host range outside");
    ranged += r.length;
  }
  FUZZ_CHECK(ranged == host, "host ranges hold %llu of %llu bytes",
             static_cast<unsigned long long>(ranged), static_cast<unsigned long long>(host));
  for (const ScatterEntry& e : table.entries()) {
    FUZZ_CHECK(e.dst_offset >= start && e.dst_offset + e.length <= end, "entry outside");
  }
}

}  // namespace
}  // namespace devmem

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace devmem;
  fuzz::ByteReader in(data, size);
  const uint8_t flags = in.Take<uint8_t>();
  RegionBinding binding;
  binding.dmabuf_id = in.Take<uint32_t>();
  binding.region_bytes = in.Take<uint64_t>();
  // The bounce buffer is real memory: at most 64 GiB (enough to cross every 32-bit boundary).
  const size_t host_capacity = in.Take<uint64_t>() % ((uint64_t{64} << 30) + 1);
  const ssize_t received = in.Take<int64_t>();

  // Exactly the control bytes the "kernel" wrote, in a buffer of exactly that size.
  const size_t control_bytes = in.left();
  std::unique_ptr<uint8_t[]> control(control_bytes > 0 ? new uint8_t[control_bytes] : nullptr);
  if (control_bytes > 0) memcpy(control.get(), in.rest(), control_bytes);
  msghdr msg{};
  msg.msg_control = control.get();
  msg.msg_controllen = control_bytes;
  msg.msg_flags = (flags & 1) != 0 ? MSG_CTRUNC : 0;

  std::vector<StreamSegment> segments(1);  // the parser appends: one segment already there
  segments[0].length = 77;
  Result<ParsedReceive> parsed =
      ParseDevmemReceive(msg, received, binding, host_capacity, &segments);
  FUZZ_CHECK(segments[0].length == 77, "the parser overwrote an earlier segment");
  if (!parsed.ok()) {
    FUZZ_CHECK(segments.size() == 1, "a failed parse left %zu segments", segments.size() - 1);
    FUZZ_CHECK(!parsed.status().message().empty(), "an error without a message");
    return 0;
  }
  FUZZ_CHECK(received >= 0, "a failed recvmsg (%lld) parsed", static_cast<long long>(received));
  FUZZ_CHECK((flags & 1) == 0, "MSG_CTRUNC parsed");
  CheckSegments(segments, 1, parsed.value(), binding, host_capacity, received);
  return 0;
}
