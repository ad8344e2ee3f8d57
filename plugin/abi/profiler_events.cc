#include "plugin/abi/profiler_events.h"

#include <atomic>

#include "plugin/abi/profiler_abi.h"
#include "plugin/observe/profiler.h"

namespace devmem::abi {
namespace {

uint8_t PathOf(observe::DataPath path) {
  switch (path) {
    case observe::DataPath::kPlain:
      return kDevmemPathPlain;
    case observe::DataPath::kDevmem:
      return kDevmemPathDevmem;
    case observe::DataPath::kEmulated:
      return kDevmemPathEmulated;
    case observe::DataPath::kDevmemTx:
      return kDevmemPathDevmemTx;
  }
  return kDevmemPathPlain;
}

DevmemProfilerDescrV1 Describe(const observe::MessageTransfer& message) {
  DevmemProfilerDescrV1 d{};
  d.type = message.direction == observe::Direction::kSend ? kDevmemEventSend : kDevmemEventRecv;
  d.path = PathOf(message.path);
  d.failed = message.failed ? 1 : 0;
  d.bytes = message.bytes;
  d.frags = message.frags;
  d.linear_bytes = message.linear_bytes;
  d.consumer_ns = message.consumer_ns;
  d.tokens_returned = message.tokens_returned;
  return d;
}

class NcclProfilerSink final : public observe::ProfilerSink {
 public:
  void set_callback(ProfilerCallback callback) {
    callback_.store(callback, std::memory_order_release);
  }

  void* StartSocket(void* phandle, const observe::SocketTransfer& transfer) override {
    ProfilerNetSockDescrV1 descr{};
    descr.type = kProfileSocket;
    descr.sock.fd = transfer.fd;
    descr.sock.op = transfer.direction == observe::Direction::kSend ? kSocketSend : kSocketRecv;
    descr.sock.length = transfer.length;
    return Start(phandle, kSocketPluginId, &descr);
  }
  void StopSocket(void* event) override { Call(event, kProfilerNetEventStop, nullptr); }
  void* StartMessage(void* phandle, const observe::MessageTransfer& message) override {
    DevmemProfilerDescrV1 descr = Describe(message);
    return Start(phandle, kDevmemPluginId, &descr);
  }
  void StopMessage(void* event, const observe::MessageTransfer& message) override {
    DevmemProfilerDescrV1 descr = Describe(message);
    Call(event, kProfilerNetEventUpdateAndStop, &descr);
  }

 private:
  void* Start(void* phandle, int64_t plugin_id, void* descr) {
    void* event = nullptr;  // NCCL leaves it untouched when the profiler takes no such events
    const ProfilerCallback callback = callback_.load(std::memory_order_acquire);
    if (callback(&event, kProfilerNetEventStart, phandle, plugin_id, descr) != kSuccess) {
      return nullptr;
    }
    return event;
  }
  void Call(void* event, ProfilerNetEvent type, void* descr) {
    if (event == nullptr) return;
    const ProfilerCallback callback = callback_.load(std::memory_order_acquire);
    (void)callback(&event, type, nullptr, 0, descr);  // NCCL's answer is always ncclSuccess
  }

  std::atomic<ProfilerCallback> callback_{nullptr};
};

}  // namespace

void InstallNcclProfiler(ProfilerCallback callback) {
  if (callback == nullptr) return;
  // Lives as long as the process: the transport may stop events while anything runs.
  static auto* sink = new NcclProfilerSink();  // NOLINT(cppcoreguidelines-owning-memory)
  sink->set_callback(callback);
  observe::InstallProfiler(sink);
}

}  // namespace devmem::abi
