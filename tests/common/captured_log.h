// A logger with NCCL's signature that keeps every WARN the plugin writes (and prints it), so a
// test can count and read them. One per process, like the plugin's own logger.
#pragma once

#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include "plugin/abi/net_abi.h"

namespace devmem::testing {

class CapturedLog {
 public:
  __attribute__((format(printf, 5, 6))) static void Logger(abi::LogLevel level,
                                                           unsigned long /*flags*/,
                                                           const char* file, int /*line*/,
                                                           const char* fmt, ...) {
    if (level != abi::kLogWarn) return;
    va_list args;
    va_start(args, fmt);
    char text[2048];
    vsnprintf(text, sizeof(text), fmt, args);
    va_end(args);
    fprintf(stderr, "WARN %s: %s\n", file, text);
    std::lock_guard<std::mutex> lock(State().mutex);
    State().warnings.emplace_back(text);
  }
  static std::vector<std::string> Warnings() {
    std::lock_guard<std::mutex> lock(State().mutex);
    return State().warnings;
  }
  static void Clear() {
    std::lock_guard<std::mutex> lock(State().mutex);
    State().warnings.clear();
  }
  // WARN lines that contain `text`.
  static std::vector<std::string> WarningsWith(const std::string& text) {
    std::vector<std::string> matching;
    for (const std::string& line : Warnings()) {
      if (line.find(text) != std::string::npos) matching.push_back(line);
    }
    return matching;
  }

 private:
  struct Shared {
    std::mutex mutex;
    std::vector<std::string> warnings;
  };
  static Shared& State() {
    static Shared shared;
    return shared;
  }
};

}  // namespace devmem::testing
