// One host of many_host_test.cc: started by the test inside its own network namespace, it loads
// the plugin with dlopen and drives the exported ncclNetPlugin_v11 table the way NCCL's proxy
// does (non-blocking listen/connect/accept, regMr, isend/irecv, test in posting order), with a
// send and a receive comm to every other rank, each carrying byte-checked messages
// (many_host_payload.h). It reports in the lines of many_host_protocol.h; the test asserts.
//
//   many_host_rank --rank R --ranks N --plugin PATH --scenario alltoall|kill
//                  [--victim V --user-timeout-ms MS]
//
// alltoall: every comm carries kAllToAllMessages messages of kAllToAllSizes in turn.
// kill: every comm streams messages of kKillSizes in turn. Comms with the victim stream until
// they fail; comms between survivors, once the parent said `killed`, until every comm of this
// rank with the victim has failed (or the user timeout plus a margin passed), then carry
// kTailMessages more, the last one flagged, and finish.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "plugin/abi/net_abi.h"
#include "tests/common/plugin_loader.h"
#include "tests/nccl/many_host_payload.h"
#include "tests/nccl/many_host_protocol.h"

namespace devmem::testing::many_host {
namespace {

constexpr int kTailMessages = 8;
constexpr int kSendWindow = 2;  // sends in flight per comm; receives are posted one at a time
constexpr int64_t kSetupTimeoutMs = 30000;
constexpr int64_t kAllToAllTimeoutMs = 60000;
constexpr int64_t kKillTimeoutMs = 90000;      // from the start of traffic to its end
constexpr int64_t kAfterKillMarginMs = 15000;  // on top of the user timeout
constexpr int64_t kSettleTimeoutMs = 3000;     // for fds and threads to return to the baseline

// One write(2) per line: the plugin's own threads log through here too.
void Report(const std::string& line) {
  static std::mutex mutex;
  std::string text = line;
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  text += '\n';
  std::lock_guard<std::mutex> lock(mutex);
  for (size_t written = 0; written < text.size();) {
    const ssize_t n = write(STDOUT_FILENO, text.data() + written, text.size() - written);
    if (n <= 0) return;  // the test is gone
    written += static_cast<size_t>(n);
  }
}

// The last WARN the plugin logged on this thread: the ABI edge logs a failure once, on the
// calling thread, right before it returns the error.
thread_local std::string t_last_warn;

__attribute__((format(printf, 5, 6))) void Logger(abi::LogLevel level, unsigned long /*flags*/,
                                                  const char* file, int /*line*/, const char* fmt,
                                                  ...) {
  if (level != abi::kLogWarn) return;
  char text[2048];
  va_list args;
  va_start(args, fmt);
  vsnprintf(text, sizeof(text), fmt, args);
  va_end(args);
  t_last_warn = text;
  Report(std::string("warn ") + file + ": " + text);
}

int CountEntries(const char* path) {
  DIR* dir = opendir(path);
  if (dir == nullptr) return -1;
  int count = 0;
  while (const dirent* entry = readdir(dir)) {
    if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0) ++count;
  }
  closedir(dir);
  return count;
}
int OpenFds() { return CountEntries("/proc/self/fd") - 1; }  // less opendir's own
int Threads() { return CountEntries("/proc/self/task"); }

struct Options {
  int rank = -1;
  int ranks = 0;
  std::string plugin;
  std::string scenario;
  int victim = -1;
  int64_t user_timeout_ms = 0;
};

struct Slot {
  std::vector<char> buffer;
  void* mhandle = nullptr;
  void* request = nullptr;
  uint64_t seq = 0;
};

// One comm and its traffic; its requests are tested in posting order, as NCCL's proxy does.
struct Stream {
  enum class State { kRunning, kDone, kFailed, kHung };
  bool send = false;
  int peer = -1;
  void* comm = nullptr;
  std::vector<Slot> slots;  // the send window, or the one posted receive
  size_t oldest = 0;        // slot of the oldest request in flight
  int outstanding = 0;
  uint64_t next_seq = 0;
  int64_t final_seq = -1;  // the flagged last message, once known
  bool last_posted = false;
  uint64_t completed = 0, bytes = 0, window_messages = 0;
  State state = State::kRunning;
  const char* pending_call = "connect";  // what a hang waits on
  int64_t last_progress_ms = 0;
  std::string Name() const { return std::string(send ? "send " : "recv ") + std::to_string(peer); }
};

class Rank {
 public:
  explicit Rank(Options options) : o_(std::move(options)) {}
  int Run();

