#include "perf/bench/rx_pipeline_run.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>

#include "gpu/scatter_engine.h"
#include "plugin/consumers/host_scatter_consumer.h"
#include "plugin/consumers/kernel_scatter_consumer.h"
#include "plugin/consumers/nccl_unpack_consumer.h"
#include "plugin/consumers/unpack_queue.h"
#include "plugin/cuda/copy_stream.h"
#include "plugin/cuda/cuda_driver.h"
#include "plugin/cuda/memory.h"
#include "plugin/devmem/frag_receiver.h"
#include "plugin/devmem/rx_arena.h"

namespace devmem::perf {
namespace {

// The receiver's fd: the stand-in answers whatever fd it is given, no socket exists.
constexpr int kSyntheticFd = 0;

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

double ProcessCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// Device memory for the destinations, freed with its owner.
class DeviceBuffer final {
 public:
  static Result<DeviceBuffer> Allocate(int gpu, size_t bytes) {
    Result<const CudaDriver*> driver = CudaDriver::Get();
    if (!driver.ok()) return driver.status();
    Result<ScopedDeviceContext> context = driver.value()->EnterDevice(gpu);
    if (!context.ok()) return context.status();
    DeviceBuffer buffer;
    DEVMEM_RETURN_IF_ERROR(driver.value()->Allocate(bytes, &buffer.ptr_));
    buffer.driver_ = driver.value();
    buffer.gpu_ = gpu;
    return buffer;
  }
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : driver_(other.driver_), gpu_(other.gpu_), ptr_(other.ptr_) {
    other.ptr_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&&) = delete;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_ == 0) return;
    Result<ScopedDeviceContext> context = driver_->EnterDevice(gpu_);
    if (context.ok()) driver_->Free(ptr_);
  }
  char* data() const { return reinterpret_cast<char*>(static_cast<uintptr_t>(ptr_)); }

 private:
  const CudaDriver* driver_ = nullptr;
  int gpu_ = -1;
  CudaDriver::CUdeviceptr ptr_ = 0;
};

// One NCCL receive in flight, as the transport keeps it (Request + its FragResult).
struct InFlight {
  enum class Stage { kPosted, kReceived, kAwaitingConsumed };
  uint64_t index = 0;
  Stage stage = Stage::kPosted;
  uint64_t received = 0;
  OffsetTable table;  // frags held for the consumer
  std::vector<uint32_t> tokens;
  ConsumerJob job;
};

class PipelineRun final {
 public:
  explicit PipelineRun(const CaseSpec& spec) : spec_(spec) {}
  Result<CaseResult> Run();

 private:
  bool gpu_consumer() const { return spec_.consumer != ConsumerKind::kHostScatter; }
  Status SetUp();
  Status RunSteps(uint64_t first, uint64_t count, bool verify);
  Status Post(uint64_t index);
  Status ReceiveSome(InFlight& step, bool verify);
  Result<bool> Test(InFlight& step);
  Status DeliverHostBytes(InFlight& step);
  Status Release(InFlight& step);
  Status Consumed(InFlight& step, bool verify);
  Status Check(const InFlight& step);
  void ScrambleForSelfTest(std::vector<StreamSegment>* segments);
  char* HostLanding(uint64_t index) const {
    return (plan_.staged ? staging_.data() : host_dst_.get()) +
           (index % spec_.depth) * spec_.step_bytes;
  }
  char* DeviceDst(uint64_t index) const {
    return device_dst_->data() + (index % spec_.depth) * spec_.step_bytes;
  }

  const CaseSpec& spec_;
  CaseResult result_;
  std::shared_ptr<RxArena> arena_;
  std::shared_ptr<RxRegion> region_;  // shared: the kernel consumer keeps it for GPU work
  std::optional<CopyStream> stream_;  // GPU consumers: pattern writes, host ranges, checks
  // The destinations before the consumer: it goes first, its kernels done, and then they do.
  struct FreeHost {
    void operator()(char* p) const { free(p); }
  };
  std::unique_ptr<char, FreeHost> host_dst_;  // host scatter: depth slots of a step
  std::optional<DeviceBuffer> device_dst_;    // GPU consumers: the same on the GPU
  PinnedBuffer staging_;                      // GPU consumers: where host bytes land first
  std::vector<char> check_;                   // GPU consumers: a destination read back
  std::unique_ptr<SyntheticNic> nic_;
  std::unique_ptr<DevmemFragReceiver> receiver_;
  std::unique_ptr<FragConsumer> consumer_;
  NcclUnpackConsumer* unpack_ = nullptr;  // consumer_, when it is NCCL's unpack
  LandingPlan plan_;
  std::vector<InFlight> ring_;
  std::vector<StreamSegment> segments_;
  OffsetTable immediate_;  // scatter on arrival: one batch
  std::vector<uint32_t> immediate_tokens_;
  bool scrambled_ = false;
};

