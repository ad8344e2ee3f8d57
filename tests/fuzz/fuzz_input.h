// What the libFuzzer harnesses share: a reader that takes little-endian fields from the front
// of the input (so seed files are easy to write by hand, see make_corpus.py) and a check that
// turns a broken invariant into a crash libFuzzer records with its input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace devmem::fuzz {

class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  // Reads sizeof(T) bytes, little-endian; missing bytes read as zero.
  template <typename T>
  T Take() {
    uint64_t value = 0;
    for (size_t i = 0; i < sizeof(T); ++i) {
      const uint64_t byte = pos_ < size_ ? data_[pos_] : 0;
      value |= byte << (8 * i);
      if (pos_ < size_) ++pos_;
    }
    return static_cast<T>(value);
  }
  // Up to `n` bytes (fewer at the end of the input).
  const uint8_t* Bytes(size_t n, size_t* got) {
    *got = n < size_ - pos_ ? n : size_ - pos_;
    const uint8_t* p = data_ + pos_;
    pos_ += *got;
    return p;
  }
  const uint8_t* rest() const { return data_ + pos_; }
  size_t left() const { return size_ - pos_; }
  bool empty() const { return pos_ == size_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// A stream of known bytes (a peer's payload, a NIC's packets): byte p is StreamByte(p), a
// pseudo-random pattern that repeats every kStreamPeriod bytes (an odd length, so that it never
// lines up with pages or chunks). Checks compare whole ranges with memcmp.
inline constexpr size_t kStreamPeriod = (size_t{8} << 20) + 13;

inline const uint8_t* StreamPattern() {
  static const uint8_t* pattern = [] {
    auto* bytes = new uint8_t[kStreamPeriod];
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < kStreamPeriod; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      bytes[i] = static_cast<uint8_t>(x >> 24);
    }
    return bytes;
  }();
  return pattern;
}
inline uint8_t StreamByte(uint64_t position) { return StreamPattern()[position % kStreamPeriod]; }

// Copies stream bytes [position, position + n) to `out`.
inline void CopyStream(uint64_t position, void* out, size_t n) {
  auto* dst = static_cast<uint8_t*>(out);
  while (n > 0) {
    const size_t at = position % kStreamPeriod;
    const size_t take = n < kStreamPeriod - at ? n : kStreamPeriod - at;
    memcpy(dst, StreamPattern() + at, take);
    dst += take;
    position += take;
    n -= take;
  }
}

// Whether `bytes` equal stream bytes [position, position + n); *first_bad is the first mismatch.
inline bool MatchesStream(const void* bytes, uint64_t position, size_t n, size_t* first_bad) {
  const auto* p = static_cast<const uint8_t*>(bytes);
  size_t done = 0;
  while (done < n) {
    const size_t at = (position + done) % kStreamPeriod;
    const size_t take = n - done < kStreamPeriod - at ? n - done : kStreamPeriod - at;
    if (memcmp(p + done, StreamPattern() + at, take) != 0) {
      size_t i = 0;
      while (p[done + i] == StreamPattern()[at + i]) ++i;
      *first_bad = done + i;
      return false;
    }
    done += take;
  }
  return true;
}

}  // namespace devmem::fuzz

// A broken invariant is a finding: print it and abort, so libFuzzer saves the input.
#define FUZZ_CHECK(cond, ...)                                                      \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                                \
      fputc('\n', stderr);                                                         \
      abort();                                                                     \
    }                                                                              \
  } while (0)