 private:
  bool Fail(const std::string& what) {
    Report("error rank " + std::to_string(o_.rank) + ": " + what);
    return false;
  }
  bool Init();
  bool WarmUp();
  bool ListenAndSwapHandles();
  bool Establish();
  bool AwaitGo();
  bool Traffic();
  void CloseAll();
  bool ReadParentLine(std::string* line, int64_t timeout_ms);
  void OnParentLine(const std::string& line);
  size_t MessageSize(uint64_t seq) const;
  bool IsLast(Stream& s);
  void Advance(Stream& s);
  void AdvanceSend(Stream& s);
  void AdvanceRecv(Stream& s);
  void Completed(Stream& s, int size);
  void Failed(Stream& s, const char* call, abi::Result result);

  Options o_;
  LoadedPlugin plugin_;
  const abi::NetV11* net_ = nullptr;
  void* ctx_ = nullptr;
  bool warming_up_ = false;  // the comm pair to itself: nothing is reported
  int baseline_fds_ = 0, baseline_threads_ = 0;
  std::vector<void*> listen_comms_;  // by peer (the warm-up: this rank)
  // By peer: the handle to connect to, kept in place (connect() parks its state in it).
  std::vector<std::vector<uint8_t>> handles_;
  int handles_missing_ = 0;
  bool go_ = false;
  std::vector<Stream> streams_;
  std::string stdin_buffer_;
  int64_t killed_at_ = -1, victim_settled_at_ = -1;
  bool stop_ = false;  // comms between survivors may finish
};

bool Rank::ReadParentLine(std::string* line, int64_t timeout_ms) {
  for (;;) {
    const size_t eol = stdin_buffer_.find('\n');
    if (eol != std::string::npos) {
      *line = stdin_buffer_.substr(0, eol);
      stdin_buffer_.erase(0, eol + 1);
      return true;
    }
    pollfd p{STDIN_FILENO, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(std::max<int64_t>(timeout_ms, 0))) <= 0) return false;
    char chunk[4096];
    const ssize_t n = read(STDIN_FILENO, chunk, sizeof(chunk));
    if (n <= 0) return false;
    stdin_buffer_.append(chunk, static_cast<size_t>(n));
    timeout_ms = 0;
  }
}

void Rank::OnParentLine(const std::string& line) {
  const std::vector<std::string> words = SplitWords(line);
  if (words.size() == 3 && words[0] == "peer") {
    const int peer = atoi(words[1].c_str());
    if (peer >= 0 && peer < o_.ranks && peer != o_.rank &&
        Unhex(words[2], handles_[static_cast<size_t>(peer)].data(), abi::kNetHandleMaxSize)) {
      --handles_missing_;
    }
  } else if (words.size() == 1 && words[0] == "go") {
    go_ = true;
  } else if (words.size() == 1 && words[0] == "killed") {
    killed_at_ = NowMs();
  }
}

bool Rank::Init() {
  if (!plugin_.Open(o_.plugin)) return Fail("dlopen: " + plugin_.error());
  net_ = plugin_.v11();
  if (net_ == nullptr) return Fail("no ncclNetPlugin_v11 in " + o_.plugin);
  if (net_->init(&ctx_, 0x1000 + static_cast<uint64_t>(o_.rank), nullptr, Logger, nullptr) !=
      abi::kSuccess) {
    return Fail("init: " + t_last_warn);
  }
  int ndev = 0;
  if (net_->devices(&ndev) != abi::kSuccess || ndev != 1) {
    return Fail("devices: " + std::to_string(ndev) + " NICs, expected this namespace's one");
  }
  listen_comms_.assign(static_cast<size_t>(o_.ranks), nullptr);
  handles_.assign(static_cast<size_t>(o_.ranks), std::vector<uint8_t>(abi::kNetHandleMaxSize));
  return true;
}

