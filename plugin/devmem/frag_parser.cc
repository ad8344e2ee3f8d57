#include "plugin/devmem/frag_parser.h"

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
  const size_t first_segment = segments->size();
  uint64_t host_cursor = 0;
  for (cmsghdr* cm = CMSG_FIRSTHDR(const_cast<msghdr*>(&msg)); cm != nullptr;
       cm = CMSG_NXTHDR(const_cast<msghdr*>(&msg), cm)) {
    if (cm->cmsg_level != SOL_SOCKET ||
        (cm->cmsg_type != uapi::kScmDevmemDmabuf && cm->cmsg_type != uapi::kScmDevmemLinear)) {
      segments->resize(first_segment);
      return Status::Error(ErrorKind::kSystem,
                           "unexpected cmsg level %d type %d on a devmem socket", cm->cmsg_level,
                           cm->cmsg_type);
    }
    if (cm->cmsg_len < CMSG_LEN(sizeof(uapi::DmabufCmsg))) {
      segments->resize(first_segment);
      return Status::Error(ErrorKind::kSystem, "devmem cmsg of %zu bytes, expected %zu",
                           static_cast<size_t>(cm->cmsg_len), CMSG_LEN(sizeof(uapi::DmabufCmsg)));
    }
    uapi::DmabufCmsg frag;
    memcpy(&frag, CMSG_DATA(cm), sizeof(frag));
    if (frag.frag_size == 0) {
      segments->resize(first_segment);
      return Status::Error(ErrorKind::kSystem, "devmem frag of 0 bytes");
    }
    StreamSegment segment;
    segment.length = frag.frag_size;
    if (cm->cmsg_type == uapi::kScmDevmemLinear) {
      if (host_cursor + frag.frag_size > host_capacity) {
        segments->resize(first_segment);
        return Status::Error(
            ErrorKind::kSystem, "%u linear bytes at %llu overflow the %zu-byte bounce buffer",
            frag.frag_size, static_cast<unsigned long long>(host_cursor), host_capacity);
      }
      segment.kind = StreamSegment::Kind::kHost;
      segment.source_offset = host_cursor;
      host_cursor += frag.frag_size;
      out.host_bytes += frag.frag_size;
    } else {
      if (frag.dmabuf_id != binding.dmabuf_id) {
        segments->resize(first_segment);
        return Status::Error(ErrorKind::kSystem,
                             "frag from dmabuf %u, this connection is bound to %u (flow steered "
                             "to another queue's binding?)",
                             frag.dmabuf_id, binding.dmabuf_id);
      }
      if (frag.frag_offset > binding.region_bytes ||
          frag.frag_size > binding.region_bytes - frag.frag_offset) {
        segments->resize(first_segment);
        return Status::Error(ErrorKind::kSystem, "frag [%llu, +%u) outside the %llu-byte region",
                             static_cast<unsigned long long>(frag.frag_offset), frag.frag_size,
                             static_cast<unsigned long long>(binding.region_bytes));
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
    StreamSegment segment;
    segment.kind = StreamSegment::Kind::kHost;
    segment.length = static_cast<uint32_t>(received);
    segments->push_back(segment);
    out.plain = true;
    out.host_bytes = static_cast<uint64_t>(received);
    return out;
  }
  if (out.region_bytes + out.host_bytes != static_cast<uint64_t>(received)) {
    segments->resize(first_segment);
    return Status::Error(
        ErrorKind::kSystem, "devmem frags describe %llu bytes but recvmsg returned %zd",
        static_cast<unsigned long long>(out.region_bytes + out.host_bytes), received);
  }
  return out;
}

}  // namespace devmem
