#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "plugin/abi/net_abi.h"
#include "plugin/comm.h"
#include "plugin/cuda_driver.h"
#include "plugin/log.h"

namespace devmem {
namespace {

// Enough for many headers per syscall; inline payload streams through it.
constexpr size_t kControlRxBytes = 64 << 10;

}  // namespace

// Message sequence numbers in flight at once are bounded by requests x sub-requests.
constexpr size_t kSeqRing = 1024;
static_assert(kSeqRing > abi::kNetMaxRequests * kMaxRecvsLimit);

Result<std::unique_ptr<RecvComm>> RecvComm::Create(UniqueFd control, std::vector<UniqueFd> data,
                                                   const ConnectionParams& params,
                                                   std::string description, const RxPath& path) {
  std::unique_ptr<RecvComm> comm(new RecvComm(kRecvMagic, Direction::kRecv, std::move(control),
                                              std::move(data), params, std::move(description)));
  comm->rx_buffer_.resize(kControlRxBytes);
  comm->posted_.reserve(abi::kNetMaxRequests);
  comm->path_ = path;
  if (path.mode == RxPath::Mode::kEmulatedDevmem) {
    Result<std::unique_ptr<HostRegion>> region = HostRegion::Create(path.region_bytes);
    if (!region.ok()) return region.status().WithContext(comm->description_);
    comm->region_ = std::move(region).value();
    comm->pool_pages_ = std::make_unique<PagePool>(path.region_bytes);
    comm->released_.assign(kSeqRing, false);
    for (size_t s = 0; s < comm->data_sockets_.size(); ++s) {
      comm->data_sockets_[s]->receiver = std::make_unique<EmulatedFragReceiver>(
          comm->region_.get(), comm->pool_pages_.get(), path.mix, 0x9e3779b97f4a7c15ull * (s + 1));
    }
    log::Info(log::kNet,
              "%s: EMULATED devmem RX (NCCL_DEVMEM_EMULATE=1, a test mode: no NIC writes here): "
              "%llu-byte host region of %zu pages, %d%% split and %d%% linear frags",
              comm->description_.c_str(), static_cast<unsigned long long>(path.region_bytes),
              comm->pool_pages_->total_pages(), path.mix.split_percent, path.mix.linear_percent);
  } else {
    log::Info(log::kNet, "%s: plain-TCP data path (devmem RX unavailable: %s)",
              comm->description_.c_str(),
              path.plain_reason.empty() ? "not configured" : path.plain_reason.c_str());
  }
  DEVMEM_RETURN_IF_ERROR(comm->StartWorkers("devmem-rx"));
  return comm;
}

RecvComm::~RecvComm() {
  // Workers write into the region and the requests: stop them before our members go.
  workers_.clear();
  LogClose();
  if (path_.mode != RxPath::Mode::kPlain) {
    RecvDevmemCounters c = DevmemCounters();
    log::Info(log::kNet,
              "%s devmem counters: %llu frags, %llu region bytes, %llu linear bytes, %llu pool "
              "stalls, %llu tokens returned (%llu not freed)",
              description_.c_str(), static_cast<unsigned long long>(c.frags),
              static_cast<unsigned long long>(c.region_bytes),
              static_cast<unsigned long long>(c.host_bytes),
              static_cast<unsigned long long>(c.stalls),
              static_cast<unsigned long long>(c.tokens_returned),
              static_cast<unsigned long long>(c.tokens_not_freed));
    if (c.tokens_outstanding > 0) {
      log::Warn(
          "%s closed with %llu devmem tokens outstanding (receives never completed); "
          "their pages are freed with the comm",
          description_.c_str(), static_cast<unsigned long long>(c.tokens_outstanding));
    }
  }
}

RecvDevmemCounters RecvComm::DevmemCounters() const {
  RecvDevmemCounters out;
  for (const auto& socket : data_sockets_) {
    if (socket->receiver == nullptr) continue;
    const ReceiverCounters& c = socket->receiver->counters();
    out.frags += c.frags;
    out.region_bytes += c.region_bytes;
    out.host_bytes += c.host_bytes;
    out.stalls += c.stalls;
    out.tokens_returned += c.release.tokens_returned;
    out.tokens_not_freed += c.release.tokens_not_freed;
    out.tokens_outstanding += socket->receiver->outstanding();
  }
  return out;
}

void RecvComm::MarkReleased(uint64_t seq) {
  released_[seq % kSeqRing] = true;
  uint64_t oldest = devmem_shared_.oldest_seq.load(std::memory_order_relaxed);
  while (released_[oldest % kSeqRing]) {
    released_[oldest % kSeqRing] = false;
    ++oldest;
  }
  devmem_shared_.oldest_seq.store(oldest, std::memory_order_release);
}

Status RecvComm::FinishFrags(Request* request) {
  const size_t sockets = data_sockets_.size();
  Status result;
  bool released_any = false;
  for (int i = 0; i < request->count; ++i) {
    SubRequest& sub = request->subs[i];
    if (!sub.holds_frags) continue;
    const bool deliver = request->error.ok() && sub.data != nullptr && sub.size <= sub.capacity;
    for (size_t s = 0; s < sockets; ++s) {
      FragResult& frags = request->frag_results[static_cast<size_t>(i) * sockets + s];
      if (!frags.used) continue;
      if (deliver && result.ok()) {
        result =
            HostScatter(frags.table, region_->data(), region_->bytes(), sub.data, sub.capacity);
      }
      // Tokens go back only now that the consumer (the scatter) is done with their frags.
      Status released = data_sockets_[s]->receiver->Release(
          data_sockets_[s]->fd.get(), frags.tokens.data(), frags.tokens.size());
      if (result.ok() && !released.ok()) result = released;
      frags.Clear();
    }
    sub.holds_frags = false;
    MarkReleased(sub.seq);
    released_any = true;
  }
  if (released_any) {
    // Only returned pages can unstall a worker: skip the wake-ups when nothing was held
    // (host destinations are scattered and released by the workers themselves).
    devmem_shared_.release_generation.fetch_add(1, std::memory_order_seq_cst);
    for (const auto& worker : workers_) worker->Wake();
  }
  if (!result.ok()) health_.Fail(result);
  return result;
}

Result<Request*> RecvComm::PostRecv(int n, void* const* data, const size_t* sizes, const int* tags,
                                    MemoryRegion* const* regions) {
  if (health_.failed()) return health_.error();
  if (n < 1 || n > kMaxRecvsLimit) {
    return Status::Error(ErrorKind::kInvalidArgument, "irecv with n=%d, accepted [1, %d]", n,
                         kMaxRecvsLimit);
  }
  size_t staged_total = 0;
  for (int i = 0; i < n; ++i) {
    if (data[i] == nullptr && sizes[i] > 0) {
      return Status::Error(ErrorKind::kInvalidArgument, "irecv %d of %zu bytes into NULL", i,
                           sizes[i]);
    }
    const MemoryRegion* region = regions != nullptr ? regions[i] : nullptr;
    if (region != nullptr && region->magic != MemoryRegion::kMagic) {
      return Status::Error(ErrorKind::kInvalidArgument, "irecv %d with an unknown mhandle %p", i,
                           static_cast<const void*>(region));
    }
    if (region != nullptr && region->is_cuda()) staged_total += sizes[i];
  }
  Request* request = pool_.Acquire(this, Request::Kind::kRecv);
  if (request == nullptr) return static_cast<Request*>(nullptr);

  char* staging = nullptr;
  if (staged_total > 0) {
    Result<char*> reserved = request->staging.Reserve(staged_total);
    if (!reserved.ok()) {
      pool_.Release(request);
      return reserved.status().WithContext("staging a CUDA receive buffer on " + description_);
    }
    staging = reserved.value();
  }
  request->count = n;
  request->unmatched = n;
  for (int i = 0; i < n; ++i) {
    MemoryRegion* region = regions != nullptr ? regions[i] : nullptr;
    char* target = static_cast<char*>(data[i]);
    if (region != nullptr && region->is_cuda()) {
      target = staging;
      staging += sizes[i];
    }
    request->subs[i] = SubRequest{target, sizes[i], tags[i], 0, false, false, 0, region, data[i]};
  }
  posted_.push_back(request);
  DEVMEM_RETURN_IF_ERROR(ProgressControl());
  return request;
}

Status RecvComm::ReadControl() {
  if (rx_begin_ > 0) {
    memmove(rx_buffer_.data(), rx_buffer_.data() + rx_begin_, rx_end_ - rx_begin_);
    rx_end_ -= rx_begin_;
    rx_begin_ = 0;
  }
  while (rx_end_ < rx_buffer_.size()) {
    ssize_t n = recv(control_.get(), rx_buffer_.data() + rx_end_, rx_buffer_.size() - rx_end_,
                     MSG_DONTWAIT);
    if (n > 0) {
      rx_end_ += static_cast<size_t>(n);
      return Status::Ok();
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Status::Ok();
    Status status = n == 0 ? Status::Error(ErrorKind::kRemote,
                                           "peer closed the control connection while receives "
                                           "were posted")
                           : Status::Errno(errno, "recv on the control connection");
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
  if (is_inline) {
    if (header.size > 0) {
      ++request->inline_pending;
      inline_request_ = request;
      inline_dst_ = destination;
      inline_left_ = header.size;
      ConsumeInline();
    }
  } else if (header.size > 0 && path_.mode == RxPath::Mode::kPlain) {
    QueueStripes(request, destination, header.size);
  } else if (header.size > 0) {
    const size_t sockets = data_sockets_.size();
    const size_t index = static_cast<size_t>(sub - request->subs.data());
    if (request->frag_results.size() < static_cast<size_t>(kMaxRecvsLimit) * sockets) {
      request->frag_results.resize(static_cast<size_t>(kMaxRecvsLimit) * sockets);
    }
    sub->seq = next_seq_++;
    // Host destinations (staging included) are scattered by the workers as frags arrive; the
    // frags of GPU destinations wait for the GPU scatter engine.
    const bool scatter_now = sub->region == nullptr || !sub->region->is_cuda();
    sub->holds_frags = !scatter_now;
    if (!scatter_now) {
      // Held whole in the region until the consumer runs: more than a quarter of it could
      // deadlock the pool (half is reserved for the oldest message; split frags use half pages).
      if (header.size > region_->bytes() / 4) {
        Status status = Status::Error(
            ErrorKind::kInvalidUsage,
            "a %llu-byte message cannot be received through a %llu-byte devmem RX region (limit: "
            "a quarter of it); raise NCCL_DEVMEM_RX_REGION_BYTES",
            static_cast<unsigned long long>(header.size),
            static_cast<unsigned long long>(region_->bytes()));
        health_.Fail(status);
        return status;
      }
    }
    if (scatter_now) MarkReleased(sub->seq);  // it never holds pages beyond one receive
    QueueStripes(request, destination, header.size, &request->frag_results[index * sockets],
                 sub->seq, scatter_now);
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

Status RecvComm::ProgressControl() {
  while (true) {
    if (inline_left_ > 0) {
      ConsumeInline();
      if (inline_left_ > 0) {
        const size_t before = rx_end_ - rx_begin_;
        DEVMEM_RETURN_IF_ERROR(ReadControl());
        if (rx_end_ - rx_begin_ == before) return Status::Ok();
        continue;
      }
    }
    if (!header_waiting_) {
      if (rx_end_ - rx_begin_ < wire::MessageHeader::kSize) {
        if (posted_.empty()) return Status::Ok();  // nobody waits: leave bytes in the kernel
        const size_t before = rx_end_ - rx_begin_;
        DEVMEM_RETURN_IF_ERROR(ReadControl());
        if (rx_end_ - rx_begin_ == before) return Status::Ok();
        continue;
      }
      Result<wire::MessageHeader> header =
          wire::MessageHeader::Decode(rx_buffer_.data() + rx_begin_);
      if (!header.ok()) {
        health_.Fail(header.status());
        return header.status();
      }
      rx_begin_ += wire::MessageHeader::kSize;
      waiting_header_ = header.value();
      header_waiting_ = true;
    }
    Result<bool> dispatched = Dispatch(waiting_header_);
    if (!dispatched.ok()) return dispatched.status();
    if (!dispatched.value()) return Status::Ok();
    header_waiting_ = false;
  }
}

bool RecvComm::Complete(const Request* request) const {
  return request->unmatched == 0 && request->inline_pending == 0 &&
         request->pending_tasks.load(std::memory_order_acquire) == 0;
}

Status RecvComm::Test(Request* request, bool* done, int* sizes) {
  *done = false;
  if (health_.failed()) return health_.error();
  if (!Complete(request)) {
    DEVMEM_RETURN_IF_ERROR(ProgressControl());
    if (!Complete(request)) return Status::Ok();
  }
  Status result = request->error;
  if (path_.mode != RxPath::Mode::kPlain) {
    Status finished = FinishFrags(request);
    if (result.ok()) result = finished;
  }
  for (int i = 0; i < request->count && result.ok(); ++i) {
    const SubRequest& sub = request->subs[i];
    if (sub.region != nullptr && sub.region->is_cuda() && sub.size > 0) {
      result = CudaDriver::Get().value()->CopyHostToDevice(sub.user_data, sub.data, sub.size);
      counters_.staged_bytes += sub.size;
    }
  }
  if (sizes != nullptr) {
    for (int i = 0; i < request->count; ++i) sizes[i] = static_cast<int>(request->subs[i].size);
  }
  *done = true;
  pool_.Release(request);
  return result;
}

}  // namespace devmem
