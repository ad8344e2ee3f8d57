// How one message is cut into chunks and dealt across the data sockets. Sender and receiver
// compute the same plan from (size, chunk limit, socket count, first socket), so no per-chunk
// control record is needed.
#pragma once

#include <algorithm>
#include <cstdint>

namespace devmem {

struct StripePlan {
  uint64_t chunk_bytes = 0;  // every chunk but the last
  uint64_t chunk_count = 0;
  uint32_t socket_count = 1;
  uint32_t first_socket = 0;  // socket of chunk 0

  // Index of the first chunk that `socket` carries; >= chunk_count when it carries none.
  uint64_t FirstChunkOn(uint32_t socket) const {
    return (socket + socket_count - first_socket) % socket_count;
  }
  // The socket the next message starts on, so that small messages rotate over all sockets.
  uint32_t NextFirstSocket() const {
    return static_cast<uint32_t>((first_socket + chunk_count) % socket_count);
  }
};

// Chunks of `chunk_limit` bytes (the last one shorter): a message up to the limit travels on one
// socket, larger ones are dealt over the sockets in limit-sized chunks, and consecutive messages
// start on consecutive sockets. Spreading every message over all sockets (protocol version 1:
// chunks of max(64 KiB, size / sockets)) cost a syscall per socket per message with no gain
// when one thread moves them all (perf/RESULTS.md, 2026-11-26). Rounded to 4 KiB so that
// devmem frags (page-sized) never straddle two chunks needlessly.
inline StripePlan PlanStripes(uint64_t size, uint64_t chunk_limit, uint32_t sockets,
                              uint32_t first_socket) {
  constexpr uint64_t kAlign = 4 << 10;
  StripePlan plan;
  plan.socket_count = sockets;
  plan.first_socket = first_socket % sockets;
  if (size == 0) return plan;
  const uint64_t whole = (size + kAlign - 1) / kAlign * kAlign;
  plan.chunk_bytes = std::min(whole, chunk_limit);
  plan.chunk_count = (size + plan.chunk_bytes - 1) / plan.chunk_bytes;
  return plan;
}

// The data sockets a message of `chunk_count` chunks is dealt over, in dealing order: chunk c
// goes to order[c % n]. `allowed` (bit s: socket s; 0 or all bits: every socket) picks them,
// starting at the first allowed socket at or after `first_socket`, cyclically; *next_first is
// where the next message starts (after the last socket used). With every socket allowed this
// is PlanStripes' own rotation. Returns n (>= 1 when any socket is allowed and sockets <= 64).
inline uint32_t OrderSockets(uint64_t allowed, uint32_t sockets, uint32_t first_socket,
                             uint64_t chunk_count, uint32_t* order, uint32_t* next_first) {
  uint32_t n = 0;
  for (uint32_t k = 0; k < sockets; ++k) {
    const uint32_t s = (first_socket + k) % sockets;
    if (allowed == 0 || ((allowed >> s) & 1) != 0) order[n++] = s;
  }
  if (n == 0) return 0;
  const uint32_t last = order[chunk_count == 0 ? 0 : (chunk_count - 1) % n];
  *next_first = chunk_count == 0 ? first_socket : (last + 1) % sockets;
  return n;
}

}  // namespace devmem
