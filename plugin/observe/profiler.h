// NCCL's profiler, seen from the transport: NCCL (net ABI v10+) passes a callback at init and a
// profiler handle with each isend/irecv (src/transport/net.cc:1319-1322 and :1470-1482 of
// v2.28.9; bootstrap.cc:156/:171 pass NULL). The transport reports two kinds of events through
// this seam, only for messages NCCL gave a handle for:
//   - one per data-socket transfer (the part of a message one data socket carries), started
//     when the socket first moves it and stopped when it is done, failed, or its comm closes;
//   - one per message (an isend, or one buffer of an irecv), from isend/irecv until test()
//     reports it done (for NCCL's device unpack: until irecvConsumed), an error, or close.
// The ABI layer (plugin/abi/profiler_events.cc) turns them into NCCL's descriptors and calls
// the callback; nothing here knows NCCL's layouts.
#pragma once

#include <atomic>
#include <cstdint>

#include "plugin/observe/metrics.h"

namespace devmem::observe {

struct SocketTransfer {
  int fd = -1;
  Direction direction = Direction::kSend;
  uint64_t length = 0;  // bytes of the message this socket carries
};

struct MessageTransfer {
  Direction direction = Direction::kSend;
  DataPath path = DataPath::kPlain;
  uint64_t bytes = 0;  // start: the message (send) or the posted buffer (recv); stop: carried
  uint64_t frags = 0;
  uint64_t linear_bytes = 0;
  uint64_t consumer_ns = 0;
  uint64_t tokens_returned = 0;
  bool failed = false;  // stopped by an error or a close before it completed
};

class ProfilerSink {
 public:
  // The event's handle, or nullptr where the profiler started none (then nothing is stopped).
  virtual void* StartSocket(void* phandle, const SocketTransfer& transfer) = 0;
  virtual void StopSocket(void* event) = 0;
  virtual void* StartMessage(void* phandle, const MessageTransfer& message) = 0;
  virtual void StopMessage(void* event, const MessageTransfer& message) = 0;

 protected:
  ~ProfilerSink() = default;
};

// The process's sink: nullptr until init got a callback from NCCL. Read once per message or
// transfer; never cleared (NCCL's callback lives as long as NCCL).
ProfilerSink* ActiveProfiler();
void InstallProfiler(ProfilerSink* sink);

// What one profiled message collects while it moves. The data sockets' movers add frags and
// linear bytes when a transfer stops (several sockets, several threads: atomic adds, only for
// profiled messages); the rest belongs to the thread that runs test().
struct MessageProfile {
  void* phandle = nullptr;  // NCCL's handle for this message; nullptr: not profiled
  void* event = nullptr;    // the message event while it runs
  std::atomic<uint64_t> frags{0};
  std::atomic<uint64_t> linear_bytes{0};
  uint64_t consumer_ns = 0;
  MessageTransfer start;  // direction, path, bytes as started

  void Begin(void* handle, const MessageTransfer& message) {
    phandle = handle;
    event = nullptr;
    frags.store(0, std::memory_order_relaxed);
    linear_bytes.store(0, std::memory_order_relaxed);
    consumer_ns = 0;
    start = message;
  }
};

}  // namespace devmem::observe
