#include "plugin/devmem/steering_miss_warning.h"

#include "plugin/core/log.h"

namespace devmem {

SteeringMissWarning::ProcessLimit& SteeringMissWarning::ProcessLimit::Process() {
  static ProcessLimit process;
  return process;
}

SteeringMissWarning::ProcessLimit::Verdict SteeringMissWarning::ProcessLimit::ClaimComm() {
  // Stops counting one past the limit, so the "only counted" WARN comes exactly once however
  // many comms follow.
  uint32_t claimed = claimed_.load(std::memory_order_relaxed);
  do {
    if (claimed > warned_comms_) return Verdict::kCountOnly;
  } while (!claimed_.compare_exchange_weak(claimed, claimed + 1, std::memory_order_relaxed));
  return claimed < warned_comms_ ? Verdict::kWarn : Verdict::kWarnLast;
}

SteeringMissWarning::SteeringMissWarning(size_t data_sockets, ProcessLimit* limit)
    : data_sockets_(data_sockets), limit_(limit) {}

void SteeringMissWarning::OnPlainRead(const char* miss) {
  // Every plain read of a missed flow comes here: after the comm's first, one relaxed load.
  if (seen_.load(std::memory_order_relaxed) || seen_.exchange(true, std::memory_order_relaxed)) {
    return;
  }
  switch (limit_->ClaimComm()) {
    case ProcessLimit::Verdict::kWarn:
      log::Warn(
          "%s; the payload goes through host memory. Warned once per comm, by whichever of its "
          "data sockets (%zu) reads plain data first; the comm's close line counts the plain "
          "reads of all of them (NCCL_DEVMEM_REQUIRE=1 makes this an error)",
          miss, data_sockets_);
      return;
    case ProcessLimit::Verdict::kWarnLast:
      // The close line is INFO of subsystem NET, which NCCL leaves out unless asked: its default
      // mask is INIT, BOOTSTRAP and ENV (NCCL v2.28.9-1 src/debug.cc:48).
      log::Warn(
          "%s; the payload goes through host memory. Flow steering missed on %u comms of "
          "this process before this one: this and later comms that read plain data get no "
          "WARN, they are counted as plain reads in each recv comm's close line "
          "(NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=NET) and in "
          "nccl_devmem_steering_misses_total (NCCL_DEVMEM_METRICS_FILE)",
          miss, limit_->warned_comms_);
      return;
    case ProcessLimit::Verdict::kCountOnly:
      return;
  }
}

}  // namespace devmem
