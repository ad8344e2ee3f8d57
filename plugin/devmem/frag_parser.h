// Turns one recvmsg(MSG_SOCK_DEVMEM) result into stream-ordered segments, validating every
// frag against the binding it must belong to. A frag that fails a check is an error on the
// connection: nothing downstream ever reads or writes outside the region or the bounce buffer.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "plugin/core/status.h"

namespace devmem {

// A piece of the TCP stream, in order: either in the bound region (a devmem frag with a
// token) or in the host bounce buffer given to recvmsg (linear bytes or plain data).
struct StreamSegment {
  enum class Kind : uint8_t { kRegion, kHost } kind = Kind::kRegion;
  uint64_t source_offset = 0;  // region offset, or offset in the host bounce buffer
  uint32_t length = 0;
  uint32_t token = 0;  // kRegion only
};

// Plain data longer than this is described as several consecutive kHost segments (lengths are
// 32-bit; 2 GiB keeps every piece page-aligned).
inline constexpr uint32_t kMaxSegmentBytes = uint32_t{1} << 31;

struct RegionBinding {
  uint32_t dmabuf_id = 0;     // what bind-rx returned
  uint64_t region_bytes = 0;  // size of the bound region
  // The binding's niov size (PAGE_SIZE, or the rx-page-size bind-rx carried): a frag lies in
  // one niov (frag_geometry.h). 0: not checked (tests of other rules).
  uint32_t niov_bytes = 0;
};

struct ParsedReceive {
  bool plain = false;         // no devmem cmsg at all: ordinary data in the bounce buffer
  uint64_t region_bytes = 0;  // bytes described by SCM_DEVMEM_DMABUF frags
  uint64_t host_bytes = 0;    // linear (or plain) bytes in the bounce buffer
  size_t frags = 0;           // devmem frags (tokens to return)
};

// Appends the segments of one recvmsg() that returned `received` bytes to *segments.
// `host_capacity` is the bounce buffer's length (linear bytes must fit in it). Only the
// msg_controllen bytes at msg_control are read; a cmsg that runs past them, or is too short
// for a dmabuf_cmsg, is an error. On any error *segments is left as it was.
Result<ParsedReceive> ParseDevmemReceive(const msghdr& msg, ssize_t received,
                                         const RegionBinding& binding, size_t host_capacity,
                                         std::vector<StreamSegment>* segments);

}  // namespace devmem