// A send and a receive stream with `peer`, their buffers allocated and touched now: a rank
// still faulting in pages once its peers stream would be a late receiver (see AwaitGo).
void AddStreams(std::vector<Stream>* streams, int peer, size_t buffer_bytes) {
  for (bool send : {true, false}) {
    Stream stream;
    stream.send = send;
    stream.peer = peer;
    stream.slots.resize(send ? kSendWindow : 1);
    for (Slot& slot : stream.slots) slot.buffer.resize(buffer_bytes);
    streams->push_back(std::move(stream));
  }
}

// A comm pair to itself carrying a message of each size, then closed: whatever the plugin keeps for
// the life of the process (threads, fds) exists from here on, so the baseline taken after it is the
// floor every later close must come back to.
bool Rank::WarmUp() {
  const auto self = static_cast<size_t>(o_.rank);
  if (net_->listen(ctx_, 0, handles_[self].data(), &listen_comms_[self]) != abi::kSuccess) {
    return Fail("warm-up listen: " + t_last_warn);
  }
  AddStreams(&streams_, o_.rank, MessageSize(kSizes - 1));
  warming_up_ = true;
  if (!Establish() || !Traffic()) return false;
  for (const Stream& s : streams_) {
    if (s.state != Stream::State::kDone) return Fail("warm-up " + s.Name() + " did not finish");
  }
  CloseAll();
  warming_up_ = false;
  baseline_fds_ = OpenFds();
  baseline_threads_ = Threads();
  Report("baseline " + std::to_string(baseline_fds_) + " " + std::to_string(baseline_threads_));
  return true;
}

// One listen comm per peer (NCCL never shares a listener between two connections); the handles
// go out through the parent, the peers' come back.
bool Rank::ListenAndSwapHandles() {
  for (int p = 0; p < o_.ranks; ++p) {
    if (p == o_.rank) continue;
    uint8_t handle[abi::kNetHandleMaxSize] = {};
    if (net_->listen(ctx_, 0, handle, &listen_comms_[static_cast<size_t>(p)]) != abi::kSuccess) {
      return Fail("listen for peer " + std::to_string(p) + ": " + t_last_warn);
    }
    Report("handle " + std::to_string(p) + " " + Hex(handle, sizeof(handle)));
    AddStreams(&streams_, p, MessageSize(kSizes - 1));
  }
  handles_missing_ = o_.ranks - 1;
  const int64_t deadline = NowMs() + kSetupTimeoutMs;
  std::string line;
  while (handles_missing_ > 0) {
    if (!ReadParentLine(&line, deadline - NowMs())) {
      return Fail("the parent sent " + std::to_string(o_.ranks - 1 - handles_missing_) + " of " +
                  std::to_string(o_.ranks - 1) + " peer handles within 30 s");
    }
    OnParentLine(line);
  }
  return true;
}

// Every connect and accept driven until all comms are up, then every buffer registered.
bool Rank::Establish() {
  const int64_t start = NowMs();
  abi::DeviceHandleV7* no_device = nullptr;
  for (bool all_up = false; !all_up;) {
    all_up = true;
    for (Stream& s : streams_) {
      if (s.comm != nullptr) continue;
      const auto p = static_cast<size_t>(s.peer);
      t_last_warn.clear();
      const abi::Result r = s.send ? net_->connect(ctx_, 0, handles_[p].data(), &s.comm, &no_device)
                                   : net_->accept(listen_comms_[p], &s.comm, &no_device);
      if (r != abi::kSuccess) {
        return Fail(std::string(s.send ? "connect to" : "accept from") + " peer " +
                    std::to_string(s.peer) + ": " + t_last_warn);
      }
      all_up = all_up && s.comm != nullptr;
    }
    if (!all_up && NowMs() > start + kSetupTimeoutMs) {
      std::string missing;
      for (const Stream& s : streams_) missing += s.comm == nullptr ? " " + s.Name() : "";
      return Fail("comms not up after 30 s:" + missing);
    }
    if (!all_up) sched_yield();  // eight ranks share a few cores: let the peers accept
  }
  const int64_t up_ms = NowMs() - start;
  for (Stream& s : streams_) {
    for (Slot& slot : s.slots) {
      if (net_->regMr(s.comm, slot.buffer.data(), slot.buffer.size(), abi::kPtrHost,
                      &slot.mhandle) != abi::kSuccess) {
        return Fail("regMr on comm " + s.Name() + ": " + t_last_warn);
      }
    }
  }
  if (!warming_up_) Report("connected " + std::to_string(up_ms));
  return true;
}

