// One logging path for the whole plugin: NCCL's ncclDebugLogger_t when NCCL gave us one,
// otherwise stderr, filtered by NCCL_DEBUG the way NCCL itself filters.
#pragma once

#include "plugin/core/nccl_contract.h"

namespace devmem::log {

// Installs NCCL's logger (may be null: then stderr is used when NCCL_DEBUG asks for it).
void SetLogger(nccl::DebugLogger logger);

void Warn(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Info(unsigned long subsys, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void Trace(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

inline constexpr unsigned long kNet = nccl::kSubsysNet;
inline constexpr unsigned long kInit = nccl::kSubsysInit | nccl::kSubsysNet;
inline constexpr unsigned long kEnv = nccl::kSubsysEnv | nccl::kSubsysNet;

}  // namespace devmem::log
