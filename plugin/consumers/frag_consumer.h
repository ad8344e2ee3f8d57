// The consumer seam: whatever copies a received message's frags out of the RX region into the
// destination. The transport (RecvComm) moves bytes, collects the frags of each message as
// offset tables and hands them here; it returns the frags' devmem tokens only once the consumer
// says it is done with the region bytes.
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
  enum class Kind { kHostScatter, kScatterKernel, kNcclUnpack };
  virtual ~FragConsumer() = default;
  virtual Kind kind() const = 0;
  virtual const char* name() const = 0;

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

}  // namespace devmem
