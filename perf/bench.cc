// nccl-net-devmem-bench: drives a network plugin through its exported ncclNetPlugin_v11 table
// between two processes (fork; optionally each in its own network namespace), like NCCL's proxy
// does: per connection a window of outstanding isend/irecv of which only the oldest is tested,
// connections progressed round-robin by one thread per side, yielding when a pass made no
// progress. Any plugin loads (--plugin), e.g. NCCL's own socket transport (perf/peers/).
//
//   nccl-net-devmem-bench [--plugin PATH] [-b MIN] [-e MAX] [-f FACTOR] [-n ITERS] [-w WARMUP]
//                         [--window W] [--comms N] [--test-any] [--latency] [--check] [--json]
//                         [--mode host|emulated-devmem|emulated-tx]
//                         [--netns-send NS --netns-recv NS]
//                         [--fuse N] [--verbose]
//
//   --comms N     N connections carrying the stream (each -n ITERS messages), one proxy thread
//                 per side progressing them in turn, as NCCL's proxy progresses its channels
//   --test-any    post into every free slot and test every request in flight, not only the
//                 oldest: a stricter contract than NCCL's (NCCL's own socket transport fails it)
//   --check       byte-exact payload check of every message (stream and ping-pong; slower)
//   --fuse N      both sides fuse their first N devices into one virtual NIC (makeVDevice, as
//                 NCCL_NET_FORCE_MERGE does) and connect through it (1..4: the v11 table)
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "perf/net_peer.h"
#include "perf/plugin_loader.h"

namespace {

using devmem::testing::LoadedPlugin;
using devmem::testing::NetPeer;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string plugin;
  uint64_t min_bytes = 8;
  uint64_t max_bytes = 64ull << 20;
  double factor = 2;
  int iters = 0;  // 0: per connection ~512 MiB / comms per size (5 to 2000 messages); see ItersFor
  int warmup = 2;
  int window = 8;  // NCCL keeps NCCL_STEPS = 8 requests in flight per connection
  int comms = 1;
  bool test_any = false;  // default: test only the oldest request of a connection, as NCCL does
  bool latency = false;
  bool check = false;
  bool json = false;
  std::string mode = "host";
  std::string netns_send;
  std::string netns_recv;
  int fuse = 1;
};

