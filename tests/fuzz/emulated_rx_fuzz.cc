// The emulated devmem receiver (the frag source NCCL_DEVMEM_EMULATE=1 runs) against a real
// socket: a script of writes, receives, token releases (valid, unknown and repeated tokens, in
// any order) and a peer close, with any frag mix and pool pressure.
//
// Input: u8 split percent, u8 linear percent, u64 seed, then ops until the input ends, u8 op:
//   op % 4 == 0  write: u16 bytes of the stream to the peer (as many as the socket takes)
//   op % 4 == 1  receive: u32 max bytes (1 + n % 256 KiB), u8 flags (bit 0: oldest message)
//   op % 4 == 2  release: u8 how many held tokens, u8 which first, u8 flags (bit 0: also an
//                unknown token, bit 1: also one released before)
//   op % 4 == 3  the peer closes its end
//
// Invariants: every byte a receive describes equals the stream at its position, wherever it
// landed (host destination or region page); a held frag's page is never written again before
// its token returns; unknown and repeated tokens are skipped and counted as not freed; a
// receive would-block only when nothing is unread, stalls only when the pool has no page for
// it, and fails only after the peer closed and every byte was read; at the end, with every
// token back, the pool is whole.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "plugin/core/unique_fd.h"
#include "plugin/devmem/frag_receiver.h"
#include "tests/fuzz/fuzz_input.h"

