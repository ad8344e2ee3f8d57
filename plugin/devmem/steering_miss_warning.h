// When plain data on a devmem connection is worth a WARN (N8). A read without any devmem cmsg
// means the flow reached a queue that is not bound, so its payload crosses host memory. A comm
// has several data sockets and a job about a thousand comms per process, and a rule that misses
// for one flow usually misses for all of them: one WARN per data socket would flood the log with
// thousands of identical lines. So a comm WARNs once, at the first plain read of any of its data
// sockets, and a process WARNs for its first few comms; the next comm's WARN says that later ones
// are only counted. Every plain read is counted regardless (ReceiverCounters::plain_reads: the
// comm's close line and the metrics file).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace devmem {

// One per comm, created with its receive path and shared by the receivers of its data sockets
// (which run on different threads).
class SteeringMissWarning final {
 public:
  // How many comms of a process WARN. The plugin uses the process's own (Process()); a test makes
  // its own so that its count starts from zero.
  class ProcessLimit final {
   public:
    static constexpr uint32_t kWarnedComms = 8;
    explicit ProcessLimit(uint32_t warned_comms = kWarnedComms) : warned_comms_(warned_comms) {}
    ProcessLimit(const ProcessLimit&) = delete;
    ProcessLimit& operator=(const ProcessLimit&) = delete;
    static ProcessLimit& Process();

   private:
    friend class SteeringMissWarning;
    enum class Verdict { kWarn, kWarnLast, kCountOnly };
    Verdict ClaimComm();

    const uint32_t warned_comms_;
    // Comms that claimed a WARN so far; stops one past the limit (the "only counted" WARN).
    std::atomic<uint32_t> claimed_{0};
  };

  explicit SteeringMissWarning(size_t data_sockets, ProcessLimit* limit = &ProcessLimit::Process());
  SteeringMissWarning(const SteeringMissWarning&) = delete;
  SteeringMissWarning& operator=(const SteeringMissWarning&) = delete;

  // A data socket of this comm read plain data; `miss` says how much and names its flow, NIC and
  // queue. WARNs at the comm's first such read, within the process's limit; otherwise nothing
  // (the caller counts the read).
  void OnPlainRead(const char* miss);

 private:
  const size_t data_sockets_;
  ProcessLimit* const limit_;
  std::atomic<bool> seen_{false};
};

}  // namespace devmem