[[noreturn]] void Die(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Die(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  fprintf(stderr, "nccl-net-devmem-bench: ");
  vfprintf(stderr, fmt, args);
  fputc('\n', stderr);
  va_end(args);
  exit(2);
}

uint64_t ParseSize(const char* text) {
  char* end = nullptr;
  double value = strtod(text, &end);
  if (end == text || value < 0) Die("bad size \"%s\"", text);
  uint64_t scale = 1;
  if (*end == 'K' || *end == 'k') scale = 1ull << 10;
  if (*end == 'M' || *end == 'm') scale = 1ull << 20;
  if (*end == 'G' || *end == 'g') scale = 1ull << 30;
  return static_cast<uint64_t>(value * static_cast<double>(scale));
}

// User + system CPU seconds of this process so far (all its threads: workers included).
double ProcessCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

std::string DefaultPluginPath(const char* argv0) {
  std::string self = argv0;
  size_t slash = self.rfind('/');
  std::string dir = slash == std::string::npos ? "." : self.substr(0, slash);
  return dir + "/../libnccl-net-devmem.so";
}

Options ParseOptions(int argc, char** argv) {
  Options o;
  o.plugin = DefaultPluginPath(argv[0]);
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) Die("%s needs a value", a.c_str());
      return argv[++i];
    };
    if (a == "--plugin")
      o.plugin = next();
    else if (a == "-b" || a == "--min-bytes")
      o.min_bytes = ParseSize(next());
    else if (a == "-e" || a == "--max-bytes")
      o.max_bytes = ParseSize(next());
    else if (a == "-f" || a == "--factor")
      o.factor = atof(next());
    else if (a == "-n" || a == "--iters")
      o.iters = atoi(next());
    else if (a == "-w" || a == "--warmup")
      o.warmup = atoi(next());
    else if (a == "--window")
      o.window = atoi(next());
    else if (a == "--comms")
      o.comms = atoi(next());
    else if (a == "--test-any")
      o.test_any = true;
    else if (a == "--latency")
      o.latency = true;
    else if (a == "--check")
      o.check = true;
    else if (a == "--json")
      o.json = true;
    else if (a == "--mode")
      o.mode = next();
    else if (a == "--netns-send")
      o.netns_send = next();
    else if (a == "--netns-recv")
      o.netns_recv = next();
    else if (a == "--fuse")
      o.fuse = atoi(next());
    else if (a == "--verbose")
      devmem::testing::LoggerVerbose() = true;
    else
      Die("unknown option %s (see the header of perf/bench.cc)", a.c_str());
  }
  if (o.mode == "emulated-devmem") {
    // The receiver cuts payload into frags of an emulated RX region (see README, devmem).
    setenv("NCCL_DEVMEM_EMULATE", "1", 1);
  } else if (o.mode == "emulated-tx") {
    // The sender sends with MSG_ZEROCOPY and completes on the kernel's completions.
    setenv("NCCL_DEVMEM_EMULATE_TX", "1", 1);
  } else if (o.mode != "host") {
    Die("--mode %s is unknown: use host, emulated-devmem or emulated-tx", o.mode.c_str());
  }
  if (o.factor <= 1.0 || o.window < 1 || o.window > 32 || o.min_bytes > o.max_bytes) {
    Die("need factor > 1, 1 <= window <= 32, min <= max");
  }
  if (o.comms < 1 || o.comms > 64) Die("need 1 <= comms <= 64");
  if (o.fuse < 1 || o.fuse > 4) Die("need 1 <= fuse <= 4");
  if (o.latency && o.comms > 1) Die("--comms applies to the stream test, not to --latency");
  return o;
}

std::vector<uint64_t> Sizes(const Options& o) {
  std::vector<uint64_t> sizes;
  for (double s = static_cast<double>(o.min_bytes); s <= static_cast<double>(o.max_bytes) * 1.0001;
       s *= o.factor) {
    sizes.push_back(static_cast<uint64_t>(s));
  }
  return sizes;
}

int ItersFor(const Options& o, uint64_t size) {
  if (o.iters > 0) return o.iters;
  const uint64_t bytes = std::max<uint64_t>(size, 1);
  // Round trips: 2000, or ~512 MiB each way for large messages (64 MiB: 20 round trips).
  if (o.latency) return static_cast<int>(std::clamp<uint64_t>((512ull << 20) / bytes, 20, 2000));
  const uint64_t n = (512ull << 20) / static_cast<uint64_t>(o.comms) / bytes;
  return static_cast<int>(std::clamp<uint64_t>(n, 5, 2000));
}

void WriteAll(int fd, const void* data, size_t len) {
  auto* p = static_cast<const char*>(data);
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n <= 0) Die("pipe write failed");
    p += n;
    len -= static_cast<size_t>(n);
  }
}

void ReadAll(int fd, void* data, size_t len) {
  auto* p = static_cast<char*>(data);
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n <= 0) Die("pipe read failed (peer process died?)");
    p += n;
    len -= static_cast<size_t>(n);
  }
}

void EnterNetns(const std::string& name) {
  if (name.empty()) return;
  std::string path = "/var/run/netns/" + name;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) Die("cannot enter netns %s", name.c_str());
  close(fd);
}

// What the polling loop does when a round made no progress: yield (NCCL's proxy) or a short
// sleep (BENCH_IDLE_SLEEP_US) to see how much the spinning costs on a small machine.
void IdleWait() {
  static const int sleep_us =
      getenv("BENCH_IDLE_SLEEP_US") ? atoi(getenv("BENCH_IDLE_SLEEP_US")) : 0;
  if (sleep_us > 0) {
    std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
  } else {
    std::this_thread::yield();
  }
}

