// A receive comm's control stream (message headers, inline payload) and data sockets fed any
// bytes by a peer that then disconnects, with receives of any tags and sizes posted against
// them: RecvComm as accept() builds it (plain TCP, or emulated devmem over a host region),
// its worker threads included, over socketpairs. Each input is bounded: the peer's bytes are
// all written before the comm exists, the peer then closes, and the harness stops polling
// once nothing can progress (at most 1 s).
//
// Input: u8 flags (bit 0: emulated devmem, bit 1: two data sockets), u16 inline limit, u8
// receives (1 + n % 8), per receive u8 buffers (1 + n % 8) and per buffer u8 tag and u16 size;
// then u16 length + the control bytes, and per data socket u16 length + its bytes.
//
// Invariants (besides ASan/UBSan on every byte written into the posted buffers): a receive
// that completes without error got, in each buffer, the message the peer sent for it (headers
// matched by tag in stream order, Simulate() below): its size, and its bytes for inline payload
// and, with one data socket, striped payload; test() returns, and closing the comm joins its
// workers with receives in flight (a hang is libFuzzer's -timeout).
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "plugin/devmem/rx_arena.h"
#include "plugin/transport/comm.h"
#include "plugin/transport/wire.h"
#include "tests/fuzz/fuzz_input.h"

