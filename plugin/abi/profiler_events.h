// The ABI side of the profiler seam (plugin/observe/profiler.h): installs, for the callback NCCL
// passed at init, a sink that turns the transport's events into NCCL's SOCK v1 descriptors and
// the plugin's own (plugin/abi/profiler_abi.h).
#pragma once

#include "plugin/abi/net_abi.h"

namespace devmem::abi {

// A NULL callback (v8/v9 tables, or a host without a profiler) installs nothing.
void InstallNcclProfiler(ProfilerCallback callback);

}  // namespace devmem::abi
