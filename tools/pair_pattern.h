// The validation pattern of `devmem-doctor --pair`: every byte of every message is a function of
// (direction, message size, message number, offset), so the receiver checks each byte without
// a copy of what was sent. The idea is ncdevmem's -v mode (the kernel's
// tools/testing/selftests/drivers/net/hw/ncdevmem.c, validate_buffer: a byte counter that wraps
// at the -v value, continued across every frag of the stream and compared byte by byte, each
// difference printed as expected, actual and index). A counter repeats every few hundred bytes;
// this pattern does not, and it differs per message, so a chunk that lands at the wrong offset,
// a stale buffer (a message that was never written) and a chunk of another message all show.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

namespace devmem::doctor {

// The seed of one message: direction 0 is pair -> serve, 1 serve -> pair.
uint64_t PatternSeed(uint32_t direction, uint64_t size, uint64_t message);

void FillPattern(uint8_t* data, size_t bytes, uint64_t seed);

struct PatternMismatch {
  uint64_t offset = 0;  // of the first byte that differs
  uint8_t expected = 0;
  uint8_t got = 0;
  uint64_t bad_bytes = 0;  // every byte that differs
};

// The first byte of `data` that is not the pattern of `seed`, and how many are not; nullopt when
// every byte matches.
std::optional<PatternMismatch> CheckPattern(const uint8_t* data, size_t bytes, uint64_t seed);

}  // namespace devmem::doctor