namespace devmem {
namespace {

using Clock = std::chrono::steady_clock;

struct Posted {
  int count = 0;
  std::vector<int> tags;
  std::vector<size_t> sizes;
  std::vector<std::unique_ptr<uint8_t[]>> buffers;  // exactly `size` bytes each
  Request* request = nullptr;
  bool ended = false;
};

std::pair<UniqueFd, UniqueFd> SocketPair() {
  int fds[2];
  FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0, "socketpair");
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

void WriteAll(int fd, const uint8_t* data, size_t size) {
  while (size > 0) {
    const ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
    FUZZ_CHECK(n > 0, "writing the peer's bytes");
    data += n;
    size -= static_cast<size_t>(n);
  }
}

// What each posted buffer must receive, from the control bytes alone: RecvComm matches each
// header, in stream order, to the oldest posted receive with an unmatched buffer of that tag,
// and a header no posted receive wants waits for the next irecv. All bytes are in the socket
// before the first irecv, so the outcome does not depend on timing.
struct Expected {
  bool matched = false;
  bool inline_payload = false;
  uint64_t size = 0;
  const uint8_t* inline_bytes = nullptr;  // inline: the payload in the control bytes
  uint64_t data_offset = 0;               // striped, one data socket: where it starts there
};

std::vector<std::vector<Expected>> Simulate(const std::vector<Posted>& posts,
                                            const uint8_t* control, size_t size,
                                            uint32_t inline_limit, int data_sockets) {
  std::vector<std::vector<Expected>> expected;
  for (const Posted& p : posts) expected.emplace_back(p.count);
  size_t posted = 0, pos = 0;
  uint64_t data_offset = 0;
  while (size - pos >= wire::MessageHeader::kSize &&
         size - pos >= wire::MessageHeader::EncodedSize(control + pos)) {
    Result<wire::MessageHeader> header = wire::MessageHeader::Decode(control + pos);
    if (!header.ok()) break;  // the comm fails here
    const bool is_inline = header->kind == wire::MessageHeader::kInline;
    if (is_inline && header->size > inline_limit) break;  // so it does here
    // A socket set naming a socket the comm lacks fails it (recv_control.cc).
    if (header->kind == wire::MessageHeader::kStripedOver &&
        (header->sockets >> data_sockets) != 0) {
      break;
    }
    pos += header->encoded_size();
    Expected* match = nullptr;
    while (match == nullptr) {
      for (size_t r = 0; r < posted && match == nullptr; ++r) {
        for (int i = 0; i < posts[r].count; ++i) {
          if (!expected[r][i].matched && posts[r].tags[i] == header->tag) {
            match = &expected[r][i];
            break;
          }
        }
      }
      if (match == nullptr && posted == posts.size()) return expected;  // waits for ever
      if (match == nullptr) ++posted;
    }
    match->matched = true;
    match->inline_payload = is_inline;
    match->size = header->size;
    if (is_inline) {
      match->inline_bytes = control + pos;
      pos += static_cast<size_t>(std::min<uint64_t>(header->size, size - pos));
    } else {
      match->data_offset = data_offset;
      data_offset += header->size;
    }
  }
  return expected;
}

bool CanEverMatch(const std::vector<Expected>& expected) {
  for (const Expected& e : expected) {
    if (!e.matched) return false;
  }
  return true;
}

}  // namespace
}  // namespace devmem

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace devmem;
  fuzz::ByteReader in(data, size);
  const uint8_t flags = in.Take<uint8_t>();
  ConnectionParams params;
  params.data_sockets = (flags & 2) != 0 ? 2 : 1;
  params.worker_threads = 1;
  params.chunk_bytes = 64 << 10;
  params.inline_bytes = in.Take<uint16_t>() % (kMaxInlineBytes + 1);

  std::vector<Posted> posts(1 + in.Take<uint8_t>() % 8);
  for (Posted& p : posts) {
    p.count = 1 + in.Take<uint8_t>() % kMaxRecvsLimit;
    for (int i = 0; i < p.count; ++i) {
      p.tags.push_back(in.Take<uint8_t>());
      p.sizes.push_back(in.Take<uint16_t>());
      p.buffers.emplace_back(new uint8_t[p.sizes.back()]);
    }
  }
  size_t control_size = 0;
  const uint8_t* control = in.Bytes(in.Take<uint16_t>(), &control_size);

  // The peer writes everything, then disconnects.
  auto control_pair = SocketPair();
  std::vector<UniqueFd> data_fds;
  const uint8_t* first_data = nullptr;  // what data socket 0 carries
  size_t first_data_size = 0;
  {
    WriteAll(control_pair.second.get(), control, control_size);
    control_pair.second.reset();
    for (int s = 0; s < params.data_sockets; ++s) {
      auto pair = SocketPair();
      size_t n = 0;
      const uint8_t* bytes = in.Bytes(in.Take<uint16_t>(), &n);
      if (s == 0) {
        first_data = bytes;
        first_data_size = n;
      }
      WriteAll(pair.second.get(), bytes, n);
      data_fds.push_back(std::move(pair.first));
    }
  }

  RxPath path;
  if ((flags & 1) != 0) {
    path.mode = RxPath::Mode::kEmulatedDevmem;
    path.mix.split_percent = 30;
    path.mix.linear_percent = 20;
    path.scatter_slots = 8 * kMaxRecvsLimit;
    Result<std::shared_ptr<RxArena>> arena = RxArena::CreateForTest(-1, 256 << 10);
    FUZZ_CHECK(arena.ok(), "%s", arena.status().message().c_str());
    Result<std::unique_ptr<RxRegion>> region = arena.value()->Carve(256 << 10, true);
    FUZZ_CHECK(region.ok(), "%s", region.status().message().c_str());
    path.region = std::move(region).value();
  }
  Result<std::unique_ptr<RecvComm>> created = RecvComm::Create(
      std::move(control_pair.first), std::move(data_fds), params, "fuzz recv", std::move(path));
  FUZZ_CHECK(created.ok(), "%s", created.status().message().c_str());
  std::unique_ptr<RecvComm> comm = std::move(created).value();

  const std::vector<std::vector<Expected>> expected =
      Simulate(posts, control, control_size, params.inline_bytes, params.data_sockets);
  bool failed = false;
  for (Posted& p : posts) {
    std::vector<void*> buffers;
    // Bytes nobody wrote read as this, so a receive that skipped a byte shows.
    for (int i = 0; i < p.count; ++i) memset(p.buffers[i].get(), 0xa5, p.sizes[i]);
    for (auto& b : p.buffers) buffers.push_back(b.get());
    Result<Request*> posted =
        comm->PostRecv(p.count, buffers.data(), p.sizes.data(), p.tags.data(), nullptr);
    if (!posted.ok()) {
      failed = true;  // the comm read a refused header while posting
      break;
    }
    FUZZ_CHECK(posted.value() != nullptr, "no request free for %zu receives", posts.size());
    p.request = posted.value();
  }

  const auto deadline = Clock::now() + std::chrono::seconds(1);
  auto last_event = Clock::now();
  while (!failed && Clock::now() < deadline &&
         Clock::now() - last_event < std::chrono::milliseconds(20)) {
    bool waiting = false;
    for (Posted& p : posts) {
      if (p.request == nullptr || p.ended) continue;
      bool done = false;
      int sizes[kMaxRecvsLimit] = {};
      Status tested = comm->Test(p.request, &done, sizes);
      if (!tested.ok() && !done) {
        failed = true;  // the comm failed (peer closed, refused header): every test() says so
        break;
      }
      const size_t r = static_cast<size_t>(&p - posts.data());
      if (done) {
        p.ended = true;
        last_event = Clock::now();
        for (int i = 0; i < p.count && tested.ok(); ++i) {
          const Expected& e = expected[r][i];
          FUZZ_CHECK(e.matched, "receive %zu buffer %d completed without a matching header", r, i);
          FUZZ_CHECK(
              sizes[i] >= 0 && static_cast<uint64_t>(sizes[i]) == e.size && e.size <= p.sizes[i],
              "receive %zu buffer %d: %d bytes reported, the peer sent %llu, it holds %zu", r, i,
              sizes[i], static_cast<unsigned long long>(e.size), p.sizes[i]);
          const uint8_t* want = nullptr;
          if (e.inline_payload) {
            want = e.inline_bytes;
          } else if (params.data_sockets == 1) {
            FUZZ_CHECK(e.data_offset + e.size <= first_data_size,
                       "a striped message completed beyond the bytes the peer sent");
            want = first_data + e.data_offset;
          }
          FUZZ_CHECK(want == nullptr || e.size == 0 ||
                         memcmp(p.buffers[i].get(), want, static_cast<size_t>(e.size)) == 0,
                     "receive %zu buffer %d: payload differs from what the peer sent", r, i);
        }
        continue;
      }
      waiting = waiting || CanEverMatch(expected[r]);
    }
    if (!waiting) break;  // every receive ended, or waits for a tag the peer never sent
    std::this_thread::yield();
  }
  comm.reset();  // joins the workers; must not hang with receives in flight
  return 0;
}
