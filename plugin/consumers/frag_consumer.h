// The consumer seam: whatever copies a received message's frags out of the RX region into the
// destination. The transport (RecvComm) moves bytes, collects the frags of each message as
// offset tables and hands them here; it returns the frags' devmem tokens only once the consumer
// says it is done with the region bytes. The transport never asks which consumer it has: the
// consumer plans where each posted buffer's bytes land (PlanLanding) and, where it copies on
// the CPU, scatters frags as the engine's workers receive them (ScatterOnArrival).
//   - HostScatterConsumer: the CPU copies (host regions: emulation without a GPU, the tests).
//   - KernelScatterConsumer: the plugin's CUDA scatter kernel; done when its event completed.
//   - NcclUnpackConsumer: NCCL's device unpack; publishes the step's metadata and NCCL's own
//     kernels copy after test() reports done, so the tokens wait for irecvConsumed.
#pragma once

#include <cstddef>
#include <cstdint>

#include "gpu/scatter_engine.h"
#include "plugin/core/status.h"
#include "plugin/devmem/offset_table.h"

namespace devmem {

// What happens to bytes that arrived as host data (inline payload, linear frags, a CPU
// scatter's output) after the frags' consumer ran.
enum class HostDelivery : uint8_t {
  kNone,            // they already sit in the destination
  kWholeToDevice,   // plain path / host scatter: the whole staged message goes to the GPU
  kRangesToDevice,  // GPU consumer: only the host ranges (linear bytes, inline) go to the GPU
  kWholeToHost,     // a GPU consumer wrote into mapped staging: copy the message to the host
};

// Where one posted buffer's bytes land, planned by its consumer when the receive is posted.
struct LandingPlan {
  bool staged = false;  // host bytes land in the request's pinned staging, not the buffer
  bool consumer_writes_staging = false;  // the consumer's device writes go to the staging too
  HostDelivery delivery = HostDelivery::kNone;
  // The engine's workers hand each batch of frags to ScatterOnArrival as it arrives and
  // return its tokens at once; otherwise the frags are held until the consumer ran.
  bool scatter_on_arrival = false;
};

// The landing of a buffer whose bytes all arrive as host data (the plain-TCP path, no frags):
// a CUDA buffer is received into staging and copied to the GPU whole.
inline LandingPlan HostDataLanding(bool cuda_destination) {
  LandingPlan plan;
  if (cuda_destination) {
    plan.staged = true;
    plan.delivery = HostDelivery::kWholeToDevice;
  }
  return plan;
}

// The landing of a buffer whose frags a GPU consumer copies: frags go straight to a CUDA
// buffer, its host bytes through staging; a host buffer takes everything where it is.
inline LandingPlan DeviceConsumerLanding(bool cuda_destination) {
  LandingPlan plan;
  if (cuda_destination) {
    plan.staged = true;
    plan.delivery = HostDelivery::kRangesToDevice;
  }
  return plan;
}

// One received message whose frags wait in the RX region.
struct HeldMessage {
  const OffsetTable* const* tables = nullptr;  // one per data socket that carried frags
  size_t table_count = 0;
  uint64_t size = 0;           // bytes of the message
  char* host_dst = nullptr;    // CPU consumers: the destination
  void* device_dst = nullptr;  // GPU consumers: the destination, device-addressable
};

// What a consumer keeps per message between its calls; lives in the transport's request.
struct ConsumerJob {
  bool started = false;
  bool has_ticket = false;  // kernel: a submission is in flight
  gpu::ScatterTicket ticket;
  bool has_slot = false;  // NCCL unpack: the step's slot
  uint32_t slot = 0;
  void Reset() { *this = ConsumerJob(); }
};

class FragConsumer {
 public:
  virtual ~FragConsumer() = default;
  virtual const char* name() const = 0;

  // When a receive is posted: where the bytes for a buffer of this kind land.
  virtual LandingPlan PlanLanding(bool cuda_destination) const = 0;
  // Only where PlanLanding said scatter_on_arrival: copies one batch of frags (`frags`'s
  // offsets are the message's) into `dst` of `size` bytes. Called on the engine's worker
  // threads, concurrently for different data sockets: reads the region only.
  virtual Status ScatterOnArrival(const OffsetTable& frags, char* dst, uint64_t size) const;
  // Whether every posted step goes through Start(), even one that received no frag or failed
  // (NCCL's unpack: an empty step still advances NCCL's head).
  virtual bool ConsumesEveryStep() const { return false; }

  // When the receive is posted: takes what the message will need (NCCL unpack: its step's
  // slot, which must follow posting order). Nothing by default.
  virtual Status Reserve(ConsumerJob* /*job*/) { return Status::Ok(); }
  // Gives back a Reserve() whose receive was never posted.
  virtual void Unreserve(ConsumerJob* /*job*/) {}
  // Every byte of the message arrived: starts consuming it. False: busy, nothing started
  // (back-pressure: call again later). NCCL unpack is started for every SIMPLE step, frags or
  // not (an empty step still advances NCCL's head).
  virtual Result<bool> Start(const HeldMessage& message, ConsumerJob* job) = 0;
  // True once the frags' region bytes are no longer read (their tokens may go back), or, for
  // NCCL unpack, once test() may report the receive done.
  virtual Result<bool> Finished(ConsumerJob* job) = 0;
  // NCCL unpack: NCCL's kernels read the region after test(); tokens wait for irecvConsumed.
  virtual bool HoldsTokensUntilConsumed() const { return false; }
  // After the tokens went back at irecvConsumed (or on failure): frees what Reserve() took.
  virtual void Retire(ConsumerJob* /*job*/) {}
  // Waits for every started job (close): the region outlives no reader.
  virtual Status Drain() { return Status::Ok(); }
};

inline Status FragConsumer::ScatterOnArrival(const OffsetTable& /*frags*/, char* /*dst*/,
                                             uint64_t /*size*/) const {
  return Status::Error(ErrorKind::kInternal, "the %s does not scatter frags as they arrive",
                       name());
}

}  // namespace devmem
