// The receive-pipeline bench's stand-in for a header-split devmem NIC and the kernel's devmem
// socket calls. The plugin's DevmemFragReceiver calls it through its syscall seams
// (DevmemFragReceiver::ReceiveFn for recvmsg(MSG_SOCK_DEVMEM), TokenBatch::ReleaseFn for
// SO_DEVMEM_DONTNEED), so everything above those two calls is the plugin's own code.
//
// What a recvmsg returns, from Linux 6.18 (6952350/linux-6.18.y @27d8ad92 net/ipv4/tcp.c
// tcp_recvmsg_dmabuf, tcp_xa_pool_refill; tcp_recvmsg_locked):
//   - per skb, its linear bytes first: copied into the iov and announced by one
//     SCM_DEVMEM_LINEAR cmsg whose dmabuf_cmsg carries only frag_size;
//   - then one SCM_DEVMEM_DMABUF cmsg per skb frag: frag_offset = the niov's offset in the
//     dmabuf + the frag's offset in it (+ what an earlier call already took of it), frag_size,
//     a fresh frag_token from the socket's xarray (__xa_alloc, xa_limit_31b: the lowest free
//     id; a frag split over two calls gets a token in each) and the binding's dmabuf_id;
//     each token pins the niov (pp_ref_count) until SO_DEVMEM_DONTNEED returns it;
//   - the return value counts linear and frag bytes; the receive ends early where the next
//     cmsg does not fit (put_cmsg_notrunc), and fails with ETOOSMALL where not one fits.
// Where frags lie: the binding hands the page pool PAGE_SIZE niovs first-fit from its
// gen_pool (torvalds/linux @03e96b8c net/core/devmem.c:77-86 net_devmem_alloc_dmabuf), so a
// fresh pool fills the region in address order; a niov goes back to the pool when the NIC is
// done with it and its last token returned (modelled first in, first out, as the page pool's
// ring recycles what the socket returns). A driver puts one
// packet's payload at the start of each rx buffer (gve: 2 KiB buffers, two per 4 KiB niov;
// plugin/devmem/frag_geometry.h owns those sizes) or, with hardware GRO into page buffers, fills
// whole pages; an skb holds up to MAX_SKB_FRAGS (17, the kernel's default) frags.
//
// The sender's bytes are a pattern of (message, position): in the verify phase the NIC writes
// it into every frag it describes (its DMA) and into every linear byte, so the consumer's output
// can be checked byte for byte. In the timed phase the frags keep whatever the region held (the
// plugin's bookkeeping and consumers do the same work whatever the bytes are).
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "plugin/cuda/copy_stream.h"
#include "plugin/devmem/frag_geometry.h"
#include "plugin/devmem/rx_region.h"
#include "plugin/devmem/uapi.h"

namespace devmem::perf {

// How the NIC cuts the stream into frags.
struct NicProfile {
  std::string name;           // "page-4k", "mtu1500-16k", ...
  uint32_t niov_bytes = 0;    // the binding's RX page: PAGE_SIZE or rx-page-size
  uint32_t buffer_bytes = 0;  // one driver rx buffer; niov_bytes / buffer_bytes per niov
  uint32_t unit_bytes = 0;    // stream bytes the NIC puts in one buffer
  FragGeometry geometry;      // the same NIC as the plugin describes it (sizes its cmsg buffer)
};
// Hardware GRO / LRO into page buffers: every frag is a whole niov.
NicProfile PageFrags(uint32_t niov_bytes);
// One MTU packet's payload per 2 KiB buffer (gve), `niov_bytes / 2048` buffers per niov.
NicProfile MtuFrags(uint32_t mtu, uint32_t niov_bytes);

struct NicOptions {
  uint32_t dmabuf_id = 1;
  uint32_t linear_every = 16;   // every Nth skb starts with linear payload bytes (0: none)
  uint32_t linear_bytes = 100;  // how many
};

// The byte the sender put at `position` of message `message`, for `len` bytes from there.
void FillPattern(uint64_t message, uint64_t position, char* out, size_t len);
// The first position in [0, len) where `data` differs from the pattern, or -1.
int64_t FirstPatternMismatch(uint64_t message, const char* data, size_t len);

struct NicCounters {
  uint64_t recvmsg_calls = 0;
  uint64_t would_block = 0;  // recvmsg found no byte to describe (page pool empty)
  uint64_t frags = 0;
  uint64_t frag_bytes = 0;
  uint64_t linear_bytes = 0;
  uint64_t tokens_issued = 0;
  uint64_t release_calls = 0;
  uint64_t release_ranges = 0;
  uint64_t tokens_released = 0;
  uint64_t tokens_unknown = 0;  // released but not outstanding (the kernel skips them)
  uint64_t refused_calls = 0;   // DONTNEED calls over the kernel's 128-entry cap
  std::chrono::nanoseconds stand_in_time{0};  // spent inside the two stand-in calls
};

class SyntheticNic final {
 public:
  // `region`: where frags land, a host region or a GPU one (`stamp_stream` then carries the
  // verify phase's pattern writes). Messages are `message_bytes` each, back to back in one
  // TCP stream.
  SyntheticNic(RxRegion* region, NicProfile profile, NicOptions options, uint64_t message_bytes,
               CopyStream* stamp_stream);
  SyntheticNic(const SyntheticNic&) = delete;
  SyntheticNic& operator=(const SyntheticNic&) = delete;
  ~SyntheticNic();

