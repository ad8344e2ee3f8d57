// nccl-net-devmem-scale-bench: what N comm pairs cost a process, ours against NCCL's socket
// transport in the same run. A training job opens hundreds to thousands of net comms per rank
// (issue 19); this opens N send + recv comm pairs through the v11 table, as NCCL's proxy does
// (perf/net_peer.h), and reports per pair:
//   - setup: listen + connect + accept of all N pairs, interleaved, divided by N;
//   - threads, fds and RSS with all comms open and again after traffic, as differences from
//     the process after init() and after its message buffers were allocated (so neither the
//     library's load nor the benchmark's own buffers count; what init() itself started is
//     reported as "init");
//   - idle CPU: CPU time of the process over --idle-seconds with every comm open and nothing
//     posted, before and after traffic (NCCL's socket transport starts its helper threads on
//     the first message);
//   - aggregate throughput with all N comms streaming at once, each with a window of W
//     messages, progressed round-robin by one thread per process as NCCL's proxy thread does.
// Every case runs in fresh processes (fork), so that one library's threads, fds and memory
// never count against the other.
//
//   nccl-net-devmem-scale-bench [--plugin PATH] [--yardstick installed[:LIBNCCL]]
//       [--only ours|yardstick] [--label TEXT] [--pairs 1,64,512,1024] [--split]
//       [--sizes 64K,1M] [--window W] [--iters N] [--idle-seconds S] [--check] [--json]
//       [--verbose]
//
//   --plugin       ours (default: libnccl-net-devmem.so beside bin/, as the bench finds it)
//   --yardstick    NCCL's socket transport in an installed libnccl.so.2 (default "installed":
//                  /usr/local/cuda/lib64/libnccl.so.2; perf/yardstick/installed_nccl_socket.h)
//   --only         run one of the two (default both, ours first, alternating per N)
//   --label        the name printed for the one table --only runs (e.g. "nccl 1x4")
//   --split        the send comms in one process and the recv comms in another (fork), the
//                  per-pair numbers summed over both; default: both ends in one process
//   --window W     messages in flight per comm (2..8 as NCCL's NCCL_STEPS; default 4)
//   --iters N      messages per comm per size (default: ~512 MiB in all, W..1000 per comm)
//   --check        byte-exact payload check of every message (the sender then needs a buffer
//                  per comm and slot; without it all send comms share W slots)
// Output: a table, or with --json one object per case.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "perf/net_peer.h"
#include "perf/net_table.h"
#include "perf/process_usage.h"
#include "perf/stream_lane.h"

