// Devmem tokens waiting to go back to the kernel. Consecutive tokens coalesce into one
// {start, count} entry; Release() returns them with SO_DEVMEM_DONTNEED in calls that respect
// the kernel's caps (128 entries, 1024 frags), and counts frags the kernel did not free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "plugin/core/relaxed_counter.h"
#include "plugin/core/status.h"
#include "plugin/devmem/uapi.h"

namespace devmem {

// Relaxed counters: the metrics writer reads them while the receiver returns tokens.
struct TokenReleaseStats {
  RelaxedCounter calls;
  RelaxedCounter tokens_returned;
  RelaxedCounter tokens_not_freed;  // the kernel freed fewer than we returned
};

class TokenBatch {
 public:
  // The syscall seam: setsockopt(SO_DEVMEM_DONTNEED) in production; tests may count calls.
  // Returns frags freed (>= 0), or -1 with errno set.
  using ReleaseFn = int (*)(int fd, const uapi::DmabufToken* entries, size_t count);
  static int KernelRelease(int fd, const uapi::DmabufToken* entries, size_t count);

  void Add(uint32_t token) {
    if (!ranges_.empty()) {
      uapi::DmabufToken& last = ranges_.back();
      if (last.token_start + last.token_count == token && last.token_count < UINT32_MAX) {
        ++last.token_count;
        ++tokens_;
        return;
      }
    }
    ranges_.push_back({token, 1});
    ++tokens_;
  }
  size_t tokens() const { return tokens_; }
  bool empty() const { return tokens_ == 0; }

  // Returns every pending token on `fd`. On a syscall error the tokens of the failed call and
  // of those after it stay pending (the kernel freed none of them); earlier calls' are gone.
  Status Release(int fd, TokenReleaseStats* stats, ReleaseFn release = KernelRelease);

 private:
  std::vector<uapi::DmabufToken> ranges_;
  size_t tokens_ = 0;
  std::vector<uapi::DmabufToken> call_;  // scratch for one call, reused
};

}  // namespace devmem
