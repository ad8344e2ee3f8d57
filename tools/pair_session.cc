#include "tools/pair_session.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "plugin/abi/handles.h"
#include "plugin/abi/plugin_api.h"
#include "tools/pair_pattern.h"

namespace devmem::doctor {
namespace {

// One tag for every message: each direction has its own comm, and NCCL matches in order too.
constexpr int kTag = 0x7061;
// Lines of the plugin's log kept for the report (init and setup log a few dozen).
constexpr size_t kMaxKeptLines = 4096;

// The plugin's log, as NCCL's logger would receive it: kept to read the data-path lines the
// plugin writes for each comm, WARNs printed on stderr (stdout holds the report).
struct PluginLog {
  std::mutex mutex;
  std::vector<std::string> lines;
  std::string last_warn;  // what a failed call said, for the error both sides print
  bool verbose = false;
};

PluginLog& Log() {
  static PluginLog log;
  return log;
}

void KeepLine(nccl::LogLevel level, unsigned long /*flags*/, const char* /*file*/, int /*line*/,
              const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  const std::string text = FormatV(fmt, args);
  va_end(args);
  PluginLog& log = Log();
  std::lock_guard<std::mutex> lock(log.mutex);
  if (level == nccl::kLogWarn || (log.verbose && level == nccl::kLogInfo)) {
    fprintf(stderr, "devmem-doctor: plugin %s: %s\n", level == nccl::kLogWarn ? "WARN" : "INFO",
            text.c_str());
  }
  if (level == nccl::kLogWarn) log.last_warn = text;
  if (log.lines.size() < kMaxKeptLines) log.lines.push_back(text);
}

// What the plugin logged about the comm `description` ("<description>: <path>"), or "".
std::string PathLineOf(const std::string& description) {
  const std::string prefix = description + ": ";
  PluginLog& log = Log();
  std::lock_guard<std::mutex> lock(log.mutex);
  for (const std::string& line : log.lines) {
    if (line.compare(0, prefix.size(), prefix) == 0) return line.substr(prefix.size());
  }
  return "";
}

// The plugin's init line about devmem TX on `nic` ("NIC <nic>: ... devmem TX ..."), or "".
std::string TxInitLineOf(const std::string& nic) {
  const std::string prefix = Format("NIC %s: ", nic.c_str());
  PluginLog& log = Log();
  std::lock_guard<std::mutex> lock(log.mutex);
  for (const std::string& line : log.lines) {
    if (line.compare(0, prefix.size(), prefix) == 0 &&
        line.find("devmem TX") != std::string::npos) {
      return line.substr(prefix.size());
    }
  }
  return "";
}

// A failed plugin call, with the WARN the plugin logged for it (its ABI edge logs one per failure).
Status ApiError(const char* call, abi::Result result) {
  PluginLog& log = Log();
  std::lock_guard<std::mutex> lock(log.mutex);
  return Status::Error(ErrorKind::kSystem, "the plugin's %s failed (ncclResult_t %d): %s", call,
                       static_cast<int>(result),
                       log.last_warn.empty() ? "it logged no reason" : log.last_warn.c_str());
}

}  // namespace

Result<std::unique_ptr<PluginSession>> PluginSession::Open(bool verbose) {
  // No NCCL kernels run here to read NCCL's device unpack metadata: the plugin's own consumer
  // must deliver every receive into the buffer the check reads.
  setenv("NCCL_DEVMEM_UNPACK", "plugin", 1);  // NOLINT(concurrency-mt-unsafe): before threads
  Log().verbose = verbose;
  std::unique_ptr<PluginSession> session(new PluginSession());
  if (abi::Result r = api::InitContext(&session->ctx_, 0, nullptr, KeepLine); r != abi::kSuccess) {
    return ApiError("init", r);
  }
  int ndev = 0;
  if (abi::Result r = api::Devices(&ndev); r != abi::kSuccess) return ApiError("devices", r);
  if (ndev < 1) {
    return Status::Error(ErrorKind::kSystem, "the plugin offers no network device");
  }
  api::DeviceProperties props;
  if (abi::Result r = api::GetProperties(0, &props); r != abi::kSuccess) {
    return ApiError("getProperties", r);
  }
  session->nic_ = props.name != nullptr ? props.name : "?";
  session->max_message_bytes_ = props.max_message_bytes;
  return session;
}

PluginSession::~PluginSession() {
  if (send_mhandle_ != nullptr) api::DeregMr(send_comm_, send_mhandle_);
  if (recv_mhandle_ != nullptr) api::DeregMr(recv_comm_, recv_mhandle_);
  if (send_comm_ != nullptr) api::CloseSend(send_comm_);
  if (recv_comm_ != nullptr) api::CloseRecv(recv_comm_);
  if (listen_comm_ != nullptr) api::CloseListen(listen_comm_);
  if (ctx_ != nullptr) api::FinalizeContext(ctx_);
}

Status PluginSession::Listen(uint8_t* handle) {
  if (abi::Result r = api::Listen(0, handle, &listen_comm_); r != abi::kSuccess) {
    return ApiError("listen", r);
  }
  return Status::Ok();
}

Status PluginSession::Establish(uint8_t* peer_handle, const Watch& watch) {
  abi::DeviceHandleV7* no_device = nullptr;
  while (send_comm_ == nullptr || recv_comm_ == nullptr) {
    if (send_comm_ == nullptr) {
      if (abi::Result r = api::Connect(0, peer_handle, &send_comm_, &no_device);
          r != abi::kSuccess) {
        return ApiError("connect", r);
      }
    }
    if (recv_comm_ == nullptr) {
      if (abi::Result r = api::Accept(listen_comm_, &recv_comm_, &no_device); r != abi::kSuccess) {
        return ApiError("accept", r);
      }
    }
    if (send_comm_ == nullptr || recv_comm_ == nullptr) {
      DEVMEM_RETURN_IF_ERROR(watch().WithContext("connecting the plugin's comms"));
      std::this_thread::yield();
    }
  }
  return Status::Ok();
}

Status PluginSession::Register(size_t slots, uint64_t slot_bytes) {
  const size_t bytes = slots * slot_bytes;
  // Zeroed: a receive that writes nothing cannot pass the check on what an earlier run left.
  buffer_ = {static_cast<uint8_t*>(calloc(bytes, 1)), free};
  if (buffer_ == nullptr) {
    return Status::Error(ErrorKind::kSystem, "cannot allocate %zu bytes of buffers", bytes);
  }
  slots_ = slots;
  slot_bytes_ = slot_bytes;
  if (abi::Result r = api::RegMr(send_comm_, buffer_.get(), bytes, nccl::kPtrHost, &send_mhandle_);
      r != abi::kSuccess) {
    return ApiError("regMr", r);
  }
  if (abi::Result r = api::RegMr(recv_comm_, buffer_.get(), bytes, nccl::kPtrHost, &recv_mhandle_);
      r != abi::kSuccess) {
    return ApiError("regMr", r);
  }
  return Status::Ok();
}

Status PluginSession::Wait(void* request, int* bytes, const Watch& watch, const char* what) {
  for (uint32_t spins = 0;; ++spins) {
    int done = 0;
    if (abi::Result r = api::Test(request, &done, bytes); r != abi::kSuccess) {
      return ApiError(what, r);
    }
    if (done) return Status::Ok();
    if (spins % 64 == 63) DEVMEM_RETURN_IF_ERROR(watch());
    std::this_thread::yield();
  }
}

Status PluginSession::Send(uint32_t direction, uint64_t size, uint32_t messages,
                           const Watch& watch) {
  std::vector<void*> requests(slots_, nullptr);
  uint32_t posted = 0;
  bool filled = false;  // the next message's slot holds its pattern (isend may ask to retry)
  for (uint32_t done = 0; done < messages;) {
    if (posted < messages && posted - done < slots_) {
      uint8_t* slot = buffer_.get() + (posted % slots_) * slot_bytes_;
      if (!filled) FillPattern(slot, size, PatternSeed(direction, size, posted));
      filled = true;
      void* request = nullptr;
      if (abi::Result r = api::Isend(send_comm_, slot, size, kTag, send_mhandle_, &request);
          r != abi::kSuccess) {
        return ApiError("isend", r);
      }
      if (request != nullptr) {
        requests[posted % slots_] = request;
        ++posted;
        filled = false;
        continue;
      }
    }
    if (posted == done) {  // the plugin had no room for the first: NCCL retries too
      DEVMEM_RETURN_IF_ERROR(watch());
      std::this_thread::yield();
      continue;
    }
    // The oldest send, as NCCL tests only its oldest request.
    int bytes = 0;
    DEVMEM_RETURN_IF_ERROR(Wait(requests[done % slots_], &bytes, watch, "test (send)"));
    ++done;
  }
  return Status::Ok();
}

Result<SizeResult> PluginSession::Receive(uint32_t direction, uint64_t size, uint32_t messages,
                                          const Watch& watch) {
  SizeResult result;
  result.size = size;
  result.messages = messages;
  std::vector<void*> requests(slots_, nullptr);
  uint32_t posted = 0;
  const Clock::time_point start = Clock::now();
  for (uint32_t done = 0; done < messages;) {
    if (posted < messages && posted - done < slots_) {
      void* data = buffer_.get() + (posted % slots_) * slot_bytes_;
      size_t capacity = size;
      int tag = kTag;
      void* request = nullptr;
      if (abi::Result r =
              api::Irecv(recv_comm_, 1, &data, &capacity, &tag, &recv_mhandle_, &request);
          r != abi::kSuccess) {
        return ApiError("irecv", r);
      }
      if (request != nullptr) {
        requests[posted % slots_] = request;
        ++posted;
        continue;
      }
    }
    if (posted == done) {
      DEVMEM_RETURN_IF_ERROR(watch());
      std::this_thread::yield();
      continue;
    }
    int bytes = 0;
    DEVMEM_RETURN_IF_ERROR(Wait(requests[done % slots_], &bytes, watch, "test (receive)"));
    if (static_cast<uint64_t>(bytes) != size) {
      return Status::Error(ErrorKind::kRemote,
                           "message %u of %llu bytes arrived with %d bytes: the sides disagree "
                           "on the plan",
                           done, static_cast<unsigned long long>(size), bytes);
    }
    const uint8_t* slot = buffer_.get() + (done % slots_) * slot_bytes_;
    const std::optional<PatternMismatch> bad =
        CheckPattern(slot, size, PatternSeed(direction, size, done));
    if (bad.has_value()) {
      if (result.bad_messages == 0) {
        result.first_bad_message = done;
        result.first_bad_offset = bad->offset;
        result.expected = bad->expected;
        result.got = bad->got;
      }
      ++result.bad_messages;
      result.bad_bytes += bad->bad_bytes;
    }
    ++done;
  }
  result.nanoseconds = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
  return result;
}

PathReport PluginSession::SendPath() const {
  PathReport report;
  const SendComm* comm = api::Find<SendComm>(send_comm_);
  if (comm == nullptr) return report;
  const std::string line = PathLineOf(comm->description());
  const std::string tx_init = TxInitLineOf(nic_);
  if (comm->params().zerocopy_tx && comm->params().devmem_tx_ifindex == 0) {
    // NCCL_DEVMEM_EMULATE_TX=1: host buffers go out with MSG_ZEROCOPY.
    report.mode = PathMode::kEmulated;
    report.detail = line;
  } else {
    // Devmem TX sends CUDA buffers only; this check sends from host memory.
    report.mode = PathMode::kPlain;
    report.detail = "host send buffers go by plain TCP";
    if (!tx_init.empty()) report.detail.append("; plugin: ").append(tx_init);
  }
  return report;
}

PathReport PluginSession::RecvPath() const {
  PathReport report;
  const RecvComm* comm = api::Find<RecvComm>(recv_comm_);
  if (comm == nullptr) return report;
  // The comm says which path it runs (plugin/setup/rx_pipeline.cc BuildRxPipeline, which also
  // logs the summary once).
  switch (comm->rx_mode()) {
    case RxPath::Mode::kDevmem:
      report.mode = PathMode::kDevmem;
      report.detail = comm->rx_summary();
      break;
    case RxPath::Mode::kEmulatedDevmem:
      report.mode = PathMode::kEmulated;
      report.detail = comm->rx_summary();
      break;
    case RxPath::Mode::kPlain:
      report.mode = PathMode::kPlain;
      report.detail = comm->rx_plain_reason();
      break;
  }
  const RecvDevmemCounters counters = comm->DevmemCounters();
  report.frags = counters.frags;
  report.frag_bytes = counters.region_bytes;
  report.linear_bytes = counters.host_bytes;
  report.plain_reads = counters.plain_reads;
  return report;
}

}  // namespace devmem::doctor