Status PipelineRun::SetUp() {
  const int gpu = gpu_consumer() ? spec_.gpu : -1;
  result_.region_bytes = spec_.region_bytes != 0 ? spec_.region_bytes : DefaultRegionBytes(spec_);
  Result<std::shared_ptr<RxArena>> arena = RxArena::CreateForTest(gpu, result_.region_bytes);
  if (!arena.ok()) return arena.status().WithContext("RX arena");
  arena_ = std::move(arena).value();
  Result<std::unique_ptr<RxRegion>> region = arena_->Carve(arena_->bytes(), /*writable=*/true);
  if (!region.ok()) return region.status().WithContext("RX region");
  region_ = std::move(region).value();
  result_.region_bytes = region_->bytes();
  // A NIC's DMA has touched every page of a bound region long before: fault them in now, or the
  // timed phase would measure the kernel's first touch of the memfd (its frags are not stamped).
  if (char* host = region_->host_base(); host != nullptr) memset(host, 0, region_->bytes());
  // Rounded up to whole pages (aligned_alloc takes multiples of its alignment).
  const size_t slots_bytes = (spec_.depth * spec_.step_bytes + 4095) / 4096 * 4096;
  if (gpu_consumer()) {
    Result<CopyStream> stream = CopyStream::Create(gpu);
    if (!stream.ok()) return stream.status().WithContext("copy stream");
    stream_.emplace(std::move(stream).value());
    Result<DeviceBuffer> dst = DeviceBuffer::Allocate(gpu, slots_bytes);
    if (!dst.ok()) return dst.status().WithContext("destination buffers");
    device_dst_.emplace(std::move(dst).value());
    Result<PinnedBuffer> staging = PinnedBuffer::Allocate(slots_bytes, gpu);
    if (!staging.ok()) return staging.status().WithContext("staging");
    staging_ = std::move(staging).value();
    check_.resize(spec_.step_bytes);
  } else {
    host_dst_.reset(static_cast<char*>(aligned_alloc(4096, slots_bytes)));
    if (host_dst_ == nullptr) return Status::Error(ErrorKind::kSystem, "destination buffers");
    memset(host_dst_.get(), 0, slots_bytes);
  }
  nic_ = std::make_unique<SyntheticNic>(region_.get(), spec_.profile, spec_.nic, spec_.step_bytes,
                                        stream_ ? &*stream_ : nullptr);
  receiver_ = std::make_unique<DevmemFragReceiver>(
      RegionBinding{spec_.nic.dmabuf_id, region_->bytes(), spec_.profile.niov_bytes},
      spec_.profile.geometry, SyntheticNic::Dontneed, SteeringExpectation(), SyntheticNic::Recvmsg);
  switch (spec_.consumer) {
    case ConsumerKind::kHostScatter:
      consumer_ = std::make_unique<HostScatterConsumer>(region_.get());
      break;
    case ConsumerKind::kKernelScatter: {
      Result<std::unique_ptr<KernelScatterConsumer>> kernel = KernelScatterConsumer::Create(
          region_, gpu::CreateCudaScatterEngine, spec_.depth, spec_.profile.geometry);
      if (!kernel.ok()) return kernel.status();
      consumer_ = std::move(kernel).value();
      break;
    }
    case ConsumerKind::kNcclUnpack: {
      Result<std::unique_ptr<NcclUnpackConsumer>> unpack =
          NcclUnpackConsumer::Create(region_.get());
      if (!unpack.ok()) return unpack.status();
      unpack_ = unpack.value().get();
      consumer_ = std::move(unpack).value();
      break;
    }
  }
  plan_ = consumer_->PlanLanding(/*cuda_destination=*/gpu_consumer());
  ring_.resize(spec_.depth);
  segments_.reserve(1024);
  return Status::Ok();
}

Status PipelineRun::Post(uint64_t index) {
  InFlight& step = ring_[index % spec_.depth];
  step.index = index;
  step.stage = InFlight::Stage::kPosted;
  step.received = 0;
  step.table.Clear();
  step.tokens.clear();
  step.job.Reset();
  return consumer_->Reserve(&step.job);  // NCCL's unpack: the step's slot, in posting order
}

