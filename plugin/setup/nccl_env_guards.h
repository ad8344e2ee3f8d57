// NCCL settings that our GPU receive path cannot live with, turned off before NCCL reads them.
//
// NCCL reads NCCL_PROTO, NCCL_PAT_ENABLE, NCCL_GRAPH_REGISTER, NCCL_LOCAL_REGISTER and
// NCCL_NET_GDR_READ after the net plugin's init (tuning, topology and registration run later in
// communicator init), so init may set them in the process environment. A value the user set is
// never overwritten: where it conflicts, the plugin WARNs and, for NCCL's device unpack, falls
// back to its own consumer, which is correct under every one of them.
//   - NCCL_PAT_ENABLE=0: PAT primitives never call the unpack setup or advance its head, so a
//     SIMPLE step would claim an unpack slot NCCL's kernel never reads (2.24+ no longer stores
//     comm->netDeviceType, so NCCL's own "PAT doesn't support net device offload" guard is dead).
//   - NCCL_GRAPH_REGISTER=0, NCCL_LOCAL_REGISTER=0: registered buffers put NCCL on NetRegMode,
//     where waitPeer sets the receive pointer to NULL while the unpack still runs.
//   - NCCL_PROTO=^LL128: NCCL's LL128 reader trusts a 128-byte line once its flag word landed;
//     neither our scatter kernel nor NCCL's unpack writes a line at once (any GPU RX region).
//   - NCCL_NET_GDR_READ=0: without devmem TX a CUDA send buffer costs a device-to-host copy per
//     message; with this NCCL keeps send buffers in host memory (devices advertising CUDA).
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace devmem {

// What the devices this process advertises need.
struct NcclEnvNeeds {
  bool unpack = false;         // some device advertises NCCL's device unpack
  bool gpu_rx_region = false;  // some device lands receive payload in GPU memory
  bool cuda_pointers = false;  // some device advertises NCCL_PTR_CUDA
  bool devmem_tx = false;      // the send side sends straight from GPU memory
};

// What one NIC offers NCCL, as NeedsOf reads it.
struct NicEnvFacts {
  bool gpu_rx_region = false;  // devmem RX (or its emulation) lands payload in GPU memory
  bool unpack = false;         // and NCCL's device unpack consumes it
  bool devmem_tx = false;      // CUDA send buffers go out from GPU memory (tx_setup.h)
};

// The process's needs from its NICs. NCCL_NET_GDR_READ is process-wide, so devmem_tx holds
// only when every NIC that advertises CUDA buffers (GPU RX region or devmem TX) has devmem TX:
// otherwise lifting the guard would make some NIC stage every CUDA send.
NcclEnvNeeds NeedsOf(const std::vector<NicEnvFacts>& nics);

struct NcclEnvSetting {
  std::string name;
  std::string value;
  std::string reason;
};

struct NcclEnvPlan {
  std::vector<NcclEnvSetting> to_set;  // unset variables to set, with why
  std::vector<std::string> warnings;   // user values that conflict
  // A user value makes NCCL's device unpack unsafe: use the plugin's consumer instead (the plan
  // then sets none of the unpack-only variables).
  bool unpack_unsafe = false;
};

using EnvGetter = std::function<const char*(const char*)>;

// Pure: what to set and what to warn about, given the current environment.
NcclEnvPlan PlanNcclEnvGuards(const NcclEnvNeeds& needs, const EnvGetter& getenv_fn);

// NCCL_PROTO in NCCL's syntax (comma list of protocol names, case-insensitive, a leading '^'
// excludes the listed ones): whether it leaves LL128 enabled.
bool ProtoEnablesLl128(const char* value);

// Sets the planned variables (only where still unset) and logs each once at INFO, and each
// warning at WARN.
void ApplyNcclEnvGuards(const NcclEnvPlan& plan);

}  // namespace devmem