// A page-aligned, pre-faulted message buffer. Transparent huge pages are requested because
// NCCL's host buffers (cudaHostAlloc) are large pinned allocations, not 4 KiB-page heaps.
class HostBuffer {
 public:
  explicit HostBuffer(uint64_t bytes) : size_(bytes) {
    constexpr size_t kHuge = 2 << 20;
    const size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
    void* p = nullptr;
    if (posix_memalign(&p, kHuge, rounded) != 0) Die("cannot allocate %" PRIu64 " bytes", bytes);
    madvise(p, rounded, MADV_HUGEPAGE);
    memset(p, 0, rounded);
    data_ = static_cast<char*>(p);
  }
  HostBuffer(HostBuffer&& other) noexcept : data_(other.data_), size_(other.size_) {
    other.data_ = nullptr;
  }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  ~HostBuffer() { free(data_); }
  char* data() { return data_; }
  uint64_t size() const { return size_; }
  char& operator[](uint64_t i) { return data_[i]; }

 private:
  char* data_ = nullptr;
  uint64_t size_ = 0;
};

// Payload of message `salt` (connection << 32 | message index): a per-message offset that
// neighbouring messages and other connections do not share, so a swapped, crossed or stale
// message fails the check in almost every byte, even a 1-byte one.
uint64_t PatternSeed(uint64_t salt) { return ((salt + 1) * 0x9E3779B97F4A7C15ull) >> 40; }

void FillPattern(char* data, uint64_t size, uint64_t salt) {
  const uint64_t seed = PatternSeed(salt);
  for (uint64_t i = 0; i < size; ++i) data[i] = static_cast<char>((i * 131 + seed) >> 3);
}

void CheckPattern(const char* data, uint64_t size, uint64_t salt, const char* what) {
  const uint64_t seed = PatternSeed(salt);
  for (uint64_t i = 0; i < size; ++i) {
    if (static_cast<uint8_t>(data[i]) != static_cast<uint8_t>((i * 131 + seed) >> 3)) {
      Die("payload mismatch at byte %" PRIu64 " of %" PRIu64 " (%s, connection %" PRIu64
          ", message %" PRIu64 ")",
          i, size, what, salt >> 32, salt & 0xffffffffu);
    }
  }
}

// One connection's side of a stream: a buffer per window slot and the request in flight in
// each. Message k uses slot k % window in the default (in-order) mode.
struct Lane {
  void* comm = nullptr;
  std::vector<HostBuffer> buffers;
  std::vector<void*> mhandles;
  std::vector<void*> requests;  // per slot; nullptr when free
  std::vector<uint64_t> salts;  // per slot: the payload of the message it carries
  int posted = 0;
  int completed = 0;
};

struct StreamStep {
  const devmem::abi::NetV11* net;
  bool sender;
  uint64_t size;
  int iters;  // per connection
  int window;
  bool check;
};

// Posts the next message of `lane` in `slot`; false when the plugin had no request free
// (it returned NULL: NCCL retries on a later pass).
bool Post(const StreamStep& s, Lane& lane, uint64_t lane_index, int slot) {
  void* request = nullptr;
  void* data = lane.buffers[static_cast<size_t>(slot)].data();
  void* mhandle = lane.mhandles[static_cast<size_t>(slot)];
  const uint64_t salt = lane_index << 32 | static_cast<uint64_t>(lane.posted);
  if (s.sender) {
    if (s.check) FillPattern(static_cast<char*>(data), s.size, salt);
    if (s.net->isend(lane.comm, data, s.size, 1, mhandle, nullptr, &request) !=
        devmem::abi::kSuccess) {
      Die("isend failed");
    }
  } else {
    size_t capacity = s.size;
    int tag = 1;
    if (s.net->irecv(lane.comm, 1, &data, &capacity, &tag, &mhandle, nullptr, &request) !=
        devmem::abi::kSuccess) {
      Die("irecv failed");
    }
  }
  if (request == nullptr) return false;
  lane.requests[static_cast<size_t>(slot)] = request;
  lane.salts[static_cast<size_t>(slot)] = salt;
  ++lane.posted;
  return true;
}

