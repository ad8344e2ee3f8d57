// The devmem receive path between the kernel and the consumer, against a fake kernel: each
// recvmsg result is real cmsg bytes (SCM_DEVMEM_DMABUF / SCM_DEVMEM_LINEAR) describing stream
// bytes the fake NIC wrote into pages of a host "dmabuf" region and a bounce buffer. The path
// is what DevmemFragReceiver does per receive (parse, copy linear bytes into place, record
// frags in an OffsetTable, collect tokens) and what the consumer does per message (scatter,
// then return the tokens in TokenBatch calls to a fake SO_DEVMEM_DONTNEED).
//
// The harness mirrors DevmemFragReceiver's own loop step for step (it predates the receiver's
// recvmsg seam, DevmemFragReceiver::ReceiveFn, which perf/bench/rx_pipeline_bench.cc uses).
//
// Input, repeated until it ends: u8 op. op % 4 < 3: one receive: u8 frag count (1 + n % 16),
// then per frag u8 flags (bit 0 linear; bits 5..7 a fault: 1 foreign dmabuf id, 2 outside the
// region, 3 zero size, 4 byte count off by one, 5 MSG_CTRUNC, 6 short cmsg_len), u16 size,
// u16 offset in its page, u8 page pick. op % 4 == 3: the consumer runs: u8 mask of release
// calls that fail with EINTR (the tokens stay pending and go back on the next run).
//
// Invariants: an injected fault is an error and nothing else is; every delivered byte equals
// the stream; every token goes back exactly once, within the kernel's caps per call; nothing
// stays outstanding at the end.
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "plugin/devmem/frag_parser.h"
#include "plugin/devmem/offset_table.h"
#include "plugin/devmem/token_batch.h"
#include "plugin/devmem/uapi.h"
#include "tests/fuzz/fuzz_input.h"

namespace devmem {
namespace {

constexpr uint32_t kPageBytes = 4096;
constexpr uint32_t kPages = 64;
constexpr uint64_t kRegionBytes = uint64_t{kPages} * kPageBytes;
constexpr size_t kBounceBytes = 16 << 10;  // small, so that linear bytes can overflow it
constexpr uint64_t kMessageBytes = 1 << 20;
constexpr uint32_t kDmabufId = 7;

enum Fault : uint8_t {
  kNone = 0,
  kForeignDmabuf = 1,
  kOutsideRegion = 2,
  kZeroSize = 3,
  kCountOffByOne = 4,
  kControlTruncated = 5,
  kShortCmsg = 6,
};

// Allocated once: a fresh input starts with stale bytes, which the checks never trust.
uint8_t* RegionMemory() {
  static uint8_t* region = new uint8_t[kRegionBytes];
  return region;
}
uint8_t* MessageMemory() {
  static uint8_t* dst = new uint8_t[kMessageBytes];
  return dst;
}

// The NIC and the kernel: pages handed out as frags, tokens that pin them.
struct FakeKernel {
  uint8_t* region = RegionMemory();
  std::vector<int> page_of_token;  // -1 once returned
  std::vector<bool> page_busy = std::vector<bool>(kPages);
  uint32_t busy_pages = 0;
  size_t outstanding = 0;

