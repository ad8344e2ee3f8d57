// How a receive connection turns bytes into frags and who consumes them: decided at accept by
// the setup layer (mode selection, devmem binding, flow steering) and handed to the transport's
// RecvComm, which only executes it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "plugin/consumers/kernel_scatter_consumer.h"
#include "plugin/core/config.h"
#include "plugin/core/nccl_contract.h"
#include "plugin/devmem/frag_receiver.h"
#include "plugin/devmem/rx_region.h"

namespace devmem {

// Mode selection's answer for one NIC, made once at init.
struct RxPlan {
  std::string plain_reason;      // non-empty: plain TCP, and why
  std::vector<uint32_t> queues;  // devmem: the RX queues bound to the GPU region
  // Devmem and emulation: the RX region of this NIC (devmem) or of each receive comm
  // (emulation), and the per-GPU arena every region is a slice of (rx_arena.h).
  uint64_t region_bytes = 0;
  uint64_t arena_bytes = 0;
  std::string budget;  // how region_bytes was chosen, logged at the first bind
  // The sizes frags can have on this NIC (or in emulation), and the rx-page-size bind-rx asks
  // for (0: the kernel's PAGE_SIZE, attribute not sent).
  FragGeometry geometry;
  uint32_t rx_page_bytes = 0;
};

// How a receive comm's data sockets turn bytes into frags, and who consumes the frags (fixed at
// accept, logged).
struct RxPath {
  enum class Mode { kPlain, kEmulatedDevmem, kDevmem } mode = Mode::kPlain;
  EmulationMix mix;
  // Devmem modes: the frag sizes (the emulated NIC's page size; the scatter consumer's limits).
  FragGeometry geometry;
  std::string plain_reason;  // kPlain: why devmem RX does not run on this NIC
  UnpackMode unpack = UnpackMode::kPlugin;
  // Devmem modes: where frags land, a slice of its GPU's (or, emulated without a GPU, the
  // host's) RX arena: kDevmem shares its NIC's slice bound to the NIC, kEmulatedDevmem owns
  // one per comm. Set up by the listener before the comm exists.
  std::shared_ptr<RxRegion> region;
  // kDevmem: one frag receiver per data socket (kEmulatedDevmem: the comm makes its own).
  std::vector<std::unique_ptr<FragReceiver>> receivers;
  std::vector<std::shared_ptr<void>> keep_alive;  // bindings and flow rules the comm must hold
  // Who runs the scatter for a GPU consumer; empty = our CUDA kernel (tests pass their own).
  ScatterEngineFactory engine_factory;
  // Scatter submissions a comm keeps in flight: NCCL_STEPS (8) x maxRecvs.
  size_t scatter_slots = nccl::kSteps;
  // How long a receive may wait for its GPU consumer (kernel) once every byte arrived, and how
  // long closing waits for the consumer's work, before the work is given up on with a WARN
  // instead of hanging (plugin/cuda/gpu_quarantine.h; NCCL_DEVMEM_GPU_CONSUMER_TIMEOUT_MS, 0:
  // wait forever).
  std::chrono::milliseconds gpu_work_limit{kDefaultGpuConsumerTimeoutMs};
};

}  // namespace devmem