// Tests the request in `slot` once; true when it completed.
bool Complete(const StreamStep& s, Lane& lane, int slot) {
  int done = 0;
  int got = 0;
  if (s.net->test(lane.requests[static_cast<size_t>(slot)], &done, &got) != devmem::abi::kSuccess) {
    Die("test failed");
  }
  if (!done) return false;
  if (!s.sender && static_cast<uint64_t>(got) != s.size) Die("short receive %d", got);
  if (!s.sender && s.check) {
    CheckPattern(lane.buffers[static_cast<size_t>(slot)].data(), s.size,
                 lane.salts[static_cast<size_t>(slot)], "stream");
  }
  lane.requests[static_cast<size_t>(slot)] = nullptr;
  ++lane.completed;
  return true;
}

// NCCL's proxy (src/transport/net.cc): on each pass over a connection it posts at most one
// request and tests only the oldest one in flight.
bool ProgressInOrder(const StreamStep& s, Lane& lane, uint64_t lane_index) {
  bool progressed = false;
  if (lane.posted < s.iters && lane.posted - lane.completed < s.window) {
    progressed = Post(s, lane, lane_index, lane.posted % s.window);
  }
  if (lane.completed < lane.posted && Complete(s, lane, lane.completed % s.window)) {
    progressed = true;
  }
  return progressed;
}

// --test-any: fills every free slot and tests every request in flight, in slot order, so
// requests complete out of posting order.
bool ProgressAnySlot(const StreamStep& s, Lane& lane, uint64_t lane_index) {
  bool progressed = false;
  for (int slot = 0; slot < s.window; ++slot) {
    if (lane.requests[static_cast<size_t>(slot)] == nullptr && lane.posted < s.iters &&
        lane.posted - lane.completed < s.window && Post(s, lane, lane_index, slot)) {
      progressed = true;
    }
    if (lane.requests[static_cast<size_t>(slot)] != nullptr && Complete(s, lane, slot)) {
      progressed = true;
    }
  }
  return progressed;
}

