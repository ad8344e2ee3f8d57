// RecvComm's control stream: message headers (and inline payload) from the sender, matched to
// posted receives by tag in posting order; each matched message is queued on the data sockets.
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "plugin/core/log.h"
#include "plugin/transport/comm.h"

namespace devmem {

Status RecvComm::ReadControl(size_t most) {
  if (rx_begin_ > 0) {
    memmove(rx_buffer_.data(), rx_buffer_.data() + rx_begin_, rx_end_ - rx_begin_);
    rx_end_ -= rx_begin_;
    rx_begin_ = 0;
  }
  while (rx_end_ < rx_buffer_.size()) {
    size_t room = rx_buffer_.size() - rx_end_;
    if (most > 0) room = std::min(room, most);
    ssize_t n = recv(control_.get(), rx_buffer_.data() + rx_end_, room, MSG_DONTWAIT);
    if (n > 0) {
      rx_end_ += static_cast<size_t>(n);
      if (most == 0 && rx_end_ == rx_buffer_.size() && rx_buffer_.size() < kControlRxMost) {
        rx_buffer_.resize(rx_buffer_.size() * 2);  // the peer sends more than it holds
      }
      return Status::Ok();
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Status::Ok();
    Status status = n == 0 ? Status::Error(ErrorKind::kRemote,
                                           "peer closed the control connection while receives "
                                           "were posted")
                           : Status::PeerErrno(errno, "recv on the control connection");
    health_.Fail(status);
    return status;
  }
  return Status::Ok();
}

void RecvComm::ConsumeInline() {
  const size_t available = rx_end_ - rx_begin_;
  const size_t n = static_cast<size_t>(std::min<uint64_t>(inline_left_, available));
  if (inline_dst_ != nullptr && n > 0) {
    memcpy(inline_dst_, rx_buffer_.data() + rx_begin_, n);
    inline_dst_ += n;
  }
  rx_begin_ += n;
  inline_left_ -= n;
  if (inline_left_ == 0 && inline_request_ != nullptr) {
    --inline_request_->inline_pending;
    inline_request_ = nullptr;
  }
}

Result<bool> RecvComm::Dispatch(const wire::MessageHeader& header) {
  Request* request = nullptr;
  SubRequest* sub = nullptr;
  for (size_t r = 0; r < posted_.size() && sub == nullptr; ++r) {
    for (int i = 0; i < posted_[r]->count; ++i) {
      SubRequest& candidate = posted_[r]->subs[i];
      if (!candidate.matched && candidate.tag == header.tag) {
        request = posted_[r];
        sub = &candidate;
        break;
      }
    }
  }
  if (sub == nullptr) return false;  // the matching irecv is not posted yet

  const bool is_inline = header.kind == wire::MessageHeader::kInline;
  // kStripedOver: only the named data sockets carry this message's chunks.
  const uint64_t allowed = header.kind == wire::MessageHeader::kStripedOver ? header.sockets : 0;
  if (data_sockets_.size() < 64 && (allowed >> data_sockets_.size()) != 0) {
    Status status = Status::Error(
        ErrorKind::kRemote, "peer striped a message over data sockets 0x%llx, this comm has %zu",
        static_cast<unsigned long long>(allowed), data_sockets_.size());
    health_.Fail(status);
    return status;
  }
  if (is_inline && header.size > params_.inline_bytes) {
    Status status =
        Status::Error(ErrorKind::kRemote, "peer sent %llu inline bytes, above the negotiated %u",
                      static_cast<unsigned long long>(header.size), params_.inline_bytes);
    health_.Fail(status);
    return status;
  }
  sub->matched = true;
  --request->unmatched;
  sub->size = header.size;
  char* destination = sub->data;
  if (header.size > sub->capacity) {
    // Drain the payload so the connection stays in step; report on this request only.
    request->error = Status::Error(
        ErrorKind::kInvalidUsage,
        "message truncated: peer sent %llu bytes with tag %d, the posted buffer holds %llu",
        static_cast<unsigned long long>(header.size), header.tag,
        static_cast<unsigned long long>(sub->capacity));
    destination = nullptr;
  }
  sub->inline_payload = is_inline;
  header_alone_ = is_inline && header.size > kControlRxMost;
  if (is_inline) {
    if (header.size > 0) {
      ++request->inline_pending;
      inline_request_ = request;
      inline_dst_ = destination;
      inline_left_ = header.size;
      ConsumeInline();
    }
  } else if (header.size > 0 && !rx_.carries_frags()) {
    QueueStripes(request, destination, header.size, nullptr, 0, nullptr, allowed, 0,
                 ProfileOf(request, sub));
  } else if (header.size > 0) {
    const size_t sockets = data_sockets_.size();
    const size_t index = static_cast<size_t>(sub - request->subs.data());
    if (request->frag_results.size() < static_cast<size_t>(kMaxRecvsLimit) * sockets) {
      request->frag_results.resize(static_cast<size_t>(kMaxRecvsLimit) * sockets);
    }
    sub->seq = next_seq_++;
    // Where the consumer planned it (a CPU scatter into host memory), the workers hand it the
    // frags as they arrive; every other receive holds its frags until its consumer has run.
    const bool scatter_now = sub->scatter_on_arrival;
    sub->holds_frags = !scatter_now;
    if (!scatter_now) {
      // Held whole in the region until the consumer runs (rx_region.h MaxHeldMessageBytes).
      if (header.size > MaxHeldMessageBytes(rx_.region->bytes())) {
        Status status = Status::Error(
            ErrorKind::kInvalidUsage,
            "a %llu-byte message cannot be received through a %llu-byte devmem RX region (limit: "
            "a quarter of it); raise NCCL_DEVMEM_RX_REGION_BYTES",
            static_cast<unsigned long long>(header.size),
            static_cast<unsigned long long>(rx_.region->bytes()));
        health_.Fail(status);
        return status;
      }
    }
    if (scatter_now) MarkReleased(sub->seq);  // it never holds pages beyond one receive
    QueueStripes(request, destination, header.size, &request->frag_results[index * sockets],
                 sub->seq, scatter_now ? request->consumer : nullptr, allowed, 0,
                 ProfileOf(request, sub));
  }
  if (request->unmatched == 0) {
    for (size_t r = 0; r < posted_.size(); ++r) {
      if (posted_[r] == request) {
        posted_.erase(posted_.begin() + static_cast<std::ptrdiff_t>(r));
        break;
      }
    }
  }
  ++counters_.messages;
  counters_.inline_messages += is_inline ? 1 : 0;
  counters_.payload_bytes += header.size;
  return true;
}

Status RecvComm::ReceiveInlineDirect() {
  while (inline_left_ > 0) {
    ssize_t n = recv(control_.get(), inline_dst_, inline_left_, MSG_DONTWAIT);
    if (n > 0) {
      inline_dst_ += n;
      inline_left_ -= static_cast<uint64_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Status::Ok();
    Status status = n == 0 ? Status::Error(ErrorKind::kRemote,
                                           "peer closed the control connection with %llu inline "
                                           "bytes of a message still to arrive",
                                           static_cast<unsigned long long>(inline_left_))
                           : Status::PeerErrno(errno, "recv on the control connection");
    health_.Fail(status);
    return status;
  }
  --inline_request_->inline_pending;
  inline_request_ = nullptr;
  return Status::Ok();
}

Status RecvComm::ProgressControl() {
  while (true) {
    if (inline_left_ > 0) {
      ConsumeInline();
      if (inline_left_ > 0 && inline_dst_ != nullptr && rx_begin_ == rx_end_ &&
          inline_left_ >= kInlineDirectBytes) {
        // What is buffered is consumed: the rest of a large inline payload goes from the
        // socket straight into its destination, no copy through the control buffer.
        DEVMEM_RETURN_IF_ERROR(ReceiveInlineDirect());
        if (inline_left_ > 0) return Status::Ok();
        continue;
      }
      if (inline_left_ > 0) {
        const size_t before = rx_end_ - rx_begin_;
        DEVMEM_RETURN_IF_ERROR(ReadControl());
        if (rx_end_ - rx_begin_ == before) return Status::Ok();
        continue;
      }
    }
    if (!header_waiting_) {
      const size_t available = rx_end_ - rx_begin_;
      if (available < wire::MessageHeader::kSize ||
          available < wire::MessageHeader::EncodedSize(rx_buffer_.data() + rx_begin_)) {
        if (posted_.empty()) return Status::Ok();  // nobody waits: leave bytes in the kernel
        // After an inline payload larger than this buffer the next is likely large too: read
        // only its header, so that the payload goes from the socket straight to its
        // destination (ReceiveInlineDirect) instead of partly through this buffer and a copy.
        // NCCL's socket transport reads its header alone the same way. Otherwise fill the
        // buffer: many small messages' headers and payloads in one recv.
        size_t most = 0;
        if (header_alone_) {
          most = (available < wire::MessageHeader::kSize
                      ? wire::MessageHeader::kSize
                      : wire::MessageHeader::EncodedSize(rx_buffer_.data() + rx_begin_)) -
                 available;
        }
        const size_t before = rx_end_ - rx_begin_;
        DEVMEM_RETURN_IF_ERROR(ReadControl(most));
        if (rx_end_ - rx_begin_ == before) return Status::Ok();
        continue;
      }
      Result<wire::MessageHeader> header =
          wire::MessageHeader::Decode(rx_buffer_.data() + rx_begin_);
      if (!header.ok()) {
        health_.Fail(header.status());
        return header.status();
      }
      rx_begin_ += header->encoded_size();
      waiting_header_ = header.value();
      header_waiting_ = true;
    }
    Result<bool> dispatched = Dispatch(waiting_header_);
    if (!dispatched.ok()) return dispatched.status();
    if (!dispatched.value()) return Status::Ok();
    header_waiting_ = false;
  }
}

}  // namespace devmem