void PipelineRun::ScrambleForSelfTest(std::vector<StreamSegment>* segments) {
  // Two whole frags of one length trade places: every byte count stays right, the bytes are
  // in the wrong place.
  for (size_t i = 0; i < segments->size() && !scrambled_; ++i) {
    StreamSegment& a = (*segments)[i];
    if (a.kind != StreamSegment::Kind::kRegion) continue;
    for (size_t j = i + 1; j < segments->size(); ++j) {
      StreamSegment& b = (*segments)[j];
      if (b.kind != StreamSegment::Kind::kRegion || b.length != a.length) continue;
      std::swap(a.source_offset, b.source_offset);
      scrambled_ = true;
      break;
    }
  }
}

// SocketMover::AdvanceFrags for one receive call.
Status PipelineRun::ReceiveSome(InFlight& step, bool verify) {
  segments_.clear();
  uint64_t consumed = 0;
  Result<FragReceiver::State> state =
      receiver_->Receive(kSyntheticFd, spec_.step_bytes - step.received, /*oldest=*/true,
                         HostLanding(step.index) + step.received, &segments_, &consumed);
  if (!state.ok()) {
    return nic_->error().ok() ? state.status() : nic_->error();
  }
  if (consumed == 0) return Status::Ok();  // the page pool is empty: tokens must come back
  if (verify && spec_.wrong_scatter && !scrambled_) ScrambleForSelfTest(&segments_);
  if (plan_.scatter_on_arrival) {
    immediate_.Clear();
    immediate_tokens_.clear();
    immediate_.Append(segments_.data(), segments_.size(), step.received);
    for (const StreamSegment& s : segments_) {
      if (s.kind == StreamSegment::Kind::kRegion) immediate_tokens_.push_back(s.token);
    }
    DEVMEM_RETURN_IF_ERROR(
        consumer_->ScatterOnArrival(immediate_, HostLanding(step.index), spec_.step_bytes));
    DEVMEM_RETURN_IF_ERROR(
        receiver_->Release(kSyntheticFd, immediate_tokens_.data(), immediate_tokens_.size()));
  } else {
    step.table.Append(segments_.data(), segments_.size(), step.received);
    for (const StreamSegment& s : segments_) {
      if (s.kind == StreamSegment::Kind::kRegion) step.tokens.push_back(s.token);
    }
  }
  step.received += consumed;
  if (step.received == spec_.step_bytes) step.stage = InFlight::Stage::kReceived;
  return Status::Ok();
}

// RecvComm::DeliverHostBytes for a GPU consumer (kRangesToDevice).
Status PipelineRun::DeliverHostBytes(InFlight& step) {
  if (!plan_.staged || step.table.host_ranges().empty()) return Status::Ok();
  for (const HostRange& r : step.table.host_ranges()) {
    DEVMEM_RETURN_IF_ERROR(stream_->EnqueueToDevice(
        DeviceDst(step.index) + r.dst_offset, HostLanding(step.index) + r.dst_offset, r.length));
  }
  return stream_->Wait();  // the staging is reused by the step NCCL posts next in this slot
}

Status PipelineRun::Release(InFlight& step) {
  // RecvComm::ReleaseFrags returns only what a receive holds (scattered on arrival: nothing).
  Status released = step.tokens.empty()
                        ? Status::Ok()
                        : receiver_->Release(kSyntheticFd, step.tokens.data(), step.tokens.size());
  step.tokens.clear();
  step.table.Clear();
  return released;
}

// RecvComm::Test once every byte is in: true when NCCL may take the receive as done.
Result<bool> PipelineRun::Test(InFlight& step) {
  const bool holds_frags = !step.tokens.empty();
  if (!step.job.started && (holds_frags || consumer_->ConsumesEveryStep())) {
    const OffsetTable* tables[] = {&step.table};
    HeldMessage message;
    message.tables = tables;
    message.table_count = holds_frags ? 1 : 0;
    message.size = spec_.step_bytes;
    message.host_dst = HostLanding(step.index);
    message.device_dst = gpu_consumer() ? DeviceDst(step.index) : nullptr;
    Result<bool> started = consumer_->Start(message, &step.job);
    if (!started.ok()) return started.status();
    if (!started.value()) return false;  // busy: the next pass tries again
  }
  if (step.job.started) {
    Result<bool> finished = consumer_->Finished(&step.job);
    if (!finished.ok()) return finished.status();
    if (!finished.value()) return false;
  }
  DEVMEM_RETURN_IF_ERROR(DeliverHostBytes(step));
  if (!consumer_->HoldsTokensUntilConsumed()) DEVMEM_RETURN_IF_ERROR(Release(step));
  return true;
}