size_t Rank::MessageSize(uint64_t seq) const {
  const size_t* sizes = o_.scenario == "alltoall" ? kAllToAllSizes : kKillSizes;
  return sizes[seq % kSizes];
}

bool Rank::IsLast(Stream& s) {
  if (warming_up_)
    return s.next_seq + 1 == kSizes;  // one message of each size: every path runs once
  if (o_.scenario == "alltoall") return s.next_seq + 1 == kAllToAllMessages;
  if (o_.rank == o_.victim || s.peer == o_.victim || !stop_) return false;
  if (s.final_seq < 0) s.final_seq = static_cast<int64_t>(s.next_seq) + kTailMessages;
  return static_cast<int64_t>(s.next_seq) == s.final_seq;
}

void Rank::Failed(Stream& s, const char* call, abi::Result result) {
  s.state = Stream::State::kFailed;
  if (warming_up_) {
    Fail("warm-up " + s.Name() + ": " + call + " returned " +
         std::to_string(static_cast<int>(result)) + ": " + t_last_warn);
    return;
  }
  Report("comm " + s.Name() + " failed " + call + " " + std::to_string(static_cast<int>(result)) +
         " " + std::to_string(NowMs()) + " " + std::to_string(s.completed) + " " + t_last_warn);
}

void Rank::Completed(Stream& s, int size) {
  ++s.completed;
  s.bytes += static_cast<uint64_t>(size);
  s.last_progress_ms = NowMs();
  if (killed_at_ >= 0 && victim_settled_at_ < 0) ++s.window_messages;
}

void Rank::AdvanceSend(Stream& s) {
  while (s.outstanding < kSendWindow && !s.last_posted) {
    Slot& slot = s.slots[(s.oldest + static_cast<size_t>(s.outstanding)) % s.slots.size()];
    const size_t size = MessageSize(s.next_seq);
    const bool last = IsLast(s);
    FillPayload(slot.buffer.data(), size, o_.rank, s.peer, s.next_seq, last);
    void* request = nullptr;
    t_last_warn.clear();
    const abi::Result r =
        net_->isend(s.comm, slot.buffer.data(), size, kMessageTag, slot.mhandle, nullptr, &request);
    if (r != abi::kSuccess) return Failed(s, "isend", r);
    s.pending_call = "isend";
    if (request == nullptr) break;  // no request free yet: NCCL calls again later
    slot.request = request;
    slot.seq = s.next_seq++;
    ++s.outstanding;
    s.last_posted = last;
  }
  while (s.outstanding > 0) {
    Slot& slot = s.slots[s.oldest];
    int done = 0, size = 0;
    t_last_warn.clear();
    const abi::Result r = net_->test(slot.request, &done, &size);
    if (r != abi::kSuccess) return Failed(s, "test", r);
    s.pending_call = "test";
    if (done == 0) break;
    slot.request = nullptr;
    s.oldest = (s.oldest + 1) % s.slots.size();
    --s.outstanding;
    Completed(s, size);
  }
  if (s.last_posted && s.outstanding == 0) s.state = Stream::State::kDone;
}

