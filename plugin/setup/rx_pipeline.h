// The receive side of one connection as the transport runs it, built from the RxPath that setup
// chose at accept (rx_path.h): the region frags land in, the frag receiver of each data socket
// and the consumers that read the frags. The transport (RecvComm) executes it and never asks
// which mode or which consumer it holds; this is the one place that turns a mode into parts.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "plugin/consumers/frag_consumer.h"
#include "plugin/consumers/nccl_unpack_consumer.h"
#include "plugin/core/status.h"
#include "plugin/devmem/frag_receiver.h"
#include "plugin/devmem/rx_region.h"
#include "plugin/setup/rx_path.h"

namespace devmem {

struct RxPipeline {
  // Declared so that they go in reverse: consumers and pages before the region, the region
  // before the bindings and flow rules that steer the NIC into it.
  std::vector<std::shared_ptr<void>> keep_alive;
  std::shared_ptr<RxRegion> region;  // nullptr: plain TCP, the data sockets carry no frags
  // Who reads held frags: the plugin's kernel (GPU region) or the CPU (host region); with NCCL's
  // unpack on, `unpack` takes the SIMPLE steps and `consumer` the LL/LL128 receives.
  std::unique_ptr<FragConsumer> consumer;
  std::unique_ptr<NcclUnpackConsumer> unpack;
  std::unique_ptr<PagePool> pool_pages;  // emulation: the pages of the comm's own region
  // One per data socket, in socket order (empty on the plain path): the comm moves them onto
  // its sockets.
  std::vector<std::unique_ptr<FragReceiver>> receivers;
  // How long a receive may wait for its consumer once every byte arrived (RxPath).
  std::chrono::milliseconds gpu_work_limit{0};
  const char* consumer_name = "none (plain TCP)";
  // Which data path runs, as BuildRxPipeline logged it once ("<comm>: <summary>"), and on the
  // plain path why devmem RX does not run: for tools that report it (devmem-doctor --pair).
  RxPath::Mode mode = RxPath::Mode::kPlain;
  std::string summary;
  std::string plain_reason;

  bool carries_frags() const { return region != nullptr; }
};

// Builds the pipeline of a receive comm with `data_sockets` sockets called `name` and logs, once,
// which data path it runs and why (plain TCP, devmem RX or its emulation).
Result<RxPipeline> BuildRxPipeline(RxPath path, size_t data_sockets, const std::string& name);

}  // namespace devmem
