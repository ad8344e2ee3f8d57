// One case of nccl-net-devmem-scale-bench (perf/bench/scale_bench.cc): N comm pairs of one network
// table opened, idled, streamed and closed in fresh processes (fork), and what that cost the
// processes. The measuring process hands its numbers back as a plain struct.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "perf/bench/process_usage.h"

namespace devmem::perf::scale {

inline constexpr int kMaxSizes = 8;

// What to measure: ours (a plugin .so) or the yardstick (perf/bench/net_table.h).
struct Target {
  std::string label;
  bool yardstick;
  std::string spec;  // plugin path, or "installed[:PATH]"
};

struct CaseOptions {
  std::vector<uint64_t> sizes = {64 << 10, 1 << 20};
  bool split = false;  // senders and receivers in two processes
  int window = 4;      // messages in flight per comm
  int iters = 0;       // per comm and size; 0: ~512 MiB in all, window..1000 per comm
  double idle_seconds = 2;
  bool check = false;  // byte-check every message
};

// One case's numbers. Usage deltas are against the process after init() and after its message
// buffers were allocated; with `split` both processes' deltas are summed.
struct CaseResult {
  char error[512];          // empty when the case ran
  char description[512];    // what ran (NetTable::description)
  double setup_s;           // listen + connect + accept of every pair
  ProcessUsage init;        // what loading the library and init() added
  ProcessUsage open;        // all comms open, before traffic
  ProcessUsage after;       // after traffic, comms still open
  double idle_cpu_open_s;   // CPU over idle_seconds before traffic
  double idle_cpu_after_s;  // and after
  int iters[kMaxSizes];
  double gbps[kMaxSizes];  // all pairs together, per size
};

// Runs one case of `pairs` comm pairs in forked processes and waits for its numbers.
CaseResult MeasureCase(const CaseOptions& o, const Target& target, int pairs);

}  // namespace devmem::perf::scale