// Streams `iters` messages of `size` bytes on every lane, up to `window` in flight per lane,
// the lanes progressed round-robin by this one thread. The receiver's clock runs from its
// "go" to its last completion.
double Stream(const Options& o, const devmem::abi::NetV11* net, bool sender,
              std::vector<Lane>& lanes, uint64_t size, int iters, bool check, int to_peer,
              int from_peer) {
  const StreamStep step{net, sender, size, iters, o.window, check};
  for (Lane& lane : lanes) {
    lane.posted = lane.completed = 0;
    lane.requests.assign(static_cast<size_t>(o.window), nullptr);
    lane.salts.assign(static_cast<size_t>(o.window), 0);
  }
  char go = 'g';
  if (sender) ReadAll(from_peer, &go, 1);
  Clock::time_point start = Clock::now();
  if (!sender) WriteAll(to_peer, &go, 1);
  const int64_t total = static_cast<int64_t>(iters) * static_cast<int64_t>(lanes.size());
  int64_t completed = 0;
  while (completed < total) {
    bool progressed = false;
    completed = 0;
    for (size_t i = 0; i < lanes.size(); ++i) {
      if (o.test_any ? ProgressAnySlot(step, lanes[i], i) : ProgressInOrder(step, lanes[i], i)) {
        progressed = true;
      }
      completed += lanes[i].completed;
    }
    if (!progressed) IdleWait();
  }
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Round trips of `size` bytes on one connection pair; with `check` the initiator sends
// message i's payload, the responder verifies it and echoes it, the initiator verifies the echo
// (each clears its buffer before receiving).
double PingPong(NetPeer& peer, bool initiator, HostBuffer& buffer, void* send_mh, void* recv_mh,
                uint64_t size, int iters, bool check) {
  const devmem::abi::NetV11* net = peer.net();
  void* data = buffer.data();
  Clock::time_point start = Clock::now();
  for (int i = 0; i < iters; ++i) {
    for (int step = 0; step < 2; ++step) {
      void* request = nullptr;
      const bool send_now = (step == 0) == initiator;
      if (check && send_now && initiator) FillPattern(buffer.data(), size, i);
      if (check && !send_now) memset(buffer.data(), 0, size);
      while (request == nullptr) {
        if (send_now) {
          if (net->isend(peer.send_comm(0), data, size, 1, send_mh, nullptr, &request) != 0) {
            Die("isend failed");
          }
        } else {
          size_t capacity = size;
          int tag = 1;
          if (net->irecv(peer.recv_comm(0), 1, &data, &capacity, &tag, &recv_mh, nullptr,
                         &request) != 0) {
            Die("irecv failed");
          }
        }
      }
      int done = 0;
      int got = 0;
      while (!done) {
        if (net->test(request, &done, &got) != 0) Die("test failed");
      }
      if (!send_now && static_cast<uint64_t>(got) != size) Die("short receive %d", got);
      if (check && !send_now) CheckPattern(buffer.data(), size, i, "ping-pong");
    }
  }
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Buffers of the stream lanes: `window` per connection, each of the largest size, 2 MiB-rounded.
void CheckBufferBudget(const Options& o, uint64_t largest) {
  constexpr uint64_t kHuge = 2 << 20;
  constexpr uint64_t kBudget = 4ull << 30;
  const uint64_t slots = o.latency ? 1 : static_cast<uint64_t>(o.comms * o.window);
  const uint64_t bytes = slots * ((std::max<uint64_t>(largest, 1) + kHuge - 1) / kHuge * kHuge);
  if (bytes > kBudget) {
    Die("--comms %d x --window %d buffers of %" PRIu64 " B need %.1f GiB per process, over %" PRIu64
        " GiB: lower -e, --window or --comms",
        o.comms, o.window, largest, static_cast<double>(bytes) / (1ull << 30), kBudget >> 30);
  }
}

int RunRank(const Options& o, bool rank0, int to_peer, int from_peer) {
  EnterNetns(rank0 ? o.netns_recv : o.netns_send);
  LoadedPlugin plugin;
  if (!plugin.Open(o.plugin)) Die("cannot load %s: %s", o.plugin.c_str(), plugin.error().c_str());
  const devmem::abi::NetV11* net = plugin.v11();
  if (net == nullptr) Die("%s exports no ncclNetPlugin_v11", o.plugin.c_str());
  NetPeer peer(net);
  std::string error;
  const size_t handle_bytes = static_cast<size_t>(o.comms) * devmem::abi::kNetHandleMaxSize;
  std::vector<uint8_t> mine(handle_bytes);
  std::vector<uint8_t> theirs(handle_bytes);
  if (!peer.Init(&error) || !peer.Fuse(o.fuse, &error) ||
      !peer.Listen(o.comms, mine.data(), &error)) {
    Die("%s", error.c_str());
  }
  WriteAll(to_peer, mine.data(), handle_bytes);
  ReadAll(from_peer, theirs.data(), handle_bytes);
  // Rank 1 sends bulk data to rank 0; latency mode uses both directions.
  const bool need_send = !rank0 || o.latency;
  const bool need_recv = rank0 || o.latency;
  if (!peer.Establish(theirs.data(), need_send, need_recv, 30000, &error)) {
    Die("%s", error.c_str());
  }

  const std::vector<uint64_t> sizes = Sizes(o);
  const uint64_t largest = std::max<uint64_t>(sizes.empty() ? 0 : sizes.back(), 1);
  std::vector<Lane> lanes;  // stream: one per connection
  std::vector<HostBuffer> pingpong_buffer;
  void* pingpong_send_mh = nullptr;
  void* pingpong_recv_mh = nullptr;
  if (o.latency) {
    HostBuffer& buffer = pingpong_buffer.emplace_back(largest);
    pingpong_send_mh = peer.Register(peer.send_comm(0), buffer.data(), buffer.size());
    pingpong_recv_mh = peer.Register(peer.recv_comm(0), buffer.data(), buffer.size());
  } else {
    for (int c = 0; c < o.comms; ++c) {
      Lane& lane = lanes.emplace_back();
      lane.comm = rank0 ? peer.recv_comm(c) : peer.send_comm(c);
      for (int s = 0; s < o.window; ++s) {
        HostBuffer& buffer = lane.buffers.emplace_back(largest);
        lane.mhandles.push_back(peer.Register(lane.comm, buffer.data(), buffer.size()));
      }
    }
  }
  const char* order = o.test_any ? "any" : "in-order";
  if (rank0 && !o.json) {
    printf("# nccl-net-devmem-bench: mode %s, %s, window %d, comms %d, test %s, plugin %s\n",
           o.mode.c_str(), o.latency ? "ping-pong round trips" : "one-way stream",
           o.latency ? 1 : o.window, o.comms, order, o.plugin.c_str());
    printf("# %12s %8s %12s %10s\n", "size(B)", "iters", "time(us)", "GB/s");
  }
  for (uint64_t size : sizes) {
    const int iters = ItersFor(o, size);  // per connection
    double seconds;
    double send_cpu_seconds = 0;
    if (o.latency) {
      HostBuffer& buffer = pingpong_buffer[0];
      PingPong(peer, rank0, buffer, pingpong_send_mh, pingpong_recv_mh, size, o.warmup + 10,
               o.check);
      seconds =
          PingPong(peer, rank0, buffer, pingpong_send_mh, pingpong_recv_mh, size, iters, o.check);
    } else {
      Stream(o, net, !rank0, lanes, size, o.warmup, false, to_peer, from_peer);
      const double cpu_before = ProcessCpuSeconds();
      seconds = Stream(o, net, !rank0, lanes, size, iters, o.check, to_peer, from_peer);
      // The sending process's CPU time for the timed messages, handed to rank 0 to print.
      double cpu = ProcessCpuSeconds() - cpu_before;
      if (!rank0) {
        WriteAll(to_peer, &cpu, sizeof(cpu));
      } else {
        ReadAll(from_peer, &send_cpu_seconds, sizeof(send_cpu_seconds));
      }
    }
    if (!rank0) continue;
    const double messages = static_cast<double>(iters) * o.comms;
    const double usec = seconds * 1e6 / messages;  // per message (all connections), or round trip
    const double gbps = o.latency ? 0.0 : static_cast<double>(size) * messages / seconds / 1e9;
    const double gigabytes = static_cast<double>(size) * messages / 1e9;
    const double send_cpu_per_gb = o.latency ? 0.0 : send_cpu_seconds / gigabytes;
    if (o.json) {
      printf("{\"size\": %" PRIu64
             ", \"usec\": %.3f, \"gbps\": %.4f, \"iters\": %d, "
             "\"mode\": \"%s\", \"test\": \"%s\", \"comms\": %d, \"order\": \"%s\", "
             "\"fused\": %d, \"send_cpu_s_per_gb\": %.4f}\n",
             size, usec, gbps, iters, o.mode.c_str(), o.latency ? "pingpong" : "stream", o.comms,
             order, o.fuse, send_cpu_per_gb);
    } else {
      printf("  %12" PRIu64 " %8d %12.2f %10.3f\n", size, iters, usec, gbps);
    }
    fflush(stdout);
  }
  peer.Close();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = ParseOptions(argc, argv);
  const std::vector<uint64_t> sizes = Sizes(o);
  CheckBufferBudget(o, sizes.empty() ? 1 : sizes.back());
  int down[2];
  int up[2];
  if (pipe(down) != 0 || pipe(up) != 0) Die("pipe failed");
  fflush(stdout);
  pid_t child = fork();
  if (child < 0) Die("fork failed");
  if (child == 0) {
    close(down[1]);
    close(up[0]);
    _exit(RunRank(o, false, up[1], down[0]));
  }
  close(down[0]);
  close(up[1]);
  int rc = RunRank(o, true, down[1], up[0]);
  close(down[1]);
  int status = 0;
  waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "nccl-net-devmem-bench: the sending process failed (status %d)\n", status);
    return 1;
  }
  return rc;
}