  // Messages [0, n) were sent: their bytes may arrive.
  void AllowMessages(uint64_t n) { allowed_messages_ = n; }
  // Verify phase: write the pattern into every frag (the NIC's DMA).
  void set_stamping(bool on) { stamping_ = on; }
  const NicCounters& counters() const { return counters_; }
  size_t outstanding_tokens() const { return static_cast<size_t>(outstanding_); }
  uint32_t dmabuf_id() const { return options_.dmabuf_id; }
  // The first error the stand-in met (a write into a GPU region failed), or OK.
  const Status& error() const { return error_; }
  // Latency of every message whose last token came back since the last call: from the
  // recvmsg that described its last byte to the DONTNEED that returned its last token.
  std::vector<std::chrono::nanoseconds> TakeReleaseLatencies();

  // The seams: the NIC made active by ActiveNic answers every call.
  static ssize_t Recvmsg(int fd, msghdr* msg, int flags);
  static int Dontneed(int fd, const uapi::DmabufToken* entries, size_t count);

 private:
  friend class ActiveNic;
  struct Message {
    uint64_t index = UINT64_MAX;
    uint64_t tokens_out = 0;
    bool fully_described = false;
    std::chrono::steady_clock::time_point last_frag{};
  };
  ssize_t Receive(msghdr* msg);
  int Release(const uapi::DmabufToken* entries, size_t count);
  bool NextUnit();  // false: the page pool is empty
  void DropNiovRef(uint32_t niov);
  uint32_t IssueToken(uint32_t niov, uint64_t message);
  Message& MessageAt(uint64_t index);
  void Stamp(uint64_t region_offset, uint64_t position, uint32_t len);

  RxRegion* region_;
  NicProfile profile_;
  NicOptions options_;
  uint64_t message_bytes_;
  CopyStream* stamp_stream_;
  bool stamping_ = false;
  uint64_t allowed_messages_ = 0;
  Status error_;
  NicCounters counters_;

  // The page pool: free niovs in the order they come back, and each niov's pins.
  std::vector<uint32_t> free_ring_;
  size_t free_head_ = 0;
  size_t free_count_ = 0;
  std::vector<uint32_t> niov_refs_;
  uint32_t current_niov_ = UINT32_MAX;  // the niov the NIC is filling (holds one ref)
  uint32_t next_buffer_ = 0;            // its next free buffer

  // The stream cursor.
  uint64_t position_ = 0;        // stream bytes described so far
  uint32_t skb_units_left_ = 0;  // frags the current skb still gets
  uint64_t skbs_ = 0;
  uint32_t linear_left_ = 0;  // linear bytes of the current skb not yet described
  uint32_t unit_left_ = 0;    // bytes of the current buffer not yet described
  uint64_t unit_offset_ = 0;  // region offset of the next of them
  uint32_t unit_niov_ = 0;

  // Tokens: the lowest free id (a bitmap), and per token its niov and message.
  std::vector<uint64_t> token_used_;
  size_t token_hint_ = 0;  // no free token below 64 * token_hint_
  std::vector<uint32_t> token_niov_;
  std::vector<uint64_t> token_message_;
  uint64_t outstanding_ = 0;

  std::vector<Message> messages_;  // a ring of the messages in flight
  std::vector<std::chrono::nanoseconds> latencies_;
  std::vector<char> scratch_;  // the pattern of one frag, for a GPU region's copy
};

// Makes `nic` the one the seams answer for, for this object's lifetime. The seams carry only an
// fd, as the syscalls they stand for do, so the bench has one NIC active at a time.
class ActiveNic final {
 public:
  explicit ActiveNic(SyntheticNic* nic);
  ActiveNic(const ActiveNic&) = delete;
  ActiveNic& operator=(const ActiveNic&) = delete;
  ~ActiveNic();
};

}  // namespace devmem::perf