namespace devmem {
namespace {

constexpr uint32_t kPageBytes = 4096;  // the kernel's PAGE_SIZE niovs
constexpr uint64_t kRegionBytes = uint64_t{64} * kPageBytes;
constexpr uint64_t kMaxReceive = 256 << 10;

HostRegion& Region() {
  static HostRegion* region = [] {
    Result<std::unique_ptr<HostRegion>> created = HostRegion::Create(kRegionBytes);
    FUZZ_CHECK(created.ok(), "%s", created.status().message().c_str());
    return std::move(created).value().release();
  }();
  return *region;
}

struct HeldFrag {
  uint32_t token;
  uint64_t region_offset;
  uint32_t length;
  uint64_t stream_position;
};

void CheckHeldIntact(const HeldFrag& frag) {
  size_t bad = 0;
  FUZZ_CHECK(fuzz::MatchesStream(Region().data() + frag.region_offset, frag.stream_position,
                                 frag.length, &bad),
             "held frag (token %u, region %llu) overwritten at +%zu before its release", frag.token,
             static_cast<unsigned long long>(frag.region_offset), bad);
}

}  // namespace
}  // namespace devmem

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace devmem;
  fuzz::ByteReader in(data, size);
  EmulationMix mix;
  mix.split_percent = in.Take<uint8_t>() % 101;
  mix.linear_percent = in.Take<uint8_t>() % 101;
  const uint64_t seed = in.Take<uint64_t>();

  int fds[2];
  FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) == 0,
             "socketpair");
  UniqueFd receiver_fd(fds[0]);
  UniqueFd peer(fds[1]);
  PagePool pool(kRegionBytes, kPageBytes);
  EmulatedFragReceiver receiver(&Region(), &pool, mix, seed);

  static std::vector<char> host_dst(kMaxReceive);
  std::vector<uint8_t> chunk;
  std::vector<StreamSegment> segments;
  std::vector<HeldFrag> held;
  std::vector<uint32_t> released_before;
  uint64_t written = 0, read = 0, frags = 0, returned = 0, not_freed = 0;
  bool peer_closed = false;

  while (!in.empty()) {
    const uint8_t op = in.Take<uint8_t>() % 4;
    if (op == 0 && !peer_closed) {
      const size_t n = in.Take<uint16_t>();
      chunk.resize(n);
      fuzz::CopyStream(written, chunk.data(), n);
      const ssize_t sent = send(peer.get(), chunk.data(), n, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (sent > 0) written += static_cast<uint64_t>(sent);
    } else if (op == 1) {
      const uint64_t max_bytes = 1 + in.Take<uint32_t>() % kMaxReceive;
      const bool oldest = (in.Take<uint8_t>() & 1) != 0;
      const size_t free_before = pool.free_pages();
      segments.clear();
      uint64_t consumed = 0;
      Result<FragReceiver::State> state = receiver.Receive(receiver_fd.get(), max_bytes, oldest,
                                                           host_dst.data(), &segments, &consumed);
      if (!state.ok()) {
        FUZZ_CHECK(peer_closed && read == written,
                   "receive failed with %llu of %llu bytes read%s: %s",
                   static_cast<unsigned long long>(read), static_cast<unsigned long long>(written),
                   peer_closed ? "" : " (peer open)", state.status().message().c_str());
        break;  // the connection is over
      }
      if (state.value() == FragReceiver::State::kStalled) {
        const size_t reserve = oldest ? 0 : pool.total_pages() / 2;
        FUZZ_CHECK(free_before <= reserve, "stalled with %zu free pages (reserve %zu)", free_before,
                   reserve);
        continue;
      }
      if (state.value() == FragReceiver::State::kWouldBlock) {
        FUZZ_CHECK(read == written, "would-block with %llu unread bytes",
                   static_cast<unsigned long long>(written - read));
        continue;
      }
      FUZZ_CHECK(consumed > 0 && consumed <= max_bytes, "consumed %llu of at most %llu",
                 static_cast<unsigned long long>(consumed),
                 static_cast<unsigned long long>(max_bytes));
      uint64_t local = 0;
      for (const StreamSegment& s : segments) {
        FUZZ_CHECK(s.length > 0, "an empty segment");
        if (s.kind == StreamSegment::Kind::kHost) {
          size_t bad = 0;
          FUZZ_CHECK(fuzz::MatchesStream(host_dst.data() + local, read + local, s.length, &bad),
                     "host byte %llu of the stream wrong",
                     static_cast<unsigned long long>(read + local + bad));
        } else {
          FUZZ_CHECK(s.source_offset <= kRegionBytes && s.length <= kRegionBytes - s.source_offset,
                     "frag [%llu, +%u) outside the region",
                     static_cast<unsigned long long>(s.source_offset), s.length);
          for (const HeldFrag& other : held) {
            FUZZ_CHECK(other.token != s.token, "token %u issued twice", s.token);
            FUZZ_CHECK(s.source_offset + s.length <= other.region_offset ||
                           other.region_offset + other.length <= s.source_offset,
                       "frag at %llu overlaps a held one at %llu",
                       static_cast<unsigned long long>(s.source_offset),
                       static_cast<unsigned long long>(other.region_offset));
          }
          held.push_back({s.token, s.source_offset, s.length, read + local});
          CheckHeldIntact(held.back());
          ++frags;
        }
        local += s.length;
      }
      FUZZ_CHECK(local == consumed, "segments describe %llu of %llu bytes",
                 static_cast<unsigned long long>(local), static_cast<unsigned long long>(consumed));
      read += consumed;
      FUZZ_CHECK(read <= written, "read %llu, written %llu", static_cast<unsigned long long>(read),
                 static_cast<unsigned long long>(written));
    } else if (op == 2) {
      const size_t count = std::min<size_t>(in.Take<uint8_t>(), held.size());
      const uint8_t pick = in.Take<uint8_t>();
      const size_t first = held.empty() ? 0 : pick % held.size();
      const uint8_t flags = in.Take<uint8_t>();
      std::vector<uint32_t> tokens;
      for (size_t i = 0; i < count; ++i) {
        const HeldFrag& frag = held[(first + i) % held.size()];
        CheckHeldIntact(frag);
        tokens.push_back(frag.token);
      }
      size_t bogus = 0;
      if ((flags & 1) != 0) {
        tokens.push_back(1u << 30);
        ++bogus;
      }
      if ((flags & 2) != 0 && !released_before.empty()) {
        const uint32_t again = released_before[flags % released_before.size()];
        // Repeated only if not reissued since (then it is a valid token again).
        if (std::none_of(held.begin(), held.end(),
                         [&](const HeldFrag& f) { return f.token == again; })) {
          tokens.push_back(again);
          ++bogus;
        }
      }
      // Remove the released ones from `held` (by token: the window may wrap).
      for (size_t i = 0; i < count; ++i) {
        const uint32_t token = tokens[i];
        held.erase(std::find_if(held.begin(), held.end(),
                                [&](const HeldFrag& f) { return f.token == token; }));
        released_before.push_back(token);
      }
      Status status = receiver.Release(receiver_fd.get(), tokens.data(), tokens.size());
      FUZZ_CHECK(status.ok(), "release failed: %s", status.message().c_str());
      returned += tokens.size();
      not_freed += bogus;
    } else if (op == 3 && !peer_closed) {
      peer.reset();
      peer_closed = true;
    }
    FUZZ_CHECK(receiver.outstanding() == held.size(), "%zu outstanding, %zu held",
               receiver.outstanding(), held.size());
  }

  std::vector<uint32_t> tokens;
  for (const HeldFrag& frag : held) {
    CheckHeldIntact(frag);
    tokens.push_back(frag.token);
  }
  Status status = receiver.Release(receiver_fd.get(), tokens.data(), tokens.size());
  FUZZ_CHECK(status.ok(), "release failed: %s", status.message().c_str());
  returned += tokens.size();
  FUZZ_CHECK(receiver.outstanding() == 0, "%zu tokens outstanding", receiver.outstanding());
  FUZZ_CHECK(pool.free_pages() == pool.total_pages(), "%zu of %zu pages back", pool.free_pages(),
             pool.total_pages());
  const ReceiverCounters& c = receiver.counters();
  FUZZ_CHECK(c.frags == frags, "counted %llu frags of %llu",
             static_cast<unsigned long long>(c.frags), static_cast<unsigned long long>(frags));
  FUZZ_CHECK(c.release.tokens_returned == returned && c.release.tokens_not_freed == not_freed,
             "returned %llu (%llu not freed), expected %llu (%llu)",
             static_cast<unsigned long long>(c.release.tokens_returned),
             static_cast<unsigned long long>(c.release.tokens_not_freed),
             static_cast<unsigned long long>(returned), static_cast<unsigned long long>(not_freed));
  return 0;
}
