// A counter with one writer at a time (the thread that moves a socket's bytes, NCCL's proxy
// thread for a comm, or writers serialized by a lock) that other threads may read at any time:
// the metrics writer (plugin/observe/metrics.h) reads the counters of live comms while they run.
// An increment is a relaxed load and store, no locked instruction; a read is a relaxed load.
#pragma once

#include <atomic>
#include <cstdint>

namespace devmem {

class RelaxedCounter {
 public:
  RelaxedCounter() = default;
  RelaxedCounter(const RelaxedCounter& other) : value_(other.load()) {}
  RelaxedCounter& operator=(const RelaxedCounter& other) {
    store(other.load());
    return *this;
  }

  uint64_t load() const { return value_.load(std::memory_order_relaxed); }
  void store(uint64_t v) { value_.store(v, std::memory_order_relaxed); }
  operator uint64_t() const { return load(); }  // NOLINT(google-explicit-constructor): reads

  RelaxedCounter& operator+=(uint64_t n) {
    store(load() + n);
    return *this;
  }
  RelaxedCounter& operator++() { return *this += 1; }
  uint64_t operator++(int) {
    const uint64_t before = load();
    store(before + 1);
    return before;
  }

 private:
  std::atomic<uint64_t> value_{0};
};

}  // namespace devmem