namespace {

using devmem::perf::HostBuffer;
using devmem::perf::Lane;
using devmem::perf::NetTable;
using devmem::perf::ProcessCpuSeconds;
using devmem::perf::ProcessUsage;
using devmem::perf::SlotBytes;
using devmem::perf::StreamStep;
using devmem::testing::NetPeer;
using Clock = std::chrono::steady_clock;

constexpr int kMaxPairs = 4096;
constexpr int kMaxSizes = 8;
constexpr uint64_t kBufferBudget = 6ull << 30;  // message buffers per process
constexpr int kSetupTimeoutMs = 300000;

struct Target {
  std::string label;
  bool yardstick;
  std::string spec;  // plugin path, or "installed[:PATH]"
};

struct Options {
  std::vector<Target> targets;
  std::vector<int> pairs = {1, 64, 512, 1024};
  std::vector<uint64_t> sizes = {64 << 10, 1 << 20};
  bool split = false;
  int window = 4;
  int iters = 0;
  double idle_seconds = 2;
  bool check = false;
  bool json = false;
};

// One case's numbers, sent from the measuring process to the parent as plain bytes.
struct CaseResult {
  char error[512];
  char description[512];
  double setup_s;
  ProcessUsage init;  // what loading the library and init() added
  ProcessUsage open;  // all comms open, before traffic
  ProcessUsage after;  // after traffic, comms still open
  double idle_cpu_open_s;
  double idle_cpu_after_s;
  int iters[kMaxSizes];
  double gbps[kMaxSizes];
};

[[noreturn]] void Die(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Die(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  fprintf(stderr, "nccl-net-devmem-scale-bench: ");
  vfprintf(stderr, fmt, args);
  fputc('\n', stderr);
  va_end(args);
  exit(2);
}

uint64_t ParseSize(const std::string& text) {
  char* end = nullptr;
  const double value = strtod(text.c_str(), &end);
  if (end == text.c_str() || value <= 0) Die("bad size \"%s\"", text.c_str());
  const uint64_t scale = *end == 'K' || *end == 'k'   ? 1ull << 10
                         : *end == 'M' || *end == 'm' ? 1ull << 20
                         : *end == 'G' || *end == 'g' ? 1ull << 30
                                                      : 1;
  return static_cast<uint64_t>(value * static_cast<double>(scale));
}

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> items;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    if (comma > start) items.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return items;
}

Options ParseOptions(int argc, char** argv) {
  Options o;
  std::string self = argv[0];
  const size_t slash = self.rfind('/');
  std::string plugin = (slash == std::string::npos ? "." : self.substr(0, slash)) +
                       "/../libnccl-net-devmem.so";
  std::string yardstick = "installed";
  std::string only;
  std::string label;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die("%s needs a value", a.c_str());
      return argv[++i];
    };
    if (a == "--plugin") {
      plugin = next();
    } else if (a == "--yardstick") {
      yardstick = next();
    } else if (a == "--only") {
      only = next();
    } else if (a == "--label") {
      label = next();
    } else if (a == "--pairs") {
      o.pairs.clear();
      for (const std::string& n : SplitList(next())) o.pairs.push_back(atoi(n.c_str()));
    } else if (a == "--sizes") {
      o.sizes.clear();
      for (const std::string& s : SplitList(next())) o.sizes.push_back(ParseSize(s));
    } else if (a == "--split") {
      o.split = true;
    } else if (a == "--window") {
      o.window = atoi(next().c_str());
    } else if (a == "--iters") {
      o.iters = atoi(next().c_str());
    } else if (a == "--idle-seconds") {
      o.idle_seconds = atof(next().c_str());
    } else if (a == "--check") {
      o.check = true;
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--verbose") {
      devmem::testing::LoggerVerbose() = true;
    } else {
      Die("unknown option %s (see the header of perf/scale_bench.cc)", a.c_str());
    }
  }
  if (!NetTable::IsYardstickSpec(yardstick)) {
    Die("--yardstick %s: expected installed or installed:PATH", yardstick.c_str());
  }
  if (only != "" && only != "ours" && only != "yardstick") Die("--only takes ours or yardstick");
  if (!label.empty() && only.empty()) Die("--label names the one table --only runs");
  if (only != "yardstick") o.targets.push_back({label.empty() ? "ours" : label, false, plugin});
  if (only != "ours") o.targets.push_back({label.empty() ? "nccl" : label, true, yardstick});
  if (o.pairs.empty() || o.sizes.empty() || o.sizes.size() > kMaxSizes) {
    Die("need at least one --pairs value and 1..%d --sizes", kMaxSizes);
  }
  for (int n : o.pairs) {
    if (n < 1 || n > kMaxPairs) Die("need 1 <= pairs <= %d", kMaxPairs);
  }
  if (o.window < 1 || o.window > 32 || o.iters < 0 || o.idle_seconds < 0) {
    Die("need 1 <= window <= 32, iters >= 0, idle-seconds >= 0");
  }
  return o;
}

int ItersFor(const Options& o, int pairs, uint64_t size) {
  if (o.iters > 0) return o.iters;
  const uint64_t n = (512ull << 20) / static_cast<uint64_t>(pairs) / size;
  return static_cast<int>(std::clamp<uint64_t>(n, static_cast<uint64_t>(o.window), 1000));
}

