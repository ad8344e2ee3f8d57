// SendComm: isend (header on the control stream, payload striped over the data sockets or
// inline), the control ring, adaptive striping, and test (control flushed, every task done,
// zero-copy completions in).
#include <linux/sockios.h>
#include <linux/tcp.h>  // tcp_info with tcpi_delivery_rate (glibc's netinet/tcp.h lacks it)
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "plugin/core/nccl_contract.h"
#include "plugin/transport/comm.h"
#include "plugin/transport/striping.h"

namespace devmem {

Result<std::unique_ptr<SendComm>> SendComm::Create(UniqueFd control, std::vector<UniqueFd> data,
                                                   const ConnectionParams& params,
                                                   std::string description) {
  std::unique_ptr<SendComm> comm(new SendComm(Direction::kSend, std::move(control), std::move(data),
                                              params, std::move(description)));
  comm->tx_ring_.resize(kControlRingStart);
  comm->external_.reserve(nccl::kNetMaxRequests);
  if (params.zerocopy_tx || params.devmem_tx_ifindex > 0) {
    for (auto& socket : comm->data_sockets_) socket->zerocopy = std::make_unique<ZeroCopyTracker>();
  }
  DEVMEM_RETURN_IF_ERROR(comm->AttachToEngine());
  return comm;
}

SendComm::~SendComm() { LogClose(); }

bool SendComm::GrowControl(size_t need) {
  // At most a header and a copied inline payload for every request of the pool; the ring
  // starts with room for headers and grows to that only when small inline messages queue up.
  const size_t most =
      nccl::kNetMaxRequests * (wire::MessageHeader::kMaxSize + kInlineCopyBytes);
  const size_t pending = tx_appended_ - tx_flushed_;
  const size_t old_capacity = tx_ring_.size();
  if (old_capacity - pending >= need) return true;
  size_t capacity = old_capacity;
  while (capacity - pending < need && capacity < most) capacity = std::min(capacity * 2, most);
  if (capacity - pending < need) return false;
  std::vector<uint8_t> grown(capacity);
  // Every unflushed byte keeps its ring offset: it moves to offset % the new capacity.
  for (uint64_t i = tx_flushed_; i < tx_appended_;) {
    const size_t from = i % old_capacity;
    const size_t to = i % capacity;
    const size_t n = std::min<uint64_t>({tx_appended_ - i, old_capacity - from, capacity - to});
    memcpy(grown.data() + to, tx_ring_.data() + from, n);
    i += n;
  }
  tx_ring_.swap(grown);
  return true;
}

bool SendComm::AppendControl(const uint8_t* bytes, size_t len) {
  const size_t capacity = tx_ring_.size();
  if (capacity - (tx_appended_ - tx_flushed_) < len) return false;
  size_t at = tx_appended_ % capacity;
  size_t first = std::min(len, capacity - at);
  memcpy(tx_ring_.data() + at, bytes, first);
  memcpy(tx_ring_.data(), bytes + first, len - first);
  tx_appended_ += len;
  stream_appended_ += len;
  return true;
}

void SendComm::AppendExternal(const char* data, size_t len) {
  external_.push_back({stream_appended_, data, len});
  stream_appended_ += len;
}

Status SendComm::FlushControl() {
  const size_t capacity = tx_ring_.size();
  while (stream_flushed_ < stream_appended_) {
    // The stream from stream_flushed_ on: ring bytes up to the next external payload, that
    // payload from the caller's buffer, and so on (as many as fit one sendmsg).
    iovec iov[kControlIovecs];
    size_t count = 0;
    uint64_t cursor = stream_flushed_;
    uint64_t ring_cursor = tx_flushed_;
    size_t next = 0;  // external_ index
    while (count < kControlIovecs && cursor < stream_appended_) {
      if (next < external_.size() && external_[next].at <= cursor) {
        const ExternalPayload& e = external_[next++];
        iov[count].iov_base = const_cast<char*>(e.data) + (cursor - e.at);
        iov[count].iov_len = e.at + e.length - cursor;
        cursor = e.at + e.length;
        ++count;
        continue;
      }
      const uint64_t end = next < external_.size() ? external_[next].at : stream_appended_;
      const size_t at = ring_cursor % capacity;
      const size_t len = static_cast<size_t>(std::min<uint64_t>(end - cursor, capacity - at));
      iov[count].iov_base = tx_ring_.data() + at;
      iov[count].iov_len = len;
      cursor += len;
      ring_cursor += len;
      ++count;
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = count;
    ssize_t n = sendmsg(control_.get(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      // Consume what went out: ring bytes advance the ring, finished externals leave.
      uint64_t left = static_cast<uint64_t>(n);
      while (left > 0) {
        if (!external_.empty() && external_.front().at <= stream_flushed_) {
          const ExternalPayload& e = external_.front();
          const uint64_t take = std::min(left, e.at + e.length - stream_flushed_);
          stream_flushed_ += take;
          left -= take;
          if (stream_flushed_ == e.at + e.length) external_.erase(external_.begin());
          continue;
        }
        const uint64_t end = !external_.empty() ? external_.front().at : stream_appended_;
        const uint64_t take = std::min(left, end - stream_flushed_);
        stream_flushed_ += take;
        tx_flushed_ += take;
        left -= take;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Status::Ok();
    Status status = Status::PeerErrno(errno, "send on the control connection");
    health_.Fail(status);
    return status;
  }
  return Status::Ok();
}

Result<Request*> SendComm::PostSend(void* data, size_t size, int tag, const MemoryRegion* region,
                                    void* phandle) {
  if (health_.failed()) return health_.error();
  if (size > nccl::kMaxNetSize) {
    return Status::Error(ErrorKind::kInvalidArgument, "isend of %zu bytes exceeds maxP2pBytes %zu",
                         size, nccl::kMaxNetSize);
  }
  if (data == nullptr && size > 0) {
    return Status::Error(ErrorKind::kInvalidArgument, "isend of %zu bytes from NULL", size);
  }
  if (region != nullptr) {
    auto* begin = static_cast<const char*>(region->data);
    auto* p = static_cast<const char*>(data);
    if (size > 0 && (p < begin || p + size > begin + region->size)) {
      return Status::Error(ErrorKind::kInvalidArgument,
                           "isend buffer [%p, +%zu) lies outside its registration [%p, +%zu)", data,
                           size, region->data, region->size);
    }
  }
  if (region != nullptr && region->devmem_tx() && region->tx_ifindex != params_.devmem_tx_ifindex) {
    // Its offsets name a dmabuf bound to another NIC (an mhandle of another comm).
    return Status::Error(ErrorKind::kInvalidArgument,
                         "isend with an mhandle bound for devmem TX on ifindex %d, but %s sends "
                         "%s",
                         region->tx_ifindex, description_.c_str(),
                         params_.devmem_tx_ifindex > 0 ? "on another NIC" : "without devmem TX");
  }
  Request* request = pool_.Acquire(this, Request::Kind::kSend);
  if (request == nullptr) return static_cast<Request*>(nullptr);

  // Devmem TX: the bytes stay in GPU memory and go out by dmabuf offset, never inline (that
  // would need them on the host).
  const bool devmem_tx = region != nullptr && region->devmem_tx() && size > 0;
  // A message with others in flight takes the queued limit (ConnectionParams): alone it is
  // latency-bound and one stream serves it best, queued ones move faster over the data sockets.
  const bool others_in_flight = pool_.InUse() > 1;
  const uint32_t inline_limit =
      others_in_flight ? std::min(params_.inline_bytes, params_.queued_inline_bytes)
                       : params_.inline_bytes;
  const bool is_inline = size <= inline_limit && !devmem_tx;
  wire::MessageHeader header;
  header.kind = is_inline ? wire::MessageHeader::kInline : wire::MessageHeader::kStriped;
  header.tag = tag;
  header.size = size;
  if (!is_inline && params_.adaptive_stripes && data_sockets_.size() > 1) {
    header.sockets = LeastLoadedSockets(size);
    if (header.sockets != 0) {
      header.kind = wire::MessageHeader::kStripedOver;
      ++counters_.steered_messages;
    }
  }
  // Small inline payloads are copied behind their header (many messages, one sendmsg); larger
  // ones go out from the caller's buffer (or its staging) directly, like NCCL's socket
  // transport sends on its one socket.
  const bool copy_inline = is_inline && size <= kInlineCopyBytes;
  const size_t control_bytes = header.encoded_size() + (copy_inline ? size : 0);
  if (!GrowControl(control_bytes)) {
    pool_.Release(request);
    DEVMEM_RETURN_IF_ERROR(FlushControl());
    return static_cast<Request*>(nullptr);
  }

  char* source = static_cast<char*>(data);
  if (devmem_tx) {
    // The message's offset in the bound dmabuf stands in for its address (QueueStripes).
    const uint64_t offset =
        region->tx_data_offset + static_cast<uint64_t>(static_cast<const char*>(data) -
                                                       static_cast<const char*>(region->data));
    source = reinterpret_cast<char*>(static_cast<uintptr_t>(offset));
  } else if (region != nullptr && region->is_cuda() && size > 0) {
    Result<char*> staging = request->staging.Reserve(size);
    Result<CopyStream*> stream = StagingCopyStream(/*device=*/-1);
    Status copied = !staging.ok()  ? staging.status()
                    : !stream.ok() ? stream.status()
                                   : stream.value()->ToHost(staging.value(), data, size);
    if (!copied.ok()) {
      pool_.Release(request);
      return copied.WithContext("staging a CUDA send buffer on " + description_);
    }
    source = staging.value();
    counters_.staged_bytes += size;
  }

  uint8_t encoded[wire::MessageHeader::kMaxSize];
  header.Encode(encoded);
  AppendControl(encoded, header.encoded_size());
  if (copy_inline && size > 0) {
    AppendControl(reinterpret_cast<const uint8_t*>(source), size);
  } else if (is_inline && size > 0) {
    AppendExternal(source, size);
  }
  request->control_end = stream_appended_;
  request->count = 1;
  SubRequest sub;
  sub.data = source;
  sub.capacity = size;
  sub.tag = tag;
  sub.size = size;
  sub.matched = true;
  sub.region = region;
  sub.user_data = data;
  request->subs[0] = sub;
  // The header goes out before the payload moves: the receiver can match it and read the data
  // sockets while the bytes still arrive, instead of finding their buffers full of bytes it
  // cannot place yet. (Same-run at 4 MiB on loopback: stream 2.49-2.99 vs 2.21-2.56 GB/s,
  // ping-pong unchanged within noise; perf/RESULTS.md "Progress engine".)
  Status flushed = FlushControl();
  if (!flushed.ok()) {
    pool_.Release(request);
    return flushed;
  }
  observe::MessageProfile* profile = nullptr;
  if (phandle != nullptr) {
    observe::MessageTransfer message;
    message.path = devmem_tx          ? observe::DataPath::kDevmemTx
                   : params_.zerocopy_tx ? observe::DataPath::kEmulated
                                         : observe::DataPath::kPlain;
    message.bytes = size;
    profile = StartMessageProfile(request, 0, phandle, message);
  }
  if (!is_inline && size > 0) {
    QueueStripes(request, source, size, nullptr, 0, nullptr,
                 header.kind == wire::MessageHeader::kStripedOver ? header.sockets : 0,
                 devmem_tx ? region->tx_dmabuf_id : 0, profile);
  }

  ++counters_.messages;
  counters_.inline_messages += is_inline ? 1 : 0;
  counters_.payload_bytes += size;
  if (devmem_tx) counters_.devmem_tx_bytes += size;
  return request;
}

uint64_t SendComm::LeastLoadedSockets(uint64_t size) const {
  // For every socket, when one more chunk on it would be delivered: its backlog (bytes queued
  // and not yet written, plus what the kernel still holds, SIOCOUTQ: unsent and unacked) plus
  // the chunk, over the rate the kernel measures it delivering at (TCP_INFO
  // tcpi_delivery_rate). The message goes to the sockets that would finish it first, at most
  // one per chunk: a slower member carries a smaller share, and a message of one chunk (NCCL's
  // steps usually are) goes to the socket that delivers it soonest. A socket with no rate yet
  // counts as fast as the fastest, so every socket gets probed. One ioctl and one getsockopt
  // per socket per message: only connections between virtual NICs pay them.
  const size_t sockets = data_sockets_.size();
  double backlog[kMaxDataSockets];
  double rate[kMaxDataSockets];
  double fastest = 0;
  for (size_t s = 0; s < sockets; ++s) {
    const DataSocket& socket = *data_sockets_[s];
    const uint64_t moved = socket.moved_bytes.load();
    backlog[s] = socket.queued_bytes > moved ? static_cast<double>(socket.queued_bytes - moved) : 0;
    int in_kernel = 0;
    if (ioctl(socket.fd.get(), SIOCOUTQ, &in_kernel) == 0 && in_kernel > 0) backlog[s] += in_kernel;
    tcp_info info{};
    socklen_t length = sizeof(info);
    rate[s] = 0;
    if (getsockopt(socket.fd.get(), IPPROTO_TCP, TCP_INFO, &info, &length) == 0 &&
        length >= offsetof(tcp_info, tcpi_delivery_rate) + sizeof(info.tcpi_delivery_rate) &&
        info.tcpi_delivery_rate_app_limited == 0) {
      // An app-limited sample says how fast we fed it, not how fast it can go: unknown.
      rate[s] = static_cast<double>(info.tcpi_delivery_rate);
    }
    fastest = std::max(fastest, rate[s]);
  }
  // Members that deliver at about the same rate do best dealt round-robin (measured:
  // perf/RESULTS.md, fused veths): steer only when one is twice as fast as another.
  double slowest = fastest;
  for (size_t s = 0; s < sockets; ++s) {
    if (rate[s] > 0) slowest = std::min(slowest, rate[s]);
  }
  if (fastest <= 0 || fastest < slowest * 2) return 0;
  const StripePlan plan =
      PlanStripes(size, params_.chunk_bytes, static_cast<uint32_t>(sockets), next_first_socket_);
  const double chunk = static_cast<double>(std::max<uint64_t>(plan.chunk_bytes, 1));
  double finish[kMaxDataSockets];
  double soonest = 0;
  for (size_t s = 0; s < sockets; ++s) {
    const double r = rate[s] > 0 ? rate[s] : (fastest > 0 ? fastest : 1);
    finish[s] = (backlog[s] + chunk) / r;
    if (s == 0 || finish[s] < soonest) soonest = finish[s];
  }
  // Sockets within a quarter of the soonest finish take part (equal members: all of them),
  // the soonest first, ties in rotation order from the next first socket so that idle sockets
  // take turns; at most one socket per chunk.
  uint64_t wanted = std::max<uint64_t>(plan.chunk_count, 1);
  uint64_t allowed = 0;
  while (wanted > 0) {
    size_t best = sockets;
    for (size_t k = 0; k < sockets; ++k) {
      const size_t s = (plan.first_socket + k) % sockets;
      if (((allowed >> s) & 1) != 0 || finish[s] > soonest * 1.25) continue;
      if (best == sockets || finish[s] < finish[best]) best = s;
    }
    if (best == sockets) break;
    allowed |= uint64_t{1} << best;
    --wanted;
  }
  return allowed;
}

Status SendComm::Test(Request* request, bool* done, int* size) {
  *done = false;
  if (health_.failed()) return health_.error();
  DEVMEM_RETURN_IF_ERROR(FlushControl());
  ProgressProxy();
  if (stream_flushed_ < request->control_end) return Status::Ok();
  if (request->pending_tasks.load(std::memory_order_acquire) != 0) return Status::Ok();
  if (request->zerocopy_pending.load(std::memory_order_acquire) != 0) {
    // Every byte is in the kernel, which may still read the buffer: done only once it said
    // so on the error queues (NCCL reuses the buffer as soon as we report done).
    for (size_t s = 0; s < data_sockets_.size(); ++s) {
      DataSocket& socket = *data_sockets_[s];
      if (socket.zerocopy == nullptr || socket.zerocopy->in_flight() == 0) continue;
      const uint64_t completed = socket.zerocopy->completed();
      Status drained = socket.zerocopy->Drain(socket.fd.get());
      if (!drained.ok()) {
        health_.Fail(drained);
        return drained;
      }
      // A worker may be asleep waiting for these very completions (their POLLERR is gone).
      if (socket.zerocopy->completed() != completed && !socket_workers_.empty()) {
        socket_workers_[s]->Wake();
      }
    }
    if (request->zerocopy_pending.load(std::memory_order_acquire) != 0) return Status::Ok();
  }
  *done = true;
  if (size != nullptr) *size = static_cast<int>(request->subs[0].size);
  if (request->profiles != nullptr) EndProfiledMessages(request, /*failed=*/false);
  pool_.Release(request);
  return Status::Ok();
}

}  // namespace devmem
