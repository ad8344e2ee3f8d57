// Loads the built plugin the way NCCL does (dlopen + dlsym of the exported table) for the
// benchmarks (perf/bench/) and the ABI-level tests: test support, included by both.
#pragma once

#include <dlfcn.h>

#include <cstdarg>
#include <cstdio>
#include <string>

#include "plugin/abi/net_abi.h"

namespace devmem::testing {

class LoadedPlugin {
 public:
  LoadedPlugin() = default;
  LoadedPlugin(const LoadedPlugin&) = delete;
  LoadedPlugin& operator=(const LoadedPlugin&) = delete;
  ~LoadedPlugin() {
    if (handle_ != nullptr) dlclose(handle_);
  }

  // Opens `path` with NCCL's flags; false with `error()` set on failure.
  bool Open(const std::string& path) {
    handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle_ == nullptr) {
      const char* why = dlerror();
      error_ = why != nullptr ? why : "dlopen failed";
      return false;
    }
    return true;
  }
  template <typename Table>
  const Table* Symbol(const char* name) const {
    return static_cast<const Table*>(dlsym(handle_, name));
  }
  const abi::NetV11* v11() const { return Symbol<abi::NetV11>("ncclNetPlugin_v11"); }
  const std::string& error() const { return error_; }

 private:
  void* handle_ = nullptr;
  std::string error_;
};

// A logger with NCCL's signature that prints WARN always and INFO when verbose.
inline bool& LoggerVerbose() {
  static bool verbose = false;
  return verbose;
}
inline void StderrLogger(abi::LogLevel level, unsigned long /*flags*/, const char* file,
                         int /*line*/, const char* fmt, ...) {
  if (level > abi::kLogWarn && !LoggerVerbose()) return;
  va_list args;
  va_start(args, fmt);
  fprintf(stderr, "%s %s: ", level == abi::kLogWarn ? "WARN" : "INFO", file);
  vfprintf(stderr, fmt, args);
  fputc('\n', stderr);
  va_end(args);
}

}  // namespace devmem::testing