Status PipelineRun::Check(const InFlight& step) {
  const char* output = HostLanding(step.index);
  if (gpu_consumer()) {
    DEVMEM_RETURN_IF_ERROR(
        stream_->EnqueueToHost(check_.data(), DeviceDst(step.index), spec_.step_bytes));
    if (unpack_ != nullptr) {
      // NCCL's kernel, on the host: each published entry read out of the region into place.
      const auto* handle = static_cast<const unpack::UnpackDeviceHandle*>(unpack_->device_handle());
      const uint64_t count = handle->meta->cnt[step.job.slot];
      for (uint64_t i = 0; i < count && i < unpack::kMaxMetasPerSlot; ++i) {
        const unpack::LoadMeta& m = handle->meta->mem[step.job.slot][i];
        if (m.dst_off + m.len > spec_.step_bytes) {
          return Status::Error(ErrorKind::kInternal, "unpack entry %llu past the step",
                               static_cast<unsigned long long>(i));
        }
        DEVMEM_RETURN_IF_ERROR(stream_->EnqueueToHost(
            check_.data() + m.dst_off, static_cast<const char*>(handle->bounce_buf) + m.src_off,
            m.len));
      }
    }
    DEVMEM_RETURN_IF_ERROR(stream_->Wait());
    output = check_.data();
  }
  const int64_t at = FirstPatternMismatch(step.index, output, spec_.step_bytes);
  if (at >= 0 && result_.check_detail.empty()) {
    result_.check_detail =
        Format("step %llu differs from the sent bytes at byte %lld",
               static_cast<unsigned long long>(step.index), static_cast<long long>(at));
  }
  return Status::Ok();
}

// RecvComm::Consumed: NCCL's kernels are done with the step.
Status PipelineRun::Consumed(InFlight& step, bool verify) {
  if (verify && unpack_ != nullptr) DEVMEM_RETURN_IF_ERROR(Check(step));
  DEVMEM_RETURN_IF_ERROR(Release(step));
  consumer_->Retire(&step.job);
  return Status::Ok();
}

Status PipelineRun::RunSteps(uint64_t first, uint64_t count, bool verify) {
  const uint64_t end = first + count;
  uint64_t posted = first;    // irecv called
  uint64_t received = first;  // every byte in
  uint64_t tested = first;    // test() said done
  uint64_t retired = first;   // irecvConsumed called (the slot is NCCL's again)
  while (retired < end) {
    while (posted < end && posted - retired < spec_.depth) {
      DEVMEM_RETURN_IF_ERROR(Post(posted));
      nic_->AllowMessages(++posted);  // the sender's step goes out once the receive is posted
    }
    if (received < posted) {
      InFlight& step = ring_[received % spec_.depth];
      const uint64_t before = step.received;
      DEVMEM_RETURN_IF_ERROR(ReceiveSome(step, verify));
      if (step.stage == InFlight::Stage::kReceived) ++received;
      if (step.received == before && tested == received && retired == tested) {
        // Nothing holds a token that could come back: the NIC will never get a page again.
        return Status::Error(ErrorKind::kInvalidArgument,
                             "the %llu-byte region's page pool ran dry with no receive holding "
                             "frags: too small for %llu-byte steps of %s frags",
                             static_cast<unsigned long long>(result_.region_bytes),
                             static_cast<unsigned long long>(spec_.step_bytes),
                             spec_.profile.name.c_str());
      }
    }
    if (tested < received) {
      // NCCL's proxy tests the oldest receive only (src/transport/net.cc recvProxyProgress).
      InFlight& step = ring_[tested % spec_.depth];
      Result<bool> done = Test(step);
      if (!done.ok()) return done.status();
      if (done.value()) {
        if (verify && unpack_ == nullptr) DEVMEM_RETURN_IF_ERROR(Check(step));
        step.stage = InFlight::Stage::kAwaitingConsumed;
        ++tested;
      }
    }
    if (retired < tested) {
      // irecvConsumed as soon as test() said done: NCCL's own copy is not the plugin's cost.
      DEVMEM_RETURN_IF_ERROR(Consumed(ring_[retired % spec_.depth], verify));
      ++retired;
    }
  }
  return Status::Ok();
}

