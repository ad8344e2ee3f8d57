#include "plugin/core/forked_child_release.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

#include "plugin/core/log.h"

namespace devmem {
namespace {

// Lock-free slots: the child handler runs right after fork(), where a mutex another parent
// thread held at the fork would stay locked forever. A slot holds fd + 1; 0 is free.
constexpr int kSlots = 1024;
std::atomic<int> g_slots[kSlots];
std::atomic<bool> g_full_warned{false};

// Runs in the child only: open, dup3 and close are async-signal-safe.
void ReleaseInChild() {
  int placeholder = -1;
  for (std::atomic<int>& slot : g_slots) {
    const int stored = slot.load(std::memory_order_acquire);
    if (stored == 0) continue;
    const int fd = stored - 1;
    if (placeholder < 0) placeholder = open("/dev/null", O_RDWR | O_CLOEXEC);
    // Without a placeholder the reference must still go: the number is then free in the child,
    // a risk only to a child that both runs out of descriptors here and destroys the owner.
    if (placeholder < 0 || dup3(placeholder, fd, O_CLOEXEC) < 0) close(fd);
  }
  if (placeholder >= 0) close(placeholder);
}

void InstallHandlerOnce() {
  static std::once_flag once;
  // glibc drops handlers of a shared object when it is dlclose()d (they are registered with the
  // object's __dso_handle), so an unloaded plugin leaves no dangling handler behind.
  std::call_once(once, [] { pthread_atfork(nullptr, nullptr, ReleaseInChild); });
}

}  // namespace

void KeepOutOfForkedChildren(int fd) {
  if (fd < 0) return;
  InstallHandlerOnce();
  for (std::atomic<int>& slot : g_slots) {
    int expected = 0;
    if (slot.compare_exchange_strong(expected, fd + 1, std::memory_order_acq_rel)) return;
  }
  if (!g_full_warned.exchange(true)) {
    log::Warn(
        "more than %d devmem bindings at once: a child forked without exec keeps the later ones "
        "(and their RX queues bound) until it exits",
        kSlots);
  }
}

void StopKeepingOutOfForkedChildren(int fd) {
  if (fd < 0) return;
  for (std::atomic<int>& slot : g_slots) {
    int expected = fd + 1;
    if (slot.compare_exchange_strong(expected, 0, std::memory_order_acq_rel)) return;
  }
}

}  // namespace devmem
