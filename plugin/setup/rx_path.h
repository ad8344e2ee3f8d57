// How a receive connection turns bytes into frags and who consumes them: decided at accept by
// the setup layer (mode selection, devmem binding, flow steering) and handed to the transport's
// RecvComm, which only executes it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gpu/scatter_engine.h"
#include "plugin/core/config.h"
#include "plugin/devmem/frag_receiver.h"
#include "plugin/devmem/rx_region.h"

namespace devmem {

using ScatterEngineFactory =
    std::function<Result<std::unique_ptr<gpu::ScatterEngine>>(int gpu, size_t max_ops)>;

// How a receive comm's data sockets turn bytes into frags, and who consumes the frags (fixed at
// accept, logged).
struct RxPath {
  enum class Mode { kPlain, kEmulatedDevmem, kDevmem } mode = Mode::kPlain;
  uint64_t region_bytes = 0;
  EmulationMix mix;
  std::string plain_reason;  // kPlain: why devmem RX does not run on this NIC
  UnpackMode unpack = UnpackMode::kPlugin;
  // kEmulatedDevmem: the GPU whose memory holds the emulated region; -1 = host memory.
  int gpu = -1;
  // kDevmem: the region bound to the NIC and one frag receiver per data socket, set up by the
  // listener (binding, flow steering) before the comm exists.
  std::unique_ptr<RxRegion> bound_region;
  std::vector<std::unique_ptr<FragReceiver>> receivers;
  std::vector<std::shared_ptr<void>> keep_alive;  // bindings and flow rules the comm must hold
  // Who runs the scatter for a GPU consumer; empty = our CUDA kernel (tests pass their own).
  ScatterEngineFactory engine_factory;
};

}  // namespace devmem
