// Send and receive comms: one control socket plus N data sockets and a request pool. The data
// sockets' bytes move on NCCL's proxy thread (small messages) or on the process's progress
// engine (plugin/transport/progress_engine.h); a comm owns no thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "plugin/consumers/frag_consumer.h"
#include "plugin/core/config.h"
#include "plugin/core/relaxed_counter.h"
#include "plugin/core/status.h"
#include "plugin/core/unique_fd.h"
#include "plugin/cuda/copy_stream.h"
#include "plugin/cuda/memory.h"
#include "plugin/observe/metrics.h"
#include "plugin/observe/profiler.h"
#include "plugin/setup/rx_path.h"
#include "plugin/setup/rx_pipeline.h"
#include "plugin/setup/tx_setup.h"
#include "plugin/transport/data_socket.h"
#include "plugin/transport/progress_engine.h"
#include "plugin/transport/request.h"
#include "plugin/transport/wire.h"

namespace devmem {

// What both ends agreed on in the handshake (the sender's values win).
struct ConnectionParams {
  int data_sockets = 1;
  int worker_threads = 1;
  uint64_t chunk_bytes = kDefaultChunkBytes;
  uint32_t inline_bytes = 0;
  // Sender: while other sends of the comm are in flight, only messages of at most this many
  // bytes go inline (Config::queued_inline_bytes; local). The default sets no separate limit.
  uint32_t queued_inline_bytes = UINT32_MAX;
  // Messages of at most this many bytes are moved by the calling (NCCL proxy) thread itself,
  // larger ones by the workers (NCCL_DEVMEM_PROXY_BYTES; local, not negotiated).
  uint64_t proxy_bytes = 0;
  // How long a staging copy may take before it is given up on and the comm fails instead of
  // hanging (NCCL_DEVMEM_GPU_CONSUMER_TIMEOUT_MS; 0: forever; local). See CopyStream::Wait().
  std::chrono::milliseconds gpu_work_limit{0};
  // Sender of a connection between virtual NICs (more than one member on either side): each
  // message is dealt over only the data sockets whose backlog is within a chunk of the
  // smallest (MessageHeader::kStripedOver), so a slower member carries less (local).
  bool adaptive_stripes = false;
  // Sender: data sockets send with MSG_ZEROCOPY (SO_ZEROCOPY set before connect) and a send
  // completes only once the kernel reported its zero-copy completions (local).
  bool zerocopy_tx = false;
  // Sender: devmem TX runs on this connection's NIC (its ifindex; 0: it does not). CUDA buffers
  // registered on the comm are bound for transmit (plugin/setup/tx_setup.h) and sent by dmabuf
  // offset with MSG_ZEROCOPY; a buffer the binder refuses stages through host memory, unless
  // `require_tx` (NCCL_DEVMEM_REQUIRE_TX) makes the refusal regMr's error (local).
  int devmem_tx_ifindex = 0;
  bool require_tx = false;
  TxBinder* tx_binder = nullptr;  // null: TxBinder::Process() (tests pass their own)
};

// Written by the thread that drives the comm (NCCL's proxy), read by the metrics writer.
struct CommCounters {
  RelaxedCounter messages;
  RelaxedCounter inline_messages;
  RelaxedCounter payload_bytes;
  RelaxedCounter staged_bytes;      // CUDA buffers copied through pinned host memory
  RelaxedCounter steered_messages;  // sent over a chosen socket set (adaptive striping)
  RelaxedCounter devmem_tx_bytes;   // send: payload sent by devmem TX
  RelaxedCounter tx_refusals;       // CUDA send buffers devmem TX refused (staged instead)
};

class Comm : public observe::MetricsSource {
 public:
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;
  virtual ~Comm();

  const std::string& description() const { return description_; }
  const ConnectionParams& params() const { return params_; }
  const CommCounters& counters() const { return counters_; }
  RequestPool& pool() { return pool_; }
  // Bytes moved on the data sockets so far.
  uint64_t WorkerBytes() const;

