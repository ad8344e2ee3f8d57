#include "tools/pair_pattern.h"

#include <cstring>

namespace devmem::doctor {
namespace {

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;

// SplitMix64's output function: neighbouring words get unrelated values, so a shifted chunk
// never lines up with the pattern by chance.
uint64_t Mix(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Word `index` of the pattern, stored little-endian whatever the host's byte order.
void PatternWord(uint64_t seed, uint64_t index, uint8_t out[8]) {
  const uint64_t word = Mix(seed + index * kGolden);
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(word >> (8 * i));
}

}  // namespace

uint64_t PatternSeed(uint32_t direction, uint64_t size, uint64_t message) {
  return Mix(Mix(Mix(direction + 1) ^ size) ^ message);
}

void FillPattern(uint8_t* data, size_t bytes, uint64_t seed) {
  uint8_t word[8];
  size_t offset = 0;
  for (uint64_t index = 0; offset < bytes; ++index, offset += 8) {
    PatternWord(seed, index, word);
    memcpy(data + offset, word, bytes - offset < 8 ? bytes - offset : 8);
  }
}

std::optional<PatternMismatch> CheckPattern(const uint8_t* data, size_t bytes, uint64_t seed) {
  std::optional<PatternMismatch> mismatch;
  uint8_t word[8];
  size_t offset = 0;
  for (uint64_t index = 0; offset < bytes; ++index, offset += 8) {
    PatternWord(seed, index, word);
    const size_t n = bytes - offset < 8 ? bytes - offset : 8;
    if (memcmp(data + offset, word, n) == 0) continue;
    for (size_t i = 0; i < n; ++i) {
      if (data[offset + i] == word[i]) continue;
      if (!mismatch.has_value()) {
        mismatch = PatternMismatch{offset + i, word[i], data[offset + i], 0};
      }
      ++mismatch->bad_bytes;
    }
  }
  return mismatch;
}

}  // namespace devmem::doctor