  uint32_t Issue(uint32_t page) {
    page_busy[page] = true;
    ++busy_pages;
    ++outstanding;
    page_of_token.push_back(static_cast<int>(page));
    return static_cast<uint32_t>(page_of_token.size() - 1);
  }
};

FakeKernel* g_kernel = nullptr;
uint8_t g_fail_mask = 0;
int g_release_call = 0;

// SO_DEVMEM_DONTNEED as the kernel implements it, plus the checks of what we send it.
int FakeRelease(int fd, const uapi::DmabufToken* entries, size_t count) {
  FUZZ_CHECK(fd == 42, "released on fd %d", fd);
  FUZZ_CHECK(count > 0 && count <= uapi::kMaxDontneedTokens, "%zu entries in one call", count);
  const int call = g_release_call++;
  if (call < 8 && (g_fail_mask >> call & 1) != 0) {
    errno = EINTR;
    return -1;
  }
  uint64_t frags = 0;
  int freed = 0;
  for (size_t i = 0; i < count; ++i) {
    FUZZ_CHECK(entries[i].token_count > 0, "an empty token range");
    frags += entries[i].token_count;
    for (uint32_t t = 0; t < entries[i].token_count; ++t) {
      const uint64_t token = uint64_t{entries[i].token_start} + t;
      FUZZ_CHECK(token < g_kernel->page_of_token.size(), "token %llu never issued",
                 static_cast<unsigned long long>(token));
      const int page = g_kernel->page_of_token[token];
      FUZZ_CHECK(page >= 0, "token %llu returned twice", static_cast<unsigned long long>(token));
      g_kernel->page_of_token[token] = -1;
      g_kernel->page_busy[page] = false;
      --g_kernel->busy_pages;
      --g_kernel->outstanding;
      ++freed;
    }
  }
  FUZZ_CHECK(frags <= uapi::kMaxDontneedFrags, "%llu frags in one call",
             static_cast<unsigned long long>(frags));
  return freed;
}

struct Receiver {
  RegionBinding binding{kDmabufId, kRegionBytes};
  std::vector<char> bounce = std::vector<char>(kBounceBytes);
  std::vector<StreamSegment> segments;
  // The message being received: destination, its scatter plan, its tokens.
  uint8_t* dst = MessageMemory();
  uint64_t message_start = 0;  // stream position of dst[0]
  uint64_t dst_offset = 0;
  OffsetTable table;
  TokenBatch batch;
  TokenReleaseStats stats;
  uint64_t tokens_added = 0;
};

struct PlannedFrag {
  bool linear;
  Fault fault;
  uint32_t size;
  uint64_t offset;  // region offset (dmabuf frags)
  uint32_t token;
};

// One recvmsg: the fake kernel lays out frags and writes their bytes; the receiver parses.
// Returns false when the connection is over (a fault was detected).
bool Receive(fuzz::ByteReader& in, FakeKernel& kernel, Receiver& rx, uint64_t* stream_pos) {
  const int frags = 1 + in.Take<uint8_t>() % 16;
  std::vector<PlannedFrag> plan;
  Fault receive_fault = kNone;
  bool expect_error = false;
  uint64_t bytes = 0, linear = 0;
  for (int i = 0; i < frags && !in.empty(); ++i) {
    const uint8_t flags = in.Take<uint8_t>();
    PlannedFrag f{};
    f.linear = (flags & 1) != 0;
    f.fault = static_cast<Fault>(flags >> 5);
    const uint16_t size = in.Take<uint16_t>();
    const uint16_t in_page = in.Take<uint16_t>() % kPageBytes;
    const uint8_t pick = in.Take<uint8_t>();
    f.size = f.linear ? 1 + size % kPageBytes : 1 + size % (kPageBytes - in_page);
    if (bytes + f.size > kMessageBytes - rx.dst_offset) break;  // keep the message bounded
    if (f.linear) {
      linear += f.size;
      if (linear > kBounceBytes) expect_error = true;  // the bounce cannot hold them
    } else {
      if (kernel.busy_pages == kPages) break;  // the pool is dry: the NIC drops, nothing to say
      uint32_t page = pick % kPages;
      while (kernel.page_busy[page]) page = (page + 1) % kPages;
      f.offset = uint64_t{page} * kPageBytes + in_page;
      f.token = kernel.Issue(page);
    }
    switch (f.fault) {
      case kForeignDmabuf:
      case kOutsideRegion:
        if (!f.linear) expect_error = true;
        break;
      case kZeroSize:
      case kShortCmsg:
      case kControlTruncated:
        expect_error = true;
        break;
      case kCountOffByOne:
        receive_fault = kCountOffByOne;
        expect_error = true;
        break;
      default:
        f.fault = kNone;
    }
    bytes += f.size;
    plan.push_back(f);
  }
  if (plan.empty()) return true;

  // The NIC writes the stream: dmabuf frags into the region, linear bytes into the bounce.
  uint64_t at = *stream_pos, host_cursor = 0;
  for (const PlannedFrag& f : plan) {
    if (f.linear) {
      if (host_cursor < kBounceBytes) {
        fuzz::CopyStream(at, rx.bounce.data() + host_cursor,
                         std::min<uint64_t>(f.size, kBounceBytes - host_cursor));
      }
      host_cursor += f.size;
    } else {
      fuzz::CopyStream(at, kernel.region + f.offset, f.size);
    }
    at += f.size;
  }

  // The cmsgs recvmsg returns, in a control buffer of exactly their size.
  const size_t space = CMSG_SPACE(sizeof(uapi::DmabufCmsg));
  std::vector<uint8_t> control(space * plan.size());
  msghdr msg{};
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  for (const PlannedFrag& f : plan) {
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = f.linear ? uapi::kScmDevmemLinear : uapi::kScmDevmemDmabuf;
    cm->cmsg_len = CMSG_LEN(sizeof(uapi::DmabufCmsg));
    uapi::DmabufCmsg frag{};
    frag.frag_size = f.size;
    if (!f.linear) {
      frag.frag_offset = f.offset;
      frag.frag_token = f.token;
      frag.dmabuf_id = kDmabufId;
    }
    if (f.fault == kForeignDmabuf) frag.dmabuf_id = kDmabufId + 1;
    if (f.fault == kOutsideRegion) frag.frag_offset += kRegionBytes;
    if (f.fault == kZeroSize) frag.frag_size = 0;
    if (f.fault == kShortCmsg) cm->cmsg_len = CMSG_LEN(sizeof(uapi::DmabufCmsg) - 4);
    if (f.fault == kControlTruncated) msg.msg_flags |= MSG_CTRUNC;
    memcpy(CMSG_DATA(cm), &frag, sizeof(frag));
    cm = CMSG_NXTHDR(&msg, cm);
  }
  const ssize_t received = static_cast<ssize_t>(bytes + (receive_fault == kCountOffByOne));

  // DevmemFragReceiver::Receive from here on.
  const size_t first = rx.segments.size();
  Result<ParsedReceive> parsed =
      ParseDevmemReceive(msg, received, rx.binding, rx.bounce.size(), &rx.segments);
  if (!parsed.ok()) {
    FUZZ_CHECK(expect_error, "a valid receive was refused: %s", parsed.status().message().c_str());
    FUZZ_CHECK(rx.segments.size() == first, "a refused receive left segments");
    return false;
  }
  FUZZ_CHECK(!expect_error, "a faulty receive was accepted (%zu frags)", plan.size());
  const size_t dmabuf_frags = static_cast<size_t>(
      std::count_if(plan.begin(), plan.end(), [](const PlannedFrag& f) { return !f.linear; }));
  FUZZ_CHECK(parsed->frags == dmabuf_frags, "parsed %zu frags of %zu", parsed->frags, dmabuf_frags);
  uint64_t local = 0;
  for (size_t i = first; i < rx.segments.size(); ++i) {
    const StreamSegment& s = rx.segments[i];
    if (s.kind == StreamSegment::Kind::kHost) {
      memcpy(rx.dst + rx.dst_offset + local, rx.bounce.data() + s.source_offset, s.length);
    } else {
      rx.batch.Add(s.token);
      ++rx.tokens_added;
    }
    local += s.length;
  }
  FUZZ_CHECK(local == bytes, "segments cover %llu of %llu bytes",
             static_cast<unsigned long long>(local), static_cast<unsigned long long>(bytes));
  const uint64_t end =
      rx.table.Append(rx.segments.data() + first, rx.segments.size() - first, rx.dst_offset);
  FUZZ_CHECK(end == rx.dst_offset + bytes, "the offset table lost bytes");
  rx.segments.resize(first);
  rx.dst_offset = end;
  *stream_pos += bytes;
  return true;
}

// The consumer: scatter the message, check it, return its tokens.
void Consume(uint8_t fail_mask, FakeKernel& kernel, Receiver& rx) {
  Status scattered = HostScatter(rx.table, reinterpret_cast<const char*>(kernel.region),
                                 kRegionBytes, reinterpret_cast<char*>(rx.dst), kMessageBytes);
  FUZZ_CHECK(scattered.ok(), "scatter refused a valid table: %s", scattered.message().c_str());
  size_t bad = 0;
  FUZZ_CHECK(fuzz::MatchesStream(rx.dst, rx.message_start, rx.dst_offset, &bad),
             "byte %zu of the message wrong", bad);
  g_fail_mask = fail_mask;
  g_release_call = 0;
  const size_t pending = rx.batch.tokens();
  const uint64_t returned_before = rx.stats.tokens_returned;
  Status released = rx.batch.Release(42, &rx.stats, FakeRelease);
  if (released.ok()) {
    FUZZ_CHECK(rx.batch.empty(), "tokens left after a successful release");
  } else {
    // A failed call keeps every token it did not return; they go back on the next run.
    FUZZ_CHECK(rx.batch.tokens() + (rx.stats.tokens_returned - returned_before) == pending,
               "%zu pending, %zu kept, %llu returned", pending, rx.batch.tokens(),
               static_cast<unsigned long long>(rx.stats.tokens_returned - returned_before));
  }
  FUZZ_CHECK(kernel.outstanding == rx.batch.tokens(), "kernel holds %zu tokens, batch %zu",
             kernel.outstanding, rx.batch.tokens());
  FUZZ_CHECK(rx.stats.tokens_not_freed == 0, "the kernel freed every token it was given");
  // The next message starts where this one ended.
  rx.message_start += rx.dst_offset;
  rx.dst_offset = 0;
  rx.table.Clear();
}

}  // namespace
}  // namespace devmem

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace devmem;
  fuzz::ByteReader in(data, size);
  FakeKernel kernel;
  g_kernel = &kernel;
  Receiver rx;
  uint64_t stream_pos = 0;
  bool open = true;
  while (open && !in.empty()) {
    const uint8_t op = in.Take<uint8_t>();
    if (op % 4 == 3) {
      Consume(in.Take<uint8_t>(), kernel, rx);
    } else {
      open = Receive(in, kernel, rx, &stream_pos);
    }
  }
  if (open) {
    Consume(0, kernel, rx);
    FUZZ_CHECK(kernel.outstanding == 0 && kernel.busy_pages == 0, "%zu tokens never returned",
               kernel.outstanding);
    FUZZ_CHECK(rx.stats.tokens_returned == rx.tokens_added, "%llu tokens returned of %llu",
               static_cast<unsigned long long>(rx.stats.tokens_returned),
               static_cast<unsigned long long>(rx.tokens_added));
  }
  g_kernel = nullptr;
  return 0;
}