  // Registers memory for this comm. CUDA buffers are staged through pinned host memory on the
  // plain-TCP path; the reason is logged once per comm.
  Result<MemoryRegion*> Register(void* data, size_t size, int type);
  // The metrics file's view of this comm (plugin/transport/comm_observe.cc).
  void Collect(observe::MetricsSnapshot* into) const final;
  // Stops the profiler events of `request`'s messages still running (test() failed: NCCL
  // will not ask about it again).
  void EndProfiledMessages(Request* request, bool failed);
  // How this comm's CUDA buffers get their bytes, for the one log line at the first regMr.
  virtual const char* CudaBufferPath() const {
    return "CUDA buffers go through pinned host staging (plain-TCP path: devmem RX is not "
           "active on this connection)";
  }

 protected:
  Comm(Direction direction, UniqueFd control, std::vector<UniqueFd> data,
       const ConnectionParams& params, std::string description);
  // Hands the data sockets to the progress engine (from then on a task pushed is moved).
  Status AttachToEngine();
  // Gives the sockets back: no engine worker touches them after this returns.
  void DetachFromEngine();
  // Wakes the engine workers of this comm's sockets (tokens returned, completions drained).
  void WakeWorkers();
  // Queues `task` on data socket `socket`: for the proxy thread itself when `by_proxy` and the
  // socket's worker has nothing queued, else (after the proxy's own tasks of that socket, to
  // keep their order) for the worker, which is woken.
  void QueueTask(uint32_t socket, const SocketTask& task, bool by_proxy);
  // Gives the proxy thread's tasks of `socket` to its worker, in order (the caller wakes it).
  void HandOff(uint32_t socket);
  // Moves the bytes of the proxy thread's own tasks as far as the sockets allow; never blocks.
  void ProgressProxy();
  // Queues the tasks of one message striped across the data sockets; returns how many.
  // `results` (one per data socket) and `seq` are for frag receivers (devmem modes).
  // `allowed`: the data sockets the message is dealt over (bit s: socket s; 0: all).
  // `tx_dmabuf_id` (sender, devmem TX): `base` is the message's byte offset in that bound
  // dmabuf, not an address.
  int QueueStripes(Request* request, char* base, uint64_t size, FragResult* results = nullptr,
                   uint64_t seq = 0, const FragConsumer* arrival_consumer = nullptr,
                   uint64_t allowed = 0,
                   uint32_t tx_dmabuf_id = 0, observe::MessageProfile* profile = nullptr);
  void LogClose() const;
  // NCCL's profiler and the metrics (plugin/transport/comm_observe.cc). The record of sub
  // `index` of `request` with its message event started, or nullptr where NCCL passed no handle
  // or no profiler is installed.
  observe::MessageProfile* StartMessageProfile(Request* request, int index, void* phandle,
                                               const observe::MessageTransfer& message);
  // The receive's consumer finished: its latency goes to the histogram and its profile.
  void NoteConsumerFinished(Request* request);
  // Close: stops every event still running (transfers still queued, messages in flight).
  void StopProfiledEvents();
  // The comm's stream for staging copies, created on first use in GPU `device`'s primary
  // context (device < 0: the calling thread's current context, NCCL's proxy thread's).
  Result<CopyStream*> StagingCopyStream(int device);