// The other process of a --split case: pipes both ways. Without --split there is none and
// every exchange is a no-op.
class PeerLink final {
 public:
  PeerLink() = default;
  PeerLink(int to, int from) : to_(to), from_(from) {}
  bool present() const { return to_ >= 0; }
  bool Write(const void* data, size_t len) {
    auto* p = static_cast<const char*>(data);
    while (present() && len > 0) {
      const ssize_t n = write(to_, p, len);
      if (n <= 0) return false;
      p += n;
      len -= static_cast<size_t>(n);
    }
    return true;
  }
  bool Read(void* data, size_t len) {
    auto* p = static_cast<char*>(data);
    while (present() && len > 0) {
      const ssize_t n = read(from_, p, len);
      if (n <= 0) return false;
      p += n;
      len -= static_cast<size_t>(n);
    }
    return true;
  }
  // Both processes pass together (or fail when the other one died).
  bool Barrier() {
    char token = 'b';
    return Write(&token, 1) && Read(&token, 1);
  }

 private:
  int to_ = -1;
  int from_ = -1;
};

void SetError(CaseResult* result, const std::string& what) {
  snprintf(result->error, sizeof(result->error), "%s", what.c_str());
}

// Sleeps `seconds` with every comm open and nothing posted; the CPU time the process used.
double IdleCpu(double seconds) {
  const double before = ProcessCpuSeconds();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  return ProcessCpuSeconds() - before;
}

// Streams `iters` messages per lane on every lane at once; seconds until all completed.
bool StreamAll(const devmem::abi::NetV11* net, std::vector<Lane>& lanes, uint64_t size, int iters,
               int window, bool check, double* seconds, std::string* error) {
  const StreamStep step{net, size, iters, window, check};
  for (Lane& lane : lanes) lane.Reset(window);
  const Clock::time_point start = Clock::now();
  const int64_t total = static_cast<int64_t>(iters) * static_cast<int64_t>(lanes.size());
  for (int64_t completed = 0; completed < total;) {
    bool progressed = false;
    completed = 0;
    for (Lane& lane : lanes) {
      if (ProgressInOrder(step, lane, error)) progressed = true;
      if (!error->empty()) return false;
      completed += lane.completed;
    }
    if (!progressed) std::this_thread::yield();
  }
  *seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return true;
}