void Rank::AdvanceRecv(Stream& s) {
  Slot& slot = s.slots[0];
  if (s.outstanding == 0) {
    void* data = slot.buffer.data();
    size_t size = slot.buffer.size();
    int tag = kMessageTag;
    void* request = nullptr;
    t_last_warn.clear();
    const abi::Result r =
        net_->irecv(s.comm, 1, &data, &size, &tag, &slot.mhandle, nullptr, &request);
    if (r != abi::kSuccess) return Failed(s, "irecv", r);
    s.pending_call = "irecv";
    if (request == nullptr) return;
    slot.request = request;
    slot.seq = s.next_seq++;
    s.outstanding = 1;
  }
  int done = 0, size = 0;
  t_last_warn.clear();
  const abi::Result r = net_->test(slot.request, &done, &size);
  if (r != abi::kSuccess) return Failed(s, "test", r);
  s.pending_call = "test";
  if (done == 0) return;
  slot.request = nullptr;
  s.outstanding = 0;
  bool last = false;
  const std::string wrong =
      CheckPayload(slot.buffer.data(), static_cast<size_t>(size), s.peer, o_.rank, slot.seq, &last);
  if (!wrong.empty()) {
    s.state = Stream::State::kFailed;
    if (warming_up_) {
      Fail("warm-up message: " + wrong);
      return;
    }
    Report("corrupt recv " + std::to_string(s.peer) + " " + std::to_string(slot.seq) + " " + wrong);
    Report("comm " + s.Name() + " failed check 0 " + std::to_string(NowMs()) + " " +
           std::to_string(s.completed) + " message " + std::to_string(slot.seq) + " arrived wrong");
    return;
  }
  Completed(s, size);
  if (last) s.state = Stream::State::kDone;
}

void Rank::Advance(Stream& s) {
  if (s.state != Stream::State::kRunning) return;
  if (s.send) {
    AdvanceSend(s);
  } else {
    AdvanceRecv(s);
  }
  if (s.state == Stream::State::kDone && !warming_up_) {
    Report("comm " + s.Name() + " ok " + std::to_string(s.completed) + " " +
           std::to_string(s.bytes) + " " + std::to_string(s.window_messages));
  }
}

// Traffic starts when the parent says `go`, once every rank's comms are up. A rank that starts
// receiving seconds after its peers started sending is a late receiver: its senders' sockets
// fill and the window stays shut, and under NCCL_DEVMEM_TCP_USER_TIMEOUT_MS the kernel fails a
// connection whose window stayed shut that long, answered probes or not (seen under TSan, where
// setup is ten times slower).
bool Rank::AwaitGo() {
  const int64_t deadline = NowMs() + kSetupTimeoutMs;
  std::string line;
  while (!go_) {
    if (!ReadParentLine(&line, deadline - NowMs())) return Fail("no `go` from the parent in 30 s");
    OnParentLine(line);
  }
  return true;
}

bool Rank::Traffic() {
  const int64_t start = NowMs();
  for (Stream& s : streams_) s.last_progress_ms = start;
  bool streaming_reported = warming_up_;
  for (;;) {
    bool running = false;
    for (Stream& s : streams_) {
      Advance(s);
      running = running || s.state == Stream::State::kRunning;
    }
    if (!running) return true;
    std::string line;
    while (ReadParentLine(&line, 0)) OnParentLine(line);
    const int64_t now = NowMs();
    if (!streaming_reported) {
      bool all = true;
      for (const Stream& s : streams_) all = all && s.completed >= kStreamingMessages;
      if (all) Report("streaming");
      streaming_reported = all;
    }
    if (o_.scenario == "kill" && killed_at_ >= 0 && !stop_) {
      bool settled = true;
      for (const Stream& s : streams_) {
        settled = settled && (s.peer != o_.victim || s.state != Stream::State::kRunning);
      }
      if (settled) victim_settled_at_ = now;
      // Comms between survivors finish once the victim's have failed, or should have by now.
      stop_ = settled || now > killed_at_ + o_.user_timeout_ms + kAfterKillMarginMs;
    }
    int64_t deadline = start + (o_.scenario == "alltoall" ? kAllToAllTimeoutMs : kKillTimeoutMs);
    if (killed_at_ >= 0) {
      deadline = std::min(deadline, killed_at_ + o_.user_timeout_ms + 2 * kAfterKillMarginMs);
    }
    if (now > deadline) {
      for (Stream& s : streams_) {
        if (s.state != Stream::State::kRunning) continue;
        s.state = Stream::State::kHung;
        if (warming_up_) return Fail("warm-up " + s.Name() + " hung in " + s.pending_call);
        Report("comm " + s.Name() + " hung " + s.pending_call + " " +
               std::to_string(now - s.last_progress_ms) + " " + std::to_string(s.completed));
      }
      return true;
    }
    sched_yield();
  }
}

