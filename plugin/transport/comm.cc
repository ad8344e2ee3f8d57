// What send and receive comms share: the data sockets and their hand-off between NCCL's proxy
// thread and the progress engine, striping a message into socket tasks, registration, close.
#include "plugin/transport/comm.h"

#include <algorithm>
#include <cstdint>

#include "plugin/core/log.h"
#include "plugin/core/nccl_contract.h"
#include "plugin/cuda/cuda_driver.h"
#include "plugin/transport/striping.h"

namespace devmem {

Comm::Comm(Direction direction, UniqueFd control, std::vector<UniqueFd> data,
           const ConnectionParams& params, std::string description)
    : direction_(direction),
      control_(std::move(control)),
      params_(params),
      description_(std::move(description)) {
  health_.SetName(description_);
  for (UniqueFd& fd : data) {
    data_sockets_.push_back(
        std::make_unique<DataSocket>(std::move(fd), direction, &health_, &devmem_shared_));
  }
}

Comm::~Comm() {
  // Engine workers touch requests, health and sockets: take the sockets back before any
  // member goes away.
  DetachFromEngine();
  StopProfiledEvents();
}

Status Comm::AttachToEngine() {
  std::vector<DataSocket*> sockets;
  for (const auto& socket : data_sockets_) sockets.push_back(socket.get());
  DEVMEM_RETURN_IF_ERROR(
      ProgressEngine::Process().Attach(sockets, params_.worker_threads, &socket_workers_));
  // Complete now (Create attached it last): the metrics writer may read it from here on.
  observing_ = observe::MetricsRegistry::Process().enabled() || observe::ActiveProfiler();
  metrics_.Register(this);
  return Status::Ok();
}

void Comm::DetachFromEngine() {
  if (socket_workers_.empty()) return;
  // One request per worker, for all of its sockets of this comm.
  std::vector<DataSocket*> mine;
  for (size_t s = 0; s < socket_workers_.size(); ++s) {
    EngineWorker* worker = socket_workers_[s];
    if (worker == nullptr) continue;
    mine.clear();
    for (size_t k = s; k < socket_workers_.size(); ++k) {
      if (socket_workers_[k] != worker) continue;
      mine.push_back(data_sockets_[k].get());
      socket_workers_[k] = nullptr;
    }
    worker->Detach(mine);
  }
  socket_workers_.clear();
  ProgressEngine::Process().Detached();
}

void Comm::WakeWorkers() {
  for (size_t s = 0; s < socket_workers_.size(); ++s) {
    // Each worker once (a comm's sockets go to its workers in rotation).
    if (std::find(socket_workers_.begin(), socket_workers_.begin() + static_cast<long>(s),
                  socket_workers_[s]) == socket_workers_.begin() + static_cast<long>(s)) {
      socket_workers_[s]->Wake();
    }
  }
}

void Comm::QueueTask(uint32_t socket, const SocketTask& task, bool by_proxy) {
  DataSocket& data = *data_sockets_[socket];
  if (by_proxy && data.tasks.Empty()) {
    data.proxy_tasks.Push(task);
    proxy_has_tasks_ = true;
    return;
  }
  HandOff(socket);
  data.tasks.Push(task);
  socket_workers_[socket]->Schedule(&data);
}

void Comm::HandOff(uint32_t socket) {
  DataSocket& data = *data_sockets_[socket];
  while (SocketTask* task = data.proxy_tasks.Front()) {
    data.tasks.Push(*task);
    data.proxy_tasks.Pop();
  }
}

void Comm::ProgressProxy() {
  if (!proxy_has_tasks_) return;
  bool left = false;
  SocketMover& mover = SocketMover::ForThisThread();
  for (uint32_t s = 0; s < data_sockets_.size(); ++s) {
    DataSocket& data = *data_sockets_[s];
    while (SocketTask* task = data.proxy_tasks.Front()) {
      bool moved = false;
      const SocketMover::Outcome outcome = mover.Advance(&data, task, &moved);
      if (outcome == SocketMover::Outcome::kDone) {
        Request* request = task->request;
        data.proxy_tasks.Pop();
        request->pending_tasks.fetch_sub(1, std::memory_order_release);
        continue;
      }
      if (outcome == SocketMover::Outcome::kStalled) {
        // No free RX page: the worker waits for returned tokens without spinning.
        HandOff(s);
        socket_workers_[s]->Schedule(&data);
        break;
      }
      left = true;  // blocked (the next call tries again) or failed (health reports it)
      break;
    }
  }
  proxy_has_tasks_ = left;
}

int Comm::QueueStripes(Request* request, char* base, uint64_t size, FragResult* results,
                       uint64_t seq, const FragConsumer* arrival_consumer, uint64_t allowed,
                       uint32_t tx_dmabuf_id, observe::MessageProfile* profile) {
  const auto sockets = static_cast<uint32_t>(data_sockets_.size());
  const StripePlan plan = PlanStripes(size, params_.chunk_bytes, sockets, next_first_socket_);
  uint32_t order[kMaxDataSockets];
  uint32_t used = OrderSockets(allowed, sockets, plan.first_socket, plan.chunk_count, order,
                               &next_first_socket_);
  if (used == 0) {  // a set naming no socket of ours: the receiver refuses it before this
    used =
        OrderSockets(0, sockets, plan.first_socket, plan.chunk_count, order, &next_first_socket_);
  }
  if (direction_ == Direction::kSend && params_.adaptive_stripes) {
    for (uint64_t c = 0; c < plan.chunk_count; ++c) {
      const uint64_t start = c * plan.chunk_bytes;
      data_sockets_[order[c % used]]->queued_bytes += std::min(plan.chunk_bytes, size - start);
    }
  }
  int queued = 0;
  // Small enough that handing it to a worker (and waking it) costs more than moving it here.
  const bool by_proxy = size <= params_.proxy_bytes;
  for (uint32_t k = 0; k < used && k < plan.chunk_count; ++k) {
    const uint32_t s = order[k];
    const uint64_t first = k;
    SocketTask task;
    task.request = request;
    task.base = base;
    task.size = size;
    task.chunk_bytes = plan.chunk_bytes;
    task.chunk_count = plan.chunk_count;
    task.next_chunk = first;
    task.stride = used;
    task.result = results != nullptr ? &results[s] : nullptr;
    task.seq = seq;
    task.arrival_consumer = arrival_consumer;
    task.tx_dmabuf_id = tx_dmabuf_id;
    task.zerocopy = direction_ == Direction::kSend && (params_.zerocopy_tx || tx_dmabuf_id != 0);
    task.profile = profile;
    task.phandle = profile != nullptr ? profile->phandle : nullptr;
    // Count before publishing: the worker may finish the task before QueueTask returns.
    request->pending_tasks.fetch_add(1, std::memory_order_relaxed);
    QueueTask(s, task, by_proxy);
    ++queued;
  }
  ProgressProxy();  // as far as the sockets take it now: often all of it
  return queued;
}

uint64_t Comm::WorkerBytes() const {
  uint64_t bytes = 0;
  for (const auto& socket : data_sockets_) bytes += socket->counters.bytes.load();
  return bytes;
}

Result<MemoryRegion*> Comm::Register(void* data, size_t size, int type) {
  if (type != nccl::kPtrHost && type != nccl::kPtrCuda) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "regMr type %d is not NCCL_PTR_HOST (1) or NCCL_PTR_CUDA (2)", type);
  }
  if (data == nullptr && size > 0) {
    return Status::Error(ErrorKind::kInvalidArgument, "regMr of %zu bytes at NULL", size);
  }
  auto region = std::make_unique<MemoryRegion>();
  region->data = data;
  region->size = size;
  region->type = type;
  if (type == nccl::kPtrCuda && direction_ == Direction::kSend && params_.devmem_tx_ifindex > 0) {
    TxBinder& binder = params_.tx_binder != nullptr ? *params_.tx_binder : TxBinder::Process();
    Result<TxMapping> mapping = binder.Map(params_.devmem_tx_ifindex, data, size);
    if (mapping.ok()) {
      region->tx_binding = mapping->binding;
      region->tx_dmabuf_id = mapping->dmabuf_id;
      region->tx_data_offset = mapping->data_offset;
      region->tx_ifindex = params_.devmem_tx_ifindex;
      if (!logged_tx_) {
        logged_tx_ = true;
        log::Info(log::kNet,
                  "%s: devmem TX: CUDA send buffers are bound for transmit (dmabuf id %u) and "
                  "sent from GPU memory with MSG_ZEROCOPY, no host copy",
                  description_.c_str(), mapping->dmabuf_id);
      }
      return region.release();  // owned by the caller until deregMr
    }
    Status refused =
        mapping.status().WithContext("devmem TX for a CUDA send buffer on " + description_);
    if (params_.require_tx) {
      return refused.WithContext("NCCL_DEVMEM_REQUIRE_TX=1");
    }
    ++counters_.tx_refusals;
    if (!logged_tx_refusal_) {
      logged_tx_refusal_ = true;
      log::Warn(
          "%s; such buffers stage through host memory (NCCL_DEVMEM_REQUIRE_TX=1 makes "
          "this an error)",
          refused.message().c_str());
    }
  }
  if (type == nccl::kPtrCuda) {
    Result<const CudaDriver*> driver = CudaDriver::Get();
    if (!driver.ok()) {
      return driver.status().WithContext("regMr of a CUDA buffer on " + description_);
    }
    // Pre-size the staging of the requests NCCL keeps in flight (NCCL_STEPS = 8) now, at
    // registration, instead of on the data path: NCCL's steps are a quarter of its FIFO at most
    // (NCCL_BUFFSIZE / NCCL_STEPS x 2 slice steps).
    const size_t step = std::min<size_t>(std::max<size_t>(size / 4, 1), size_t{4} << 20);
    DEVMEM_RETURN_IF_ERROR(pool_.PresizeStaging(kStagedInFlight, step));
    if (!logged_staging_) {
      logged_staging_ = true;
      log::Info(log::kNet, "%s: %s", description_.c_str(), CudaBufferPath());
    }
  }
  return region.release();  // owned by the caller until deregMr
}