// One process's part of a case: `sends` and/or `recvs` comms (both N without --split). Fills
// `result` with this process's own numbers; the caller adds the other process's.
void RunSide(const Options& o, const Target& target, int pairs, bool sends, bool recvs,
             PeerLink& link, CaseResult* result) {
  const ProcessUsage before_load = ProcessUsage::Now();
  NetTable table;
  std::string error;
  if (!(target.yardstick ? table.OpenYardstick(target.spec, &error)
                         : table.OpenPlugin(target.spec, &error))) {
    return SetError(result, error);
  }
  snprintf(result->description, sizeof(result->description), "%s", table.description().c_str());
  NetPeer peer(table.v11());
  if (!peer.Init(&error)) return SetError(result, error);
  result->init = ProcessUsage::Now() - before_load;

  // Message buffers before the baseline, so that only what the transport holds is counted.
  const uint64_t largest = *std::max_element(o.sizes.begin(), o.sizes.end());
  const uint64_t slot = SlotBytes(largest);
  const uint64_t window = static_cast<uint64_t>(o.window);
  const uint64_t recv_slots = recvs ? static_cast<uint64_t>(pairs) * window : 0;
  const uint64_t send_slots = !sends ? 0 : o.check ? static_cast<uint64_t>(pairs) * window : window;
  if ((recv_slots + send_slots) * slot > kBufferBudget) {
    return SetError(result, std::to_string(pairs) + " pairs x window " + std::to_string(o.window) +
                                " x " + std::to_string(largest) + " B need more than " +
                                std::to_string(kBufferBudget >> 30) +
                                " GiB of buffers: lower --window, --sizes or --pairs");
  }
  HostBuffer recv_arena(std::max<uint64_t>(recv_slots * slot, 1));
  HostBuffer send_arena(std::max<uint64_t>(send_slots * slot, 1));
  const ProcessUsage base = ProcessUsage::Now();

  // Setup: listen, hand the handles over (--split), connect and accept all pairs.
  const size_t handle_bytes = static_cast<size_t>(pairs) * devmem::abi::kNetHandleMaxSize;
  std::vector<uint8_t> handles(handle_bytes);
  if (!link.Barrier()) return SetError(result, "the other process died before setup");
  const Clock::time_point setup_start = Clock::now();
  if (!peer.Listen(recvs ? pairs : 0, handles.data(), &error)) return SetError(result, error);
  if (link.present() && !(recvs ? link.Write(handles.data(), handle_bytes)
                                : link.Read(handles.data(), handle_bytes))) {
    return SetError(result, "handle exchange with the other process failed");
  }
  if (!peer.Establish(handles.data(), sends ? pairs : 0, recvs ? pairs : 0, kSetupTimeoutMs,
                      &error)) {
    return SetError(result, error);
  }
  if (!link.Barrier()) return SetError(result, "the other process failed its setup");
  result->setup_s = std::chrono::duration<double>(Clock::now() - setup_start).count();
  result->open = ProcessUsage::Now() - base;
  result->idle_cpu_open_s = IdleCpu(o.idle_seconds);

  std::vector<Lane> lanes;
  for (int c = 0; c < pairs; ++c) {
    for (int side = 0; side < 2; ++side) {
      const bool sender = side == 0;
      if (!(sender ? sends : recvs)) continue;
      Lane& lane = lanes.emplace_back();
      lane.sender = sender;
      lane.index = static_cast<uint64_t>(c);
      lane.comm = sender ? peer.send_comm(c) : peer.recv_comm(c);
      for (int s = 0; s < o.window; ++s) {
        const uint64_t k = static_cast<uint64_t>(c) * window + static_cast<uint64_t>(s);
        char* data = sender ? send_arena.data() + (o.check ? k : static_cast<uint64_t>(s)) * slot
                            : recv_arena.data() + k * slot;
        void* mhandle = nullptr;
        if (!peer.Register(lane.comm, data, largest, &mhandle)) {
          return SetError(result, "regMr failed");
        }
        lane.buffers.push_back(data);
        lane.mhandles.push_back(mhandle);
      }
    }
  }
  for (size_t i = 0; i < o.sizes.size(); ++i) {
    const uint64_t size = o.sizes[i];
    const int iters = ItersFor(o, pairs, size);
    double seconds = 0;
    // One message per comm first: NCCL's transport starts its helper threads on the first one.
    if (!link.Barrier() || !StreamAll(table.v11(), lanes, size, 1, 1, false, &seconds, &error) ||
        !link.Barrier() ||
        !StreamAll(table.v11(), lanes, size, iters, o.window, o.check, &seconds, &error)) {
      return SetError(result, error.empty() ? "the other process failed its stream" : error);
    }
    // The receiving side's clock counts (its last message is the stream's end).
    double peer_seconds = 0;
    if (link.present() && !(recvs ? link.Write(&seconds, sizeof(seconds))
                                  : link.Read(&peer_seconds, sizeof(peer_seconds)))) {
      return SetError(result, "the other process failed its stream");
    }
    if (link.present() && !recvs) seconds = peer_seconds;
    result->iters[i] = iters;
    result->gbps[i] = static_cast<double>(size) * iters * pairs / seconds / 1e9;
  }
  result->after = ProcessUsage::Now() - base;
  result->idle_cpu_after_s = IdleCpu(o.idle_seconds);
  link.Barrier();
  peer.Close();
}