void Rank::CloseAll() {
  t_last_warn.clear();
  for (Stream& s : streams_) {
    if (s.comm == nullptr) continue;
    // Registrations go before their comm, as NCCL frees them; a comm with requests still in
    // flight (it failed) takes its registrations along.
    for (Slot& slot : s.slots) {
      if (s.outstanding == 0 && slot.mhandle != nullptr &&
          net_->deregMr(s.comm, slot.mhandle) != abi::kSuccess) {
        Fail("deregMr on comm " + s.Name() + ": " + t_last_warn);
      }
    }
    if (!warming_up_) Report("closing " + s.Name());
    if ((s.send ? net_->closeSend(s.comm) : net_->closeRecv(s.comm)) != abi::kSuccess) {
      Fail("closing comm " + s.Name() + ": " + t_last_warn);
    }
  }
  streams_.clear();
  for (size_t p = 0; p < listen_comms_.size(); ++p) {
    if (listen_comms_[p] == nullptr) continue;
    if (!warming_up_) Report("closing listen " + std::to_string(p));
    if (net_->closeListen(listen_comms_[p]) != abi::kSuccess) {
      Fail("closeListen " + std::to_string(p) + ": " + t_last_warn);
    }
    listen_comms_[p] = nullptr;
  }
}

int Rank::Run() {
  fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
  if (!Init() || !WarmUp() || !ListenAndSwapHandles() || !Establish() || !AwaitGo() || !Traffic()) {
    return 1;
  }
  CloseAll();
  // Teardown may finish behind close (a shared engine): give it a moment, never forever.
  const int64_t deadline = NowMs() + kSettleTimeoutMs;
  int fds = OpenFds(), threads = Threads();
  while ((fds != baseline_fds_ || threads != baseline_threads_) && NowMs() < deadline) {
    usleep(10000);
    fds = OpenFds();
    threads = Threads();
  }
  Report("after " + std::to_string(fds) + " " + std::to_string(threads));
  if (net_->finalize(ctx_) != abi::kSuccess) {
    Fail("finalize: " + t_last_warn);
    return 1;
  }
  Report("done");
  return 0;
}

bool ParseOptions(int argc, char** argv, Options* o) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--rank") {
      o->rank = atoi(value);
    } else if (flag == "--ranks") {
      o->ranks = atoi(value);
    } else if (flag == "--plugin") {
      o->plugin = value;
    } else if (flag == "--scenario") {
      o->scenario = value;
    } else if (flag == "--victim") {
      o->victim = atoi(value);
    } else if (flag == "--user-timeout-ms") {
      o->user_timeout_ms = atoll(value);
    } else {
      return false;
    }
  }
  return o->rank >= 0 && o->rank < o->ranks && !o->plugin.empty() &&
         (o->scenario == "alltoall" || (o->scenario == "kill" && o->victim >= 0));
}

}  // namespace
}  // namespace devmem::testing::many_host

int main(int argc, char** argv) {
  using devmem::testing::many_host::Options;
  Options options;
  if (!devmem::testing::many_host::ParseOptions(argc, argv, &options)) {
    devmem::testing::many_host::Report(
        "error usage: many_host_rank --rank R --ranks N --plugin PATH --scenario alltoall|kill "
        "[--victim V --user-timeout-ms MS]");
    return 2;
  }
  devmem::testing::many_host::Rank rank(options);
  return rank.Run();
}
