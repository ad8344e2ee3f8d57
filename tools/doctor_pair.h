// `devmem-doctor --serve --peer HOST` and `devmem-doctor --pair HOST`: a live check of two hosts
// over the plugin's own transport. The two sides meet on a control connection (the operator's
// --port; tools/pair_control.h), swap the plugin's listen handles there, connect the plugin's
// comms both ways and stream a validation pattern (tools/pair_pattern.h) in each direction at
// every size from 4 KiB to 64 MiB; then each reports the data path its plugin ran, GB/s and any
// corruption (tools/pair_report.h). Each side talks only to the host the operator named, and
// stops by itself: after one run, or at the deadline.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "tools/pair_protocol.h"

namespace devmem::doctor {

inline constexpr uint16_t kDefaultPairPort = 18515;
inline constexpr std::chrono::seconds kDefaultPairTimeout{120};

struct PairOptions {
  bool serve = false;
  std::string host;  // --pair HOST, or the --peer of --serve
  uint16_t port = kDefaultPairPort;
  std::chrono::seconds timeout = kDefaultPairTimeout;  // the whole run, waiting included
  uint64_t max_bytes = kPairMaxBytes;
  bool json = false;
  bool verbose = false;  // the plugin's INFO lines on stderr
};

// Runs one side; prints the report (or the error) and returns the exit status: 0 every byte as
// sent, 1 corruption, 2 an error (bad argument, refused, deadline, transport failure, bad bytes
// from the peer).
int RunPairCheck(const PairOptions& options);

}  // namespace devmem::doctor
