#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "plugin/core/log.h"
#include "plugin/core/nccl_contract.h"
#include "plugin/cuda/cuda_driver.h"
#include "plugin/cuda/gpu_quarantine.h"
#include "plugin/transport/comm.h"

namespace devmem {
// Message sequence numbers in flight at once are bounded by requests x sub-requests.
constexpr size_t kSeqRing = 1024;
static_assert(kSeqRing > nccl::kNetMaxRequests * kMaxRecvsLimit);

Result<std::unique_ptr<RecvComm>> RecvComm::Create(UniqueFd control, std::vector<UniqueFd> data,
                                                   const ConnectionParams& params,
                                                   std::string description, RxPath path) {
  std::unique_ptr<RecvComm> comm(new RecvComm(Direction::kRecv, std::move(control), std::move(data),
                                              params, std::move(description)));
  comm->rx_buffer_.resize(kControlRxStart);
  comm->posted_.reserve(nccl::kNetMaxRequests);
  comm->data_path_ = DataPathOf(path.mode);
  Result<RxPipeline> rx =
      BuildRxPipeline(std::move(path), comm->data_sockets_.size(), comm->description_);
  if (!rx.ok()) return rx.status();
  comm->rx_ = std::move(rx).value();
  for (size_t s = 0; s < comm->rx_.receivers.size(); ++s) {
    comm->data_sockets_[s]->receiver = std::move(comm->rx_.receivers[s]);
  }
  comm->rx_.receivers.clear();
  if (comm->rx_.carries_frags()) comm->released_.assign(kSeqRing, false);
  DEVMEM_RETURN_IF_ERROR(comm->AttachToEngine());
  return comm;
}

RecvComm::~RecvComm() {
  // Engine workers write into the region and the requests: take the sockets back before our
  // members go. Kernels still reading the region finish before the region goes: the consumer
  // drains them, or past the GPU work limit hands its engine and the region to the quarantine,
  // which logs why (plugin/cuda/gpu_quarantine.h); its own destructor says any other failure.
  DetachFromEngine();
  if (rx_.consumer != nullptr) (void)rx_.consumer->Drain();
  LogClose();
  if (rx_.carries_frags()) {
    RecvDevmemCounters c = DevmemCounters();
    log::Info(log::kNet,
              "%s devmem counters: %llu frags, %llu region bytes, %llu linear bytes, %llu pool "
              "stalls, %llu plain reads (flow steering missed), %llu tokens returned (%llu not "
              "freed)",
              description_.c_str(), static_cast<unsigned long long>(c.frags),
              static_cast<unsigned long long>(c.region_bytes),
              static_cast<unsigned long long>(c.host_bytes),
              static_cast<unsigned long long>(c.stalls),
              static_cast<unsigned long long>(c.plain_reads),
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
    out.plain_reads += c.plain_reads;
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

Status RecvComm::ReleaseFrags(Request* request) {
  const size_t sockets = data_sockets_.size();
  Status result;
  bool released_any = false;
  for (int i = 0; i < request->count; ++i) {
    SubRequest& sub = request->subs[i];
    if (!sub.holds_frags) continue;
    for (size_t s = 0; s < sockets; ++s) {
      FragResult& frags = request->frag_results[static_cast<size_t>(i) * sockets + s];
      if (!frags.used) continue;
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
    WakeWorkers();
  }
  return result;
}

bool RecvComm::NeedsConsumer(const Request* request, int index) const {
  const SubRequest& sub = request->subs[index];
  if (request->consumer == nullptr) return false;
  // NCCL's kernel reads every SIMPLE step's slot: an empty or failed step publishes cnt 0.
  if (request->consumer->ConsumesEveryStep()) return index == 0;  // one step, n == 1
  return request->error.ok() && sub.holds_frags && sub.size <= sub.capacity && sub.data != nullptr;
}

Result<bool> RecvComm::RunConsumer(Request* request) {
  FragConsumer* consumer = request->consumer;
  const size_t sockets = data_sockets_.size();
  for (int i = 0; i < request->count; ++i) {
    SubRequest& sub = request->subs[i];
    if (sub.job.started || !NeedsConsumer(request, i)) continue;
    tables_.clear();
    const bool deliver = request->error.ok() && sub.holds_frags && sub.size <= sub.capacity;
    for (size_t s = 0; s < sockets && deliver; ++s) {
      const FragResult& frags = request->frag_results[static_cast<size_t>(i) * sockets + s];
      if (frags.used) tables_.push_back(&frags.table);
    }
    HeldMessage message;
    message.tables = tables_.data();
    message.table_count = tables_.size();
    message.size = sub.size;
    message.host_dst = sub.data;
    message.device_dst = sub.device_target;
    Result<bool> started = consumer->Start(message, &sub.job);
    if (!started.ok()) return started.status().WithContext(description_);
    if (!started.value()) return false;  // busy: the next test() tries again
  }
  for (int i = 0; i < request->count; ++i) {
    SubRequest& sub = request->subs[i];
    if (!sub.job.started) continue;
    Result<bool> finished = consumer->Finished(&sub.job);
    if (!finished.ok()) return finished.status().WithContext(description_);
    if (!finished.value()) return false;
  }
  return true;
}

Status RecvComm::DeliverHostBytes(Request* request, bool after_device_consumer) {
  CopyStream* stream = nullptr;
  const size_t sockets = data_sockets_.size();
  for (int i = 0; i < request->count; ++i) {
    SubRequest& sub = request->subs[i];
    if (sub.size == 0 || sub.size > sub.capacity || sub.delivery == HostDelivery::kNone) continue;
    if (sub.delivery == HostDelivery::kWholeToHost) {
      // The engine wrote into mapped staging: only after its kernel completed.
      if (after_device_consumer) memcpy(sub.user_data, sub.data, sub.size);
      continue;
    }
    if (stream == nullptr) {
      // In the region's GPU context; without a GPU region the destination belongs to the
      // caller's current context.
      const RxRegion* region = rx_.region.get();
      Result<CopyStream*> created =
          StagingCopyStream(region != nullptr && region->gpu() >= 0 ? region->gpu() : -1);
      if (!created.ok()) return created.status();
      stream = created.value();
    }
    char* device = static_cast<char*>(sub.user_data);
    if (sub.delivery == HostDelivery::kWholeToDevice || sub.inline_payload) {
      DEVMEM_RETURN_IF_ERROR(stream->EnqueueToDevice(device, sub.data, sub.size));
      counters_.staged_bytes += sub.size;
      continue;
    }
    for (size_t s = 0; s < sockets; ++s) {
      const FragResult& frags = request->frag_results[static_cast<size_t>(i) * sockets + s];
      if (!frags.used) continue;
      for (const HostRange& r : frags.table.host_ranges()) {
        if (r.dst_offset + r.length > sub.size) {
          return Status::Error(ErrorKind::kInternal, "host range outside the message");
        }
        DEVMEM_RETURN_IF_ERROR(
            stream->EnqueueToDevice(device + r.dst_offset, sub.data + r.dst_offset, r.length));
        counters_.staged_bytes += r.length;
      }
    }
  }
  // The staging is reused once the request is released: every copy must have landed.
  return stream != nullptr ? stream->Wait() : Status::Ok();
}

Result<Request*> RecvComm::PostRecv(int n, void* const* data, const size_t* sizes, const int* tags,
                                    MemoryRegion* const* regions, bool ll_hint,
                                    void* const* phandles) {
  if (health_.failed()) return health_.error();
  if (n < 1 || n > kMaxRecvsLimit) {
    return Status::Error(ErrorKind::kInvalidArgument, "irecv with n=%d, accepted [1, %d]", n,
                         kMaxRecvsLimit);
  }
  // NCCL's unpack reads one step per receive: a SIMPLE receive (no LL hint) of one buffer.
  const bool unpack_step = rx_.unpack != nullptr && !ll_hint;
  if (unpack_step && n != 1) {
    return Status::Error(ErrorKind::kInvalidUsage,
                         "irecv of %d buffers on an NCCL-unpack comm (maxRecvs is 1)", n);
  }
  FragConsumer* consumer = unpack_step ? rx_.unpack.get() : rx_.consumer.get();
  // Where each buffer's bytes land is the consumer's to say; without frags (plain path) every
  // byte arrives as host data.
  std::array<LandingPlan, kMaxRecvsLimit> plans;
  size_t staged_total = 0;
  for (int i = 0; i < n; ++i) {
    if (data[i] == nullptr && sizes[i] > 0) {
      return Status::Error(ErrorKind::kInvalidArgument, "irecv %d of %zu bytes into NULL", i,
                           sizes[i]);
    }
    const MemoryRegion* region = regions != nullptr ? regions[i] : nullptr;
    const bool cuda = region != nullptr && region->is_cuda();
    plans[i] = consumer != nullptr ? consumer->PlanLanding(cuda) : HostDataLanding(cuda);
    if (plans[i].staged) staged_total += sizes[i];
  }
  Request* request = pool_.Acquire(this, Request::Kind::kRecv);
  if (request == nullptr) return static_cast<Request*>(nullptr);
  request->consumer = consumer;
  // NCCL unpack: the step's slot, in posting order (which is NCCL's step order).
  ConsumerJob job;
  if (consumer != nullptr) {
    Status reserved = consumer->Reserve(&job);
    if (!reserved.ok()) {
      pool_.Release(request);
      return reserved;
    }
  }

  char* staging = nullptr;
  if (staged_total > 0) {
    Result<char*> reserved = request->staging.Reserve(staged_total);
    if (!reserved.ok()) {
      // Give the slot back so the next SIMPLE receive gets the one NCCL will read for it.
      if (consumer != nullptr) consumer->Unreserve(&job);
      pool_.Release(request);
      return reserved.status().WithContext("staging a receive buffer on " + description_);
    }
    staging = reserved.value();
  }
  request->count = n;
  request->unmatched = n;
  for (int i = 0; i < n; ++i) {
    const LandingPlan& plan = plans[i];
    SubRequest sub;
    sub.data = plan.staged ? staging : static_cast<char*>(data[i]);
    sub.capacity = sizes[i];
    sub.tag = tags[i];
    sub.region = regions != nullptr ? regions[i] : nullptr;
    sub.user_data = data[i];
    sub.device_target = plan.consumer_writes_staging ? staging : data[i];
    sub.delivery = plan.delivery;
    sub.scatter_on_arrival = plan.scatter_on_arrival;
    if (i == 0) sub.job = job;
    if (plan.staged) staging += sizes[i];
    request->subs[i] = sub;
  }
  for (int i = 0; phandles != nullptr && i < n; ++i) {
    observe::MessageTransfer message;
    message.direction = observe::Direction::kRecv;
    message.path = data_path_;
    message.bytes = sizes[i];
    StartMessageProfile(request, i, phandles[i], message);
  }
  posted_.push_back(request);
  DEVMEM_RETURN_IF_ERROR(ProgressControl());
  return request;
}

bool RecvComm::Complete(const Request* request) const {
  return request->unmatched == 0 && request->inline_pending == 0 &&
         request->pending_tasks.load(std::memory_order_acquire) == 0;
}

Status RecvComm::Test(Request* request, bool* done, int* sizes) {
  *done = false;
  if (health_.failed()) return health_.error();
  if (request->stage == Request::Stage::kAwaitingConsumed) {
    return Status::Error(ErrorKind::kInvalidUsage,
                         "test() on a receive that already completed and waits for "
                         "irecvConsumed");
  }
  if (request->stage == Request::Stage::kPosted) {
    if (!Complete(request)) {
      DEVMEM_RETURN_IF_ERROR(ProgressControl());
      ProgressProxy();
      if (!Complete(request)) return Status::Ok();
    }
    request->stage = Request::Stage::kConsuming;  // every byte is in: only the consumer runs
    // The consumer watchdog's start (a clock read only where a consumer runs).
    if (request->consumer != nullptr) {
      request->consuming_since = std::chrono::steady_clock::now();
    }
  }
  FragConsumer* consumer = request->consumer;
  if (consumer != nullptr) {
    // Done only when the consumer is (the kernel's event completed); the tokens go back only
    // after that, or, for NCCL's unpack, at irecvConsumed.
    Result<bool> finished = RunConsumer(request);
    if (!finished.ok()) {
      health_.Fail(finished.status());
      return finished.status();
    }
    if (!finished.value()) {
      const std::chrono::milliseconds limit = rx_.gpu_work_limit;
      if (GpuQuarantine::Overdue(request->consuming_since, limit,
                                 std::chrono::steady_clock::now())) {
        // A hang would take NCCL's proxy and every rank with it: give up and fail instead.
        Status stuck = GpuQuarantine::Process().GiveUp(
            Format("%s: the receive's GPU consumer (%s)", description_.c_str(), rx_.consumer_name),
            "its last byte arrived", limit);
        health_.Fail(stuck);
        return stuck;
      }
      return Status::Ok();
    }
    if (observing_) NoteConsumerFinished(request);
  }
  Status result = request->error;
  const bool tokens_wait = consumer != nullptr && consumer->HoldsTokensUntilConsumed();
  // Host bytes (inline payload, linear bytes) go to the destination now: for NCCL's unpack
  // before test() says done, NCCL's kernels copy the frags afterwards.
  Status delivered = DeliverHostBytes(request, /*after_device_consumer=*/!tokens_wait);
  Status released = tokens_wait ? Status::Ok() : ReleaseFrags(request);
  if (result.ok()) result = !delivered.ok() ? delivered : released;
  if (!result.ok() && request->error.ok() && !health_.failed()) health_.Fail(result);
  if (sizes != nullptr) {
    for (int i = 0; i < request->count; ++i) sizes[i] = static_cast<int>(request->subs[i].size);
  }
  *done = true;
  if (rx_.unpack != nullptr && result.ok()) {
    // NCCL keeps every receive pointer of an unpack comm until it calls irecvConsumed (LL
    // receives included): the request must not be reused before, or that call would hit a
    // newer receive.
    request->stage = Request::Stage::kAwaitingConsumed;
  } else {
    if (request->profiles != nullptr) EndProfiledMessages(request, !result.ok());
    if (tokens_wait) {
      (void)ReleaseFrags(request);  // the comm failed; its first error is what is reported
      consumer->Retire(&request->subs[0].job);
    }
    pool_.Release(request);
  }
  return result;
}

Status RecvComm::Consumed(Request* request) {
  if (request->stage != Request::Stage::kAwaitingConsumed) {
    // Receives the plugin consumed itself (and every receive of other modes) were released in
    // test(): nothing to do. NCCL calls this for every completed receive.
    return Status::Ok();
  }
  Status released = ReleaseFrags(request);  // nothing left for receives the plugin consumed
  if (request->consumer != nullptr && request->consumer->HoldsTokensUntilConsumed()) {
    request->consumer->Retire(&request->subs[0].job);
  }
  if (request->profiles != nullptr) EndProfiledMessages(request, !released.ok());
  pool_.Release(request);
  if (!released.ok()) health_.Fail(released);
  return released;
}

}  // namespace devmem