  const Direction direction_;
  DevmemShared devmem_shared_;
  UniqueFd control_;
  std::vector<std::unique_ptr<DataSocket>> data_sockets_;
  // socket_workers_[s]: data socket s's engine worker (empty until attached).
  std::vector<EngineWorker*> socket_workers_;
  ConnectionParams params_;
  std::string description_;
  CommHealth health_;
  RequestPool pool_;
  CommCounters counters_;
  uint32_t next_first_socket_ = 0;
  bool logged_staging_ = false;
  bool logged_tx_ = false;          // the first devmem TX registration was logged
  bool logged_tx_refusal_ = false;  // the first refused one was (WARN, once per comm)
  std::optional<CopyStream> staging_stream_;
  bool proxy_has_tasks_ = false;  // some socket's proxy_tasks may be non-empty
  // Receive: the data path of every byte (send: by message, devmem_tx_bytes).
  observe::DataPath data_path_ = observe::DataPath::kPlain;
  // The metrics file or NCCL's profiler reads consumer latencies (one clock read per receive).
  bool observing_ = false;
  observe::LatencyHistogram consumer_latency_;
  // Last: leaves the metrics registry (folding this comm's counts into the process totals)
  // before any other member goes.
  observe::MetricsRegistration metrics_;
};

// The metrics' and the profiler's name of a receive path.
observe::DataPath DataPathOf(RxPath::Mode mode);

class SendComm final : public Comm {
 public:
  static Result<std::unique_ptr<SendComm>> Create(UniqueFd control, std::vector<UniqueFd> data,
                                                  const ConnectionParams& params,
                                                  std::string description);
  ~SendComm() override;
  // nullptr: no request slot or control space free now; NCCL retries.
  // `phandle`: NCCL's profiler handle for the message (nullptr: none).
  Result<Request*> PostSend(void* data, size_t size, int tag, const MemoryRegion* region,
                            void* phandle = nullptr);
  // On done, *size is the message size and the request is released.
  Status Test(Request* request, bool* done, int* size);

 private:
  using Comm::Comm;
  // The control ring's first size: headers of every request in the pool, no inline payload.
  static constexpr size_t kControlRingStart = 4 << 10;
  // Inline payloads up to this size are copied into the ring; larger ones are sent from the
  // caller's buffer (an ExternalPayload).
  static constexpr size_t kInlineCopyBytes = 4 << 10;
  static constexpr size_t kControlIovecs = 16;
  Status FlushControl();
  // Room for `need` more bytes in the control ring, grown if it may; false: wait for a flush.
  bool GrowControl(size_t need);
  bool AppendControl(const uint8_t* bytes, size_t len);
  // Puts `len` bytes at `data` on the control stream without copying them; they must stay
  // until the stream is flushed past them (the request's control_end).
  void AppendExternal(const char* data, size_t len);
  // ConnectionParams::adaptive_stripes: the data sockets the next message of `size` bytes may
  // use; 0: all of them, dealt round-robin as usual (the members deliver at similar rates).
  uint64_t LeastLoadedSockets(uint64_t size) const;

  // The control stream: ring bytes (headers, small inline payloads) interleaved with external
  // payloads at their stream offsets. tx_*: ring bytes only; stream_*: the whole stream.
  struct ExternalPayload {
    uint64_t at;  // stream offset of its first byte
    const char* data;
    uint64_t length;
  };
  std::vector<uint8_t> tx_ring_;
  uint64_t tx_appended_ = 0;
  uint64_t tx_flushed_ = 0;
  std::vector<ExternalPayload> external_;  // at most one per request in flight, in order
  uint64_t stream_appended_ = 0;
  uint64_t stream_flushed_ = 0;
};

struct RecvDevmemCounters {
  uint64_t frags = 0;
  uint64_t region_bytes = 0;
  uint64_t host_bytes = 0;
  uint64_t stalls = 0;
  uint64_t plain_reads = 0;  // devmem reads without a cmsg: flow steering missed (N8)
  uint64_t tokens_returned = 0;
  uint64_t tokens_not_freed = 0;
  uint64_t tokens_outstanding = 0;
};

class RecvComm final : public Comm {
 public:
  static Result<std::unique_ptr<RecvComm>> Create(UniqueFd control, std::vector<UniqueFd> data,
                                                  const ConnectionParams& params,
                                                  std::string description, RxPath path = RxPath());
  RecvDevmemCounters DevmemCounters() const;
  ~RecvComm() override;
  const char* CudaBufferPath() const override {
    if (!rx_.carries_frags()) return Comm::CudaBufferPath();
    return "frags are scattered into CUDA buffers on the GPU; inline and linear (header-side) "
           "bytes reach them through pinned host staging";
  }
  // `ll_hint`: NCCL marked the receive as LL/LL128 (optional completion), which NCCL's device
  // unpack never reads: such receives are consumed by the plugin even in NCCL unpack mode.
  // `phandles`: NCCL's profiler handle of each buffer (nullptr: none).
  Result<Request*> PostRecv(int n, void* const* data, const size_t* sizes, const int* tags,
                            MemoryRegion* const* regions, bool ll_hint = false,
                            void* const* phandles = nullptr);
  // On done, sizes[i] is what sub-request i received and the request is released, except in
  // NCCL unpack mode, where it lives until Consumed().
  Status Test(Request* request, bool* done, int* sizes);
  // NCCL's kernels finished with the receive (irecvConsumed): its tokens go back.
  Status Consumed(Request* request);
  // NCCL unpack mode: the device handle NCCL's kernels read (nullptr otherwise).
  void* unpack_device_handle() const { return rx_.unpack ? rx_.unpack->device_handle() : nullptr; }
  size_t unpack_device_handle_bytes() const {
    return rx_.unpack ? rx_.unpack->device_handle_bytes() : 0;
  }
  const char* consumer_name() const { return rx_.consumer_name; }
  // Which data path this comm runs, for tools that report it (the transport never branches on
  // it): the mode, the summary the comm logged once, and on the plain path why.
  RxPath::Mode rx_mode() const { return rx_.mode; }
  const std::string& rx_summary() const { return rx_.summary; }
  const std::string& rx_plain_reason() const { return rx_.plain_reason; }

