// One case of the receive-pipeline bench: NCCL's receives of one connection, `depth` in flight,
// through the plugin's DevmemFragReceiver and one of its consumers, with the synthetic NIC
// (synthetic_nic.h) behind the receiver's syscall seams. The run plays the transport's part
// the way plugin/transport does it (SocketMover::AdvanceFrags for the frags of each receive,
// RecvComm::Test / DeliverHostBytes / ReleaseFrags / Consumed for the rest), on one thread like
// NCCL's proxy thread, over one data socket.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "perf/bench/synthetic_nic.h"
#include "plugin/core/status.h"

namespace devmem::perf {

enum class ConsumerKind { kHostScatter, kKernelScatter, kNcclUnpack };
const char* ConsumerName(ConsumerKind kind);  // "host-scatter", "kernel-scatter", "nccl-unpack"

struct CaseSpec {
  ConsumerKind consumer = ConsumerKind::kHostScatter;
  NicProfile profile;
  NicOptions nic;
  uint64_t step_bytes = 0;
  size_t depth = 0;            // receives in flight (NCCL_STEPS)
  uint64_t verify_steps = 0;   // first phase: the NIC writes the pattern, every step is checked
  uint64_t timed_steps = 0;    // second phase: measured, not checked
  uint64_t region_bytes = 0;   // 0: sized for `depth` held steps of this profile
  int gpu = 0;                 // the GPU consumers' device
  bool wrong_scatter = false;  // the bench tells the consumer a wrong frag offset (self-test)
};

struct CaseResult {
  uint64_t region_bytes = 0;
  // The verify phase: every byte of every destination matched the sender's pattern.
  bool check_passed = false;
  std::string check_detail;  // where it did not
  // The timed phase.
  uint64_t steps = 0;
  uint64_t bytes = 0;
  double seconds = 0;
  double thread_cpu_seconds = 0;   // the receiving thread: bookkeeping, consumer, stand-in
  double process_cpu_seconds = 0;  // every thread (CUDA's included)
  double stand_in_seconds = 0;     // inside the synthetic recvmsg / DONTNEED
  NicCounters nic;
  std::vector<double> release_latency_us;  // per step: last frag described -> last token back
};

// The region a case uses when CaseSpec::region_bytes is 0.
uint64_t DefaultRegionBytes(const CaseSpec& spec);

// Runs one case; an error where the plugin's path or the bench's setup failed.
Result<CaseResult> RunCase(const CaseSpec& spec);

}  // namespace devmem::perf
