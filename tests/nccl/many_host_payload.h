// The messages many_host_rank.cc sends its peers through the plugin: a header naming source,
// destination and sequence number, then a pattern no other (source, destination, sequence)
// shares, so a message delivered to the wrong comm, out of order, short or with one wrong byte
// is caught where it lands.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

namespace devmem::testing::many_host {

struct PayloadHeader {
  uint32_t magic;
  uint16_t source, destination;
  uint64_t seq;
  uint32_t size;
  uint32_t last;  // the sender's last message on this comm
};
inline constexpr uint32_t kPayloadMagic = 0x6d686f73;  // "mhos"

inline uint64_t PatternWord(uint64_t seed, uint64_t index) {  // splitmix64
  uint64_t x = seed + (index + 1) * 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
inline uint64_t PatternSeed(int source, int destination, uint64_t seq) {
  return (static_cast<uint64_t>(source) << 56) ^ (static_cast<uint64_t>(destination) << 48) ^ seq;
}

// Message `seq` from `source` to `destination`, `size` bytes (at least the header's).
inline void FillPayload(char* buffer, size_t size, int source, int destination, uint64_t seq,
                        bool last) {
  PayloadHeader header{
      kPayloadMagic, static_cast<uint16_t>(source), static_cast<uint16_t>(destination),
      seq,           static_cast<uint32_t>(size),   last ? 1u : 0u};
  memcpy(buffer, &header, sizeof(header));
  const uint64_t seed = PatternSeed(source, destination, seq);
  for (size_t at = sizeof(header), i = 0; at < size; at += 8, ++i) {
    const uint64_t word = PatternWord(seed, i);
    memcpy(buffer + at, &word, std::min<size_t>(8, size - at));
  }
}

// "" when the `received` bytes at `buffer` are exactly message `seq` from `source` to
// `destination` (*last then says whether it was the sender's last); else what differs.
inline std::string CheckPayload(const char* buffer, size_t received, int source, int destination,
                                uint64_t seq, bool* last) {
  PayloadHeader header{};
  if (received < sizeof(header)) return "only " + std::to_string(received) + " bytes arrived";
  memcpy(&header, buffer, sizeof(header));
  if (header.magic != kPayloadMagic || header.source != source ||
      header.destination != destination || header.seq != seq || header.size != received) {
    char text[256];
    snprintf(text, sizeof(text),
             "%zu bytes whose header says magic %08x, %u->%u, seq %llu, size %u; expected "
             "%d->%d seq %llu",
             received, header.magic, header.source, header.destination,
             static_cast<unsigned long long>(header.seq), header.size, source, destination,
             static_cast<unsigned long long>(seq));
    return text;
  }
  const uint64_t seed = PatternSeed(source, destination, seq);
  for (size_t at = sizeof(header), i = 0; at < received; at += 8, ++i) {
    const uint64_t word = PatternWord(seed, i);
    if (memcmp(buffer + at, &word, std::min<size_t>(8, received - at)) != 0) {
      return "payload differs at byte " + std::to_string(at) + " of " + std::to_string(received);
    }
  }
  *last = header.last != 0;
  return "";
}

}  // namespace devmem::testing::many_host