Result<CaseResult> PipelineRun::Run() {
  DEVMEM_RETURN_IF_ERROR(SetUp());
  ActiveNic active(nic_.get());
  nic_->set_stamping(true);
  DEVMEM_RETURN_IF_ERROR(RunSteps(0, spec_.verify_steps, /*verify=*/true).WithContext("verify"));
  if (spec_.wrong_scatter && !scrambled_) {
    return Status::Error(ErrorKind::kInternal,
                         "--wrong-scatter found no two frags of one length to swap");
  }
  result_.check_passed = result_.check_detail.empty();
  (void)nic_->TakeReleaseLatencies();
  nic_->set_stamping(false);

  const NicCounters before = nic_->counters();
  const double cpu_start = ThreadCpuSeconds();
  const double process_start = ProcessCpuSeconds();
  const auto start = std::chrono::steady_clock::now();
  DEVMEM_RETURN_IF_ERROR(
      RunSteps(spec_.verify_steps, spec_.timed_steps, /*verify=*/false).WithContext("timed"));
  result_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result_.thread_cpu_seconds = ThreadCpuSeconds() - cpu_start;
  result_.process_cpu_seconds = ProcessCpuSeconds() - process_start;
  DEVMEM_RETURN_IF_ERROR(consumer_->Drain());

  const NicCounters& after = nic_->counters();
  NicCounters& d = result_.nic;
  d.recvmsg_calls = after.recvmsg_calls - before.recvmsg_calls;
  d.would_block = after.would_block - before.would_block;
  d.frags = after.frags - before.frags;
  d.frag_bytes = after.frag_bytes - before.frag_bytes;
  d.linear_bytes = after.linear_bytes - before.linear_bytes;
  d.tokens_issued = after.tokens_issued - before.tokens_issued;
  d.release_calls = after.release_calls - before.release_calls;
  d.release_ranges = after.release_ranges - before.release_ranges;
  d.tokens_released = after.tokens_released - before.tokens_released;
  d.tokens_unknown = after.tokens_unknown - before.tokens_unknown;
  d.refused_calls = after.refused_calls - before.refused_calls;
  d.stand_in_time = after.stand_in_time - before.stand_in_time;
  result_.stand_in_seconds = std::chrono::duration<double>(d.stand_in_time).count();
  result_.steps = spec_.timed_steps;
  result_.bytes = spec_.timed_steps * spec_.step_bytes;
  for (std::chrono::nanoseconds ns : nic_->TakeReleaseLatencies()) {
    result_.release_latency_us.push_back(static_cast<double>(ns.count()) / 1e3);
  }
  if (nic_->outstanding_tokens() != 0 || receiver_->outstanding() != 0 ||
      after.tokens_unknown != 0 || after.refused_calls != 0) {
    return Status::Error(ErrorKind::kInternal,
                         "token accounting: %zu still pinned at the NIC, %zu outstanding at the "
                         "receiver, %llu returned that were not out, %llu DONTNEED calls refused",
                         nic_->outstanding_tokens(), receiver_->outstanding(),
                         static_cast<unsigned long long>(after.tokens_unknown),
                         static_cast<unsigned long long>(after.refused_calls));
  }
  return result_;
}

}  // namespace

const char* ConsumerName(ConsumerKind kind) {
  switch (kind) {
    case ConsumerKind::kHostScatter:
      return "host-scatter";
    case ConsumerKind::kKernelScatter:
      return "kernel-scatter";
    case ConsumerKind::kNcclUnpack:
      return "nccl-unpack";
  }
  return "?";
}

uint64_t DefaultRegionBytes(const CaseSpec& spec) {
  // `depth` steps held at once (the kernel until its event, NCCL's unpack until irecvConsumed),
  // each pinning what its frags' buffers hold, plus a niov per step cut at both ends and a
  // quarter for the NIC's fill ahead; at least what the plugin's own rule asks, a held message
  // in a quarter of the region (MaxHeldMessageBytes).
  const double per_byte = spec.profile.geometry.RegionBytesPerStreamByte();
  const double held = static_cast<double>(spec.depth * spec.step_bytes) * per_byte * 1.25;
  const uint64_t edges = 2 * uint64_t{spec.profile.niov_bytes} * (spec.depth + 1);
  return std::max(static_cast<uint64_t>(held) + edges, 4 * spec.step_bytes);
}

Result<CaseResult> RunCase(const CaseSpec& spec) { return PipelineRun(spec).Run(); }

}  // namespace devmem::perf
