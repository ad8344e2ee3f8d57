// Shell helpers for the tests that build network namespaces with iproute2, tc and nftables.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace devmem::testing {

// Runs a shell command; returns its exit status and appends its output to *out.
inline int RunCommand(const std::string& command, std::string* out = nullptr) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) {
    if (out != nullptr) out->append(buffer, n);
  }
  int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace devmem::testing