Result<CopyStream*> Comm::StagingCopyStream(int device) {
  if (!staging_stream_) {
    Result<CopyStream> created = CopyStream::Create(device, params_.gpu_work_limit);
    if (!created.ok())
      return created.status().WithContext("staging copy stream of " + description_);
    staging_stream_.emplace(std::move(created).value());
  }
  return &*staging_stream_;
}

void Comm::LogClose() const {
  uint64_t zerocopy_sends = 0, zerocopy_done = 0, zerocopy_copied = 0;
  for (const auto& socket : data_sockets_) {
    if (socket->zerocopy == nullptr) continue;
    zerocopy_sends += socket->zerocopy->sends();
    zerocopy_done += socket->zerocopy->completed();
    zerocopy_copied += socket->zerocopy->copied();
  }
  if (params_.zerocopy_tx || params_.devmem_tx_ifindex > 0) {
    // Copied completions: the kernel copied after all (always on loopback and veth; a NIC
    // that cannot send from these pages does too).
    log::Info(log::kNet,
              "%s: %llu MSG_ZEROCOPY sends, %llu completed (%llu of them copied by the kernel), "
              "%llu still in flight",
              description_.c_str(), static_cast<unsigned long long>(zerocopy_sends),
              static_cast<unsigned long long>(zerocopy_done),
              static_cast<unsigned long long>(zerocopy_copied),
              static_cast<unsigned long long>(zerocopy_sends - zerocopy_done));
  }
  uint64_t syscalls = 0;
  for (const auto& socket : data_sockets_) syscalls += socket->counters.syscalls.load();
  log::Info(log::kNet,
            "%s closed: %llu messages (%llu inline), %llu payload bytes, %llu staged bytes, "
            "%llu data syscalls, %d requests still in flight%s",
            description_.c_str(), static_cast<unsigned long long>(counters_.messages),
            static_cast<unsigned long long>(counters_.inline_messages),
            static_cast<unsigned long long>(counters_.payload_bytes),
            static_cast<unsigned long long>(counters_.staged_bytes),
            static_cast<unsigned long long>(syscalls), pool_.InUse(),
            params_.adaptive_stripes
                ? Format(", %llu messages steered to the faster members' sockets",
                         static_cast<unsigned long long>(counters_.steered_messages))
                      .c_str()
                : "");
}

}  // namespace devmem
