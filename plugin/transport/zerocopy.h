// MSG_ZEROCOPY sends on one data socket and their completions (Documentation/networking/
// msg_zerocopy.rst). Each successful sendmsg(MSG_ZEROCOPY) gets the next 32-bit id of the
// socket; the kernel later reports ids [lo, hi] done on the socket's error queue (coalesced
// ranges, SO_EE_ORIGIN_ZEROCOPY), with SO_EE_CODE_ZEROCOPY_COPIED when it copied after all
// (loopback and veth always do). Until its ids are done the kernel may still read the buffer,
// so a send request is complete only then (Request::zerocopy_pending).
//
// The thread that sends records (WillSend) and whichever thread polls completions (Drain) may
// differ (a worker, NCCL's proxy thread in test()): a mutex orders them.
//
// Consecutive sends on a socket may share one notification (net/core/skbuff.c
// msg_zerocopy_realloc extends the tail skb's): message N's last send can then be reported
// only together with message N+1's first, once that was acknowledged, that is, once the peer
// read it. NCCL progresses receives independently of sends, so that never waits on itself;
// a test that progresses both from one loop must do the same.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

#include "plugin/core/status.h"

namespace devmem {

struct Request;

class ZeroCopyTracker {
 public:
  // Sends a socket keeps in flight before the sender waits for completions (also bounds what
  // the kernel must remember: each is an optmem-charged notification until coalesced).
  static constexpr size_t kMaxInFlight = 1024;

  ZeroCopyTracker() : entries_(kMaxInFlight) {}

  // False when kMaxInFlight sends wait for completions: drain and wait (POLLERR) first.
  bool HasRoom() const;
  // Records, BEFORE the sendmsg(MSG_ZEROCOPY) call, that the socket's next id will belong to
  // `request` (whose zerocopy_pending it raises). Before, not after: another thread may drain
  // the error queue while this one sends, and on loopback the completion can be there before
  // sendmsg returns; a completion whose id is not recorded yet would be dropped as foreign,
  // and its request would wait forever.
  void WillSend(Request* request);
  // The call WillSend announced failed, so the kernel used no id: forget the recorded one.
  // Only the thread that called WillSend, before it sends again.
  void SendFailed();
  // Reads every notification waiting on `fd`'s error queue without blocking and completes its
  // ids. An error only for a failed read or a notification that is not a zero-copy one.
  Status Drain(int fd);
  // Completes ids [lo, hi] (inclusive, modulo 2^32), as a notification reports them; ids not
  // in flight are ignored (already completed, or never ours). Public for tests.
  void Complete(uint32_t lo, uint32_t hi, bool copied);

  uint64_t sends() const;
  uint64_t completed() const;
  uint64_t copied() const;  // completed by a copy after all
  size_t in_flight() const;

 private:
  struct Entry {
    uint32_t id = 0;
    Request* request = nullptr;
    bool done = false;
  };
  mutable std::mutex mutex_;
  std::vector<Entry> entries_;  // ring, ids in order: [head_, head_ + count_)
  size_t head_ = 0;
  size_t count_ = 0;
  uint32_t next_id_ = 0;  // the kernel's counter starts at 0 for each socket
  uint64_t sends_ = 0;
  uint64_t completed_ = 0;
  uint64_t copied_ = 0;
};

}  // namespace devmem
