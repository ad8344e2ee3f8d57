#include "plugin/devmem/token_batch.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

namespace devmem {

int TokenBatch::KernelRelease(int fd, const uapi::DmabufToken* entries, size_t count) {
  return setsockopt(fd, SOL_SOCKET, uapi::kSoDevmemDontneed, entries,
                    static_cast<socklen_t>(count * sizeof(uapi::DmabufToken)));
}

Status TokenBatch::Release(int fd, TokenReleaseStats* stats, ReleaseFn release) {
  size_t next = 0;                // first range not fully released
  uint32_t consumed_in_next = 0;  // tokens of ranges_[next] already released
  while (next < ranges_.size()) {
    call_.clear();
    uint32_t frags = 0;
    size_t scan = next;
    uint32_t offset = consumed_in_next;
    while (scan < ranges_.size() && call_.size() < uapi::kMaxDontneedTokens &&
           frags < uapi::kMaxDontneedFrags) {
      const uapi::DmabufToken& range = ranges_[scan];
      const uint32_t left = range.token_count - offset;
      const uint32_t take = std::min<uint32_t>(left, uapi::kMaxDontneedFrags - frags);
      call_.push_back({range.token_start + offset, take});
      frags += take;
      if (take == left) {
        ++scan;
        offset = 0;
      } else {
        offset += take;
      }
    }
    int freed = release(fd, call_.data(), call_.size());
    if (freed < 0) {
      const int err = errno;
      // Keep what was not returned, so a retry (or close) still accounts for it.
      ranges_.erase(ranges_.begin(), ranges_.begin() + static_cast<std::ptrdiff_t>(next));
      if (!ranges_.empty()) {
        ranges_.front().token_start += consumed_in_next;
        ranges_.front().token_count -= consumed_in_next;
      }
      tokens_ = 0;
      for (const auto& r : ranges_) tokens_ += r.token_count;
      return Status::Errno(err, "SO_DEVMEM_DONTNEED of %u tokens in %zu ranges", frags,
                           call_.size());
    }
    ++stats->calls;
    stats->tokens_returned += frags;
    if (static_cast<uint32_t>(freed) < frags) stats->tokens_not_freed += frags - freed;
    next = scan;
    consumed_in_next = offset;
  }
  ranges_.clear();
  tokens_ = 0;
  return Status::Ok();
}

}  // namespace devmem