 private:
  using Comm::Comm;
  // The control receive buffer: it starts small and doubles while reads fill it, up to
  // kControlRxMost (headers and small inline payloads; larger inline payloads bypass it, see
  // ReceiveInlineDirect, so a bigger buffer would only cost memory per comm).
  static constexpr size_t kControlRxStart = 4 << 10;
  static constexpr size_t kControlRxMost = 16 << 10;
  // Inline payload left to receive from which the rest goes straight to the destination.
  static constexpr size_t kInlineDirectBytes = 4 << 10;
  Status ProgressControl();
  // Receives the current inline payload's remaining bytes into its destination.
  Status ReceiveInlineDirect();
  // Reads what the control socket holds into rx_buffer_, at most `most` bytes (0: as much as
  // the buffer holds, growing it while reads fill it).
  Status ReadControl(size_t most = 0);
  // Matches one header to the oldest posted request that waits for its tag; false if none.
  Result<bool> Dispatch(const wire::MessageHeader& header);
  void ConsumeInline();
  bool Complete(const Request* request) const;
  // Whether sub `index` of a complete request goes through the request's consumer.
  bool NeedsConsumer(const Request* request, int index) const;
  // Starts the consumer on every sub that needs it (again where it was busy) and polls it;
  // true once it finished with all of them.
  Result<bool> RunConsumer(Request* request);
  // Moves the bytes that arrived as host data to where the consumer does not reach them.
  Status DeliverHostBytes(Request* request, bool after_device_consumer);
  // Returns every token the request's subs hold and lets newer messages use the reserve.
  Status ReleaseFrags(Request* request);
  void MarkReleased(uint64_t seq);

  // Region, consumers and (until Create moves them onto the sockets) frag receivers.
  RxPipeline rx_;
  std::vector<const OffsetTable*> tables_;  // scratch: one sub's tables
  uint64_t next_seq_ = 0;
  std::vector<bool> released_;  // ring over message sequence numbers

  std::vector<uint8_t> rx_buffer_;
  size_t rx_begin_ = 0;
  size_t rx_end_ = 0;
  std::vector<Request*> posted_;  // requests with unmatched subs, in posting order
  bool header_waiting_ = false;   // a decoded header waits for a matching irecv
  bool header_alone_ = false;     // the last inline payload outgrew rx_buffer_: read headers alone
  wire::MessageHeader waiting_header_;
  // Inline payload being copied out of the control stream.
  Request* inline_request_ = nullptr;
  char* inline_dst_ = nullptr;  // nullptr: discard (truncated)
  uint64_t inline_left_ = 0;
};

}  // namespace devmem