bool ReadResult(int fd, CaseResult* result) {
  auto* p = reinterpret_cast<char*>(result);
  for (size_t got = 0; got < sizeof(*result);) {
    const ssize_t n = read(fd, p + got, sizeof(*result) - got);
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  return true;
}

void WriteResult(int fd, const CaseResult& result) {
  const auto* p = reinterpret_cast<const char*>(&result);
  for (size_t put = 0; put < sizeof(result);) {
    const ssize_t n = write(fd, p + put, sizeof(result) - put);
    if (n <= 0) _exit(3);
    put += static_cast<size_t>(n);
  }
}

// The process that measures a case. With --split it forks the receiving process and adds that
// one's numbers to its own.
[[noreturn]] void RunCase(const Options& o, const Target& target, int pairs, int result_fd) {
  CaseResult result{};
  if (!o.split) {
    PeerLink none;
    RunSide(o, target, pairs, true, true, none, &result);
    WriteResult(result_fd, result);
    _exit(0);
  }
  int down[2];
  int up[2];
  int back[2];
  if (pipe(down) != 0 || pipe(up) != 0 || pipe(back) != 0) Die("pipe failed");
  const pid_t receiver = fork();
  if (receiver < 0) Die("fork failed");
  if (receiver == 0) {
    close(down[1]);
    close(up[0]);
    close(back[0]);
    PeerLink link(up[1], down[0]);
    CaseResult mine{};
    RunSide(o, target, pairs, false, true, link, &mine);
    WriteResult(back[1], mine);
    _exit(0);
  }
  close(down[0]);
  close(up[1]);
  close(back[1]);
  PeerLink link(down[1], up[0]);
  RunSide(o, target, pairs, true, false, link, &result);
  close(down[1]);  // a receiver still waiting on us sees EOF
  CaseResult theirs{};
  if (!ReadResult(back[0], &theirs)) {
    if (result.error[0] == '\0') SetError(&result, "the receiving process died");
  } else if (result.error[0] == '\0' && theirs.error[0] != '\0') {
    SetError(&result, std::string("receiving process: ") + theirs.error);
  }
  waitpid(receiver, nullptr, 0);
  result.init = result.init + theirs.init;
  result.open = result.open + theirs.open;
  result.after = result.after + theirs.after;
  result.idle_cpu_open_s += theirs.idle_cpu_open_s;
  result.idle_cpu_after_s += theirs.idle_cpu_after_s;
  WriteResult(result_fd, result);
  _exit(0);
}

CaseResult Measure(const Options& o, const Target& target, int pairs) {
  int fds[2];
  if (pipe(fds) != 0) Die("pipe failed");
  fflush(stdout);
  const pid_t child = fork();
  if (child < 0) Die("fork failed");
  if (child == 0) {
    close(fds[0]);
    RunCase(o, target, pairs, fds[1]);
  }
  close(fds[1]);
  CaseResult result{};
  if (!ReadResult(fds[0], &result)) SetError(&result, "the measuring process died");
  close(fds[0]);
  int status = 0;
  waitpid(child, &status, 0);
  return result;
}

std::string SizeLabel(uint64_t size) {
  if (size % (1 << 20) == 0) return std::to_string(size >> 20) + "MiB";
  if (size % (1 << 10) == 0) return std::to_string(size >> 10) + "KiB";
  return std::to_string(size) + "B";
}

void PrintJson(const Options& o, const Target& target, int pairs, const CaseResult& r) {
  auto usage = [](const ProcessUsage& u) {
    char text[128];
    snprintf(text, sizeof(text), "{\"threads\": %" PRId64 ", \"fds\": %" PRId64
             ", \"rss_kib\": %" PRId64 "}", u.threads, u.fds, u.rss_kib);
    return std::string(text);
  };
  printf("{\"who\": \"%s\", \"pairs\": %d, \"split\": %s, \"window\": %d, ", target.label.c_str(),
         pairs, o.split ? "true" : "false", o.window);
  if (r.error[0] != '\0') {
    std::string error = r.error;
    std::replace(error.begin(), error.end(), '"', '\'');
    printf("\"error\": \"%s\"}\n", error.c_str());
    return;
  }
  printf("\"setup_s\": %.6f, \"setup_us_per_pair\": %.2f, \"init\": %s, \"open\": %s, "
         "\"after\": %s, \"idle_s\": %.2f, \"idle_cpu_open_s\": %.4f, \"idle_cpu_after_s\": %.4f, "
         "\"throughput\": [",
         r.setup_s, r.setup_s * 1e6 / pairs, usage(r.init).c_str(), usage(r.open).c_str(),
         usage(r.after).c_str(), o.idle_seconds, r.idle_cpu_open_s, r.idle_cpu_after_s);
  for (size_t i = 0; i < o.sizes.size(); ++i) {
    printf("%s{\"size\": %" PRIu64 ", \"iters\": %d, \"gbps\": %.4f}", i ? ", " : "", o.sizes[i],
           r.iters[i], r.gbps[i]);
  }
  std::string table = r.description;
  std::replace(table.begin(), table.end(), '"', '\'');
  printf("], \"table\": \"%s\"}\n", table.c_str());
}

void PrintHeader(const Options& o) {
  printf("# nccl-net-devmem-scale-bench: %s, window %d, idle %.1f s; per pair unless marked "
         "(total)\n",
         o.split ? "send and recv comms in two processes" : "both ends in one process", o.window,
         o.idle_seconds);
  printf("# %-14s %6s %11s %15s %15s %17s %13s", "who", "pairs", "setup(us)", "threads(total)",
         "fds open/after", "RSS KiB open/aft", "idle CPU %");
  for (uint64_t size : o.sizes) printf(" %9s", ("GB/s " + SizeLabel(size)).c_str());
  printf("\n");
}

void PrintRow(const Options& o, const Target& target, int pairs, const CaseResult& r) {
  if (r.error[0] != '\0') {
    printf("  %-14s %6d FAILED: %s\n", target.label.c_str(), pairs, r.error);
    return;
  }
  const double n = pairs;
  char threads[32], fds[32], rss[32], idle[32];
  snprintf(threads, sizeof(threads), "+%" PRId64 "/+%" PRId64, r.open.threads, r.after.threads);
  snprintf(fds, sizeof(fds), "%.1f/%.1f", r.open.fds / n, r.after.fds / n);
  snprintf(rss, sizeof(rss), "%.0f/%.0f", r.open.rss_kib / n, r.after.rss_kib / n);
  snprintf(idle, sizeof(idle), "%.1f/%.1f", 100 * r.idle_cpu_open_s / o.idle_seconds,
           100 * r.idle_cpu_after_s / o.idle_seconds);
  printf("  %-14s %6d %11.1f %15s %15s %17s %13s", target.label.c_str(), pairs,
         r.setup_s * 1e6 / n, threads, fds, rss, idle);
  for (size_t i = 0; i < o.sizes.size(); ++i) printf(" %9.3f", r.gbps[i]);
  printf("\n");
}

// So that 1,024 pairs' sockets fit: NCCL's socket transport uses at least 3 fds per pair.
void RaiseFdLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = ParseOptions(argc, argv);
  RaiseFdLimit();
  signal(SIGPIPE, SIG_IGN);  // a dead peer process shows as a failed write, not a kill
  if (!o.json) PrintHeader(o);
  std::vector<std::string> described;
  int failures = 0;
  for (size_t p = 0; p < o.pairs.size(); ++p) {
    for (size_t t = 0; t < o.targets.size(); ++t) {
      // Alternate who runs first, so neither always follows the other.
      const Target& target = o.targets[(t + p) % o.targets.size()];
      const CaseResult result = Measure(o, target, o.pairs[p]);
      if (result.error[0] != '\0') ++failures;
      if (o.json) {
        PrintJson(o, target, o.pairs[p], result);
      } else {
        if (result.description[0] != '\0' &&
            std::find(described.begin(), described.end(), target.label) == described.end()) {
          printf("# %s: %s\n", target.label.c_str(), result.description);
          described.push_back(target.label);
        }
        PrintRow(o, target, o.pairs[p], result);
      }
      fflush(stdout);
    }
  }
  return failures == 0 ? 0 : 1;
}
