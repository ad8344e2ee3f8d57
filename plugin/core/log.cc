#include "plugin/core/log.h"

#include <strings.h>
#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "plugin/core/status.h"

namespace devmem::log {
namespace {

std::atomic<nccl::DebugLogger> g_logger{nullptr};

// The level NCCL_DEBUG asks for, used only for the stderr fallback.
int StderrLevel() {
  static const int level = [] {
    const char* value = getenv("NCCL_DEBUG");  // NOLINT(concurrency-mt-unsafe): read-only env
    if (value == nullptr) return static_cast<int>(nccl::kLogNone);
    if (strcasecmp(value, "VERSION") == 0) return static_cast<int>(nccl::kLogVersion);
    if (strcasecmp(value, "WARN") == 0) return static_cast<int>(nccl::kLogWarn);
    if (strcasecmp(value, "INFO") == 0) return static_cast<int>(nccl::kLogInfo);
    if (strcasecmp(value, "TRACE") == 0) return static_cast<int>(nccl::kLogTrace);
    return static_cast<int>(nccl::kLogNone);
  }();
  return level;
}

void Emit(nccl::LogLevel level, unsigned long subsys, const char* fmt, va_list args) {
  std::string text = FormatV(fmt, args);
  nccl::DebugLogger logger = g_logger.load(std::memory_order_acquire);
  if (logger != nullptr) {
    logger(level, subsys, "NET/devmem", 0, "%s", text.c_str());
    return;
  }
  if (StderrLevel() < level) return;
  const char* tag = level == nccl::kLogWarn ? "WARN" : (level == nccl::kLogInfo ? "INFO" : "TRACE");
  fprintf(stderr, "[%d] NET/devmem %s %s\n", static_cast<int>(getpid()), tag, text.c_str());
}

}  // namespace

void SetLogger(nccl::DebugLogger logger) { g_logger.store(logger, std::memory_order_release); }

void Warn(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  Emit(nccl::kLogWarn, nccl::kSubsysAll, fmt, args);
  va_end(args);
}

void Info(unsigned long subsys, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  Emit(nccl::kLogInfo, subsys, fmt, args);
  va_end(args);
}

void Trace(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  Emit(nccl::kLogTrace, nccl::kSubsysNet, fmt, args);
  va_end(args);
}

}  // namespace devmem::log
