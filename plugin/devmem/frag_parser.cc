#include "plugin/devmem/frag_parser.h"

#include <algorithm>
#include <cstring>

#include "plugin/devmem/uapi.h"

namespace devmem {

Result<ParsedReceive> ParseDevmemReceive(const msghdr& msg, ssize_t received,
                                         const RegionBinding& binding, size_t host_capacity,
                                         std::vector<StreamSegment>* segments) {
  ParsedReceive out;
  if (received < 0) {
    return Status::Error(ErrorKind::kInternal, "parser called for a failed recvmsg");
  }
  if ((msg.msg_flags & MSG_CTRUNC) != 0) {
    // Kernels before 6.14 could cut a cmsg short: the frag list is then incomplete and the
    // stream position unknown, so the connection cannot continue.
    return Status::Error(ErrorKind::kSystem,
                         "devmem recvmsg control data truncated (MSG_CTRUNC): frag list lost; "
                         "enlarge the control buffer");
  }
  if (msg.msg_control == nullptr && msg.msg_controllen != 0) {
    return Status::Error(ErrorKind::kInternal, "%zu bytes of control data without a buffer",
                         static_cast<size_t>(msg.msg_controllen));
  }
  const size_t first_segment = segments->size();
  auto fail = [&](Status status) {
    segments->resize(first_segment);
    return status;
  };
  // The cmsgs are walked by hand: CMSG_FIRSTHDR does not check the first cmsg's length against
  // msg_controllen, and CMSG_NXTHDR silently ends the walk at a cmsg that runs past it. Each
  // cmsg must fit in what is left of the control data before any of its payload is read.
  const auto* control = static_cast<const unsigned char*>(msg.msg_control);
  const size_t control_bytes = msg.msg_controllen;
  uint64_t host_cursor = 0;
  for (size_t at = 0; at < control_bytes;) {
    const size_t left = control_bytes - at;
    if (left < sizeof(cmsghdr)) {
      return fail(Status::Error(ErrorKind::kSystem,
                                "devmem control data ends %zu bytes into a cmsg header (%zu of "
                                "%zu bytes parsed)",
                                left, at, control_bytes));
    }
    cmsghdr header;
    memcpy(&header, control + at, sizeof(header));
    const size_t cmsg_bytes = header.cmsg_len;
    if (cmsg_bytes > left) {
      return fail(Status::Error(ErrorKind::kSystem,
                                "devmem cmsg of %zu bytes at byte %zu runs past the %zu-byte "
                                "control data",
                                cmsg_bytes, at, control_bytes));
    }
    if (header.cmsg_level != SOL_SOCKET || (header.cmsg_type != uapi::kScmDevmemDmabuf &&
                                            header.cmsg_type != uapi::kScmDevmemLinear)) {
      return fail(Status::Error(ErrorKind::kSystem,
                                "unexpected cmsg level %d type %d on a devmem socket",
                                header.cmsg_level, header.cmsg_type));
    }
    if (cmsg_bytes < CMSG_LEN(sizeof(uapi::DmabufCmsg))) {
      return fail(Status::Error(ErrorKind::kSystem, "devmem cmsg of %zu bytes, expected %zu",
                                cmsg_bytes, CMSG_LEN(sizeof(uapi::DmabufCmsg))));
    }
    uapi::DmabufCmsg frag;
    memcpy(&frag, control + at + CMSG_LEN(0), sizeof(frag));
    at += CMSG_ALIGN(cmsg_bytes);
    if (frag.frag_size == 0) {
      return fail(Status::Error(ErrorKind::kSystem, "devmem frag of 0 bytes"));
    }
    StreamSegment segment;
    segment.length = frag.frag_size;
    if (header.cmsg_type == uapi::kScmDevmemLinear) {
      if (host_cursor + frag.frag_size > host_capacity) {
        return fail(Status::Error(
            ErrorKind::kSystem, "%u linear bytes at %llu overflow the %zu-byte bounce buffer",
            frag.frag_size, static_cast<unsigned long long>(host_cursor), host_capacity));
      }
      segment.kind = StreamSegment::Kind::kHost;
      segment.source_offset = host_cursor;
      host_cursor += frag.frag_size;
      out.host_bytes += frag.frag_size;
    } else {
      if (frag.dmabuf_id != binding.dmabuf_id) {
        return fail(Status::Error(ErrorKind::kSystem,
                                  "frag from dmabuf %u, this connection is bound to %u (flow "
                                  "steered to another queue's binding?)",
                                  frag.dmabuf_id, binding.dmabuf_id));
      }
      if (frag.frag_offset > binding.region_bytes ||
          frag.frag_size > binding.region_bytes - frag.frag_offset) {
        return fail(Status::Error(ErrorKind::kSystem,
                                  "frag [%llu, +%u) outside the %llu-byte region",
                                  static_cast<unsigned long long>(frag.frag_offset), frag.frag_size,
                                  static_cast<unsigned long long>(binding.region_bytes)));
      }
      if (binding.niov_bytes != 0 &&
          frag.frag_offset % binding.niov_bytes + frag.frag_size > binding.niov_bytes) {
        // One cmsg per skb frag, and a frag is one netmem (frag_geometry.h): a frag across a
        // niov boundary means the binding's page size is not what was asked for.
        return fail(Status::Error(
            ErrorKind::kSystem, "frag [%llu, +%u) crosses a %u-byte RX page (niov) boundary",
            static_cast<unsigned long long>(frag.frag_offset), frag.frag_size, binding.niov_bytes));
      }
      segment.kind = StreamSegment::Kind::kRegion;
      segment.source_offset = frag.frag_offset;
      segment.token = frag.frag_token;
      out.region_bytes += frag.frag_size;
      ++out.frags;
    }
    segments->push_back(segment);
  }
  if (segments->size() == first_segment && received > 0) {
    // No cmsg: the queue this flow landed on is not bound, the kernel copied plain data.
    if (static_cast<uint64_t>(received) > host_capacity) {
      return Status::Error(ErrorKind::kInternal, "plain read larger than its buffer");
    }
    // Segment lengths are 32-bit: a larger read is described in consecutive pieces.
    for (uint64_t offset = 0; offset < static_cast<uint64_t>(received);) {
      StreamSegment segment;
      segment.kind = StreamSegment::Kind::kHost;
      segment.source_offset = offset;
      segment.length = static_cast<uint32_t>(
          std::min<uint64_t>(static_cast<uint64_t>(received) - offset, kMaxSegmentBytes));
      segments->push_back(segment);
      offset += segment.length;
    }
    out.plain = true;
    out.host_bytes = static_cast<uint64_t>(received);
    return out;
  }
  if (out.region_bytes + out.host_bytes != static_cast<uint64_t>(received)) {
    return fail(Status::Error(
        ErrorKind::kSystem, "devmem frags describe %llu bytes but recvmsg returned %zd",
        static_cast<unsigned long long>(out.region_bytes + out.host_bytes), received));
  }
  return out;
}

}  // namespace devmem
