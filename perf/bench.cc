// nccl-net-devmem-bench: drives the plugin through its exported ncclNetPlugin_v11 table between
// two processes (fork; optionally each in its own network namespace), like NCCL's proxy does:
// a window of outstanding isend/irecv, polled with test(), yielding when idle.
//
//   nccl-net-devmem-bench [--plugin PATH] [-b MIN] [-e MAX] [-f FACTOR] [-n ITERS] [-w WARMUP]
//                         [--window W] [--latency] [--check] [--json] [--mode host|emulated-devmem]
//                         [--netns-send NS --netns-recv NS] [--verbose]
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
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
  int iters = 0;  // 0: enough for ~512 MiB (or 1000 round trips) per size, at least 5
  int warmup = 2;
  int window = 8;  // NCCL keeps NCCL_STEPS = 8 requests in flight per connection
  bool latency = false;
  bool check = false;
  bool json = false;
  std::string mode = "host";
  std::string netns_send;
  std::string netns_recv;
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
    else if (a == "--verbose")
      devmem::testing::LoggerVerbose() = true;
    else
      Die("unknown option %s (see the header of perf/bench.cc)", a.c_str());
  }
  if (o.mode == "emulated-devmem") {
    // The receiver cuts payload into frags of an emulated RX region (see README, devmem).
    setenv("NCCL_DEVMEM_EMULATE", "1", 1);
  } else if (o.mode != "host") {
    Die("--mode %s is unknown: use host or emulated-devmem", o.mode.c_str());
  }
  if (o.factor <= 1.0 || o.window < 1 || o.window > 32 || o.min_bytes > o.max_bytes) {
    Die("need factor > 1, 1 <= window <= 32, min <= max");
  }
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
  if (o.latency) return 2000;
  uint64_t n = (512ull << 20) / std::max<uint64_t>(size, 1);
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

uint8_t Pattern(uint64_t i, uint64_t salt) { return static_cast<uint8_t>((i * 131 + salt) >> 3); }

// Streams `iters` messages of `size` bytes with up to `window` outstanding requests.
// The receiver returns the elapsed time from "go" to its last completion.
double Stream(NetPeer& peer, bool sender, std::vector<HostBuffer>& buffers,
              std::vector<void*>& mhandles, uint64_t size, int iters, int window, bool check,
              int to_peer, int from_peer) {
  const devmem::abi::NetV11* net = peer.net();
  window = std::min<int>(window, static_cast<int>(buffers.size()));
  std::vector<void*> inflight(static_cast<size_t>(window), nullptr);
  std::vector<uint64_t> sequence(static_cast<size_t>(window), 0);  // message index per slot
  char go = 'g';
  if (sender) {
    ReadAll(from_peer, &go, 1);
  }
  Clock::time_point start = Clock::now();
  if (!sender) WriteAll(to_peer, &go, 1);
  int posted = 0;
  int completed = 0;
  while (completed < iters) {
    bool progressed = false;
    for (int slot = 0; slot < window; ++slot) {
      if (inflight[slot] == nullptr && posted < iters && posted - completed < window) {
        void* request = nullptr;
        void* data = buffers[static_cast<size_t>(slot)].data();
        if (sender && check) {
          for (uint64_t i = 0; i < size; ++i) {
            buffers[static_cast<size_t>(slot)][i] = static_cast<char>(Pattern(i, posted));
          }
        }
        if (sender) {
          if (net->isend(peer.send_comm(), data, size, 1, mhandles[slot], nullptr, &request) !=
              devmem::abi::kSuccess) {
            Die("isend failed");
          }
        } else {
          size_t capacity = size;
          int tag = 1;
          if (net->irecv(peer.recv_comm(), 1, &data, &capacity, &tag, &mhandles[slot], nullptr,
                         &request) != devmem::abi::kSuccess) {
            Die("irecv failed");
          }
        }
        if (request != nullptr) {
          inflight[slot] = request;
          sequence[static_cast<size_t>(slot)] = static_cast<uint64_t>(posted);
          ++posted;
          progressed = true;
        }
      }
      if (inflight[slot] != nullptr) {
        int done = 0;
        int got = 0;
        if (net->test(inflight[slot], &done, &got) != devmem::abi::kSuccess) Die("test failed");
        if (done) {
          if (!sender && static_cast<uint64_t>(got) != size) Die("short receive %d", got);
          if (!sender && check) {
            auto& buffer = buffers[static_cast<size_t>(slot)];
            for (uint64_t i = 0; i < size; ++i) {
              if (static_cast<uint8_t>(buffer[i]) !=
                  Pattern(i, sequence[static_cast<size_t>(slot)])) {
                Die("payload mismatch at byte %" PRIu64 " of %" PRIu64, i, size);
              }
            }
          }
          inflight[slot] = nullptr;
          ++completed;
          progressed = true;
        }
      }
    }
    if (!progressed) IdleWait();
  }
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double PingPong(NetPeer& peer, bool initiator, void* buffer, void* send_mh, void* recv_mh,
                uint64_t size, int iters) {
  const devmem::abi::NetV11* net = peer.net();
  Clock::time_point start = Clock::now();
  for (int i = 0; i < iters; ++i) {
    for (int step = 0; step < 2; ++step) {
      void* request = nullptr;
      bool send_now = (step == 0) == initiator;
      while (request == nullptr) {
        if (send_now) {
          if (net->isend(peer.send_comm(), buffer, size, 1, send_mh, nullptr, &request) != 0) {
            Die("isend failed");
          }
        } else {
          size_t capacity = size;
          int tag = 1;
          if (net->irecv(peer.recv_comm(), 1, &buffer, &capacity, &tag, &recv_mh, nullptr,
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
    }
  }
  return std::chrono::duration<double>(Clock::now() - start).count();
}

int RunRank(const Options& o, bool rank0, int to_peer, int from_peer) {
  EnterNetns(rank0 ? o.netns_recv : o.netns_send);
  LoadedPlugin plugin;
  if (!plugin.Open(o.plugin)) Die("cannot load %s: %s", o.plugin.c_str(), plugin.error().c_str());
  const devmem::abi::NetV11* net = plugin.v11();
  if (net == nullptr) Die("%s exports no ncclNetPlugin_v11", o.plugin.c_str());
  NetPeer peer(net);
  std::string error;
  uint8_t mine[devmem::abi::kNetHandleMaxSize];
  uint8_t theirs[devmem::abi::kNetHandleMaxSize];
  if (!peer.Init(&error) || !peer.Listen(mine, &error)) Die("%s", error.c_str());
  WriteAll(to_peer, mine, sizeof(mine));
  ReadAll(from_peer, theirs, sizeof(theirs));
  // Rank 1 sends bulk data to rank 0; latency mode uses both directions.
  const bool need_send = !rank0 || o.latency;
  const bool need_recv = rank0 || o.latency;
  if (!peer.Establish(theirs, need_send, need_recv, 30000, &error)) Die("%s", error.c_str());

  const std::vector<uint64_t> sizes = Sizes(o);
  const uint64_t largest = sizes.empty() ? 0 : sizes.back();
  const int slots = o.latency ? 1 : o.window;
  std::vector<HostBuffer> buffers;
  for (int s = 0; s < slots; ++s) buffers.emplace_back(std::max<uint64_t>(largest, 1));
  std::vector<void*> send_mh(static_cast<size_t>(slots), nullptr);
  std::vector<void*> recv_mh(static_cast<size_t>(slots), nullptr);
  for (int s = 0; s < slots; ++s) {
    if (need_send)
      send_mh[s] = peer.Register(peer.send_comm(), buffers[s].data(), buffers[s].size());
    if (need_recv)
      recv_mh[s] = peer.Register(peer.recv_comm(), buffers[s].data(), buffers[s].size());
  }
  if (rank0 && !o.json) {
    printf("# nccl-net-devmem-bench: mode %s, %s, window %d, plugin %s\n", o.mode.c_str(),
           o.latency ? "ping-pong round trips" : "one-way stream", o.latency ? 1 : o.window,
           o.plugin.c_str());
    printf("# %12s %8s %12s %10s\n", "size(B)", "iters", "time(us)", "GB/s");
  }
  for (uint64_t size : sizes) {
    const int iters = ItersFor(o, size);
    double seconds;
    if (o.latency) {
      PingPong(peer, rank0, buffers[0].data(), send_mh[0], recv_mh[0], size, o.warmup + 10);
      seconds = PingPong(peer, rank0, buffers[0].data(), send_mh[0], recv_mh[0], size, iters);
    } else {
      auto& mh = rank0 ? recv_mh : send_mh;
      Stream(peer, !rank0, buffers, mh, size, o.warmup, o.window, false, to_peer, from_peer);
      seconds =
          Stream(peer, !rank0, buffers, mh, size, iters, o.window, o.check, to_peer, from_peer);
    }
    if (!rank0) continue;
    const double usec = seconds * 1e6 / iters;  // per message, or per round trip
    const double gbps = o.latency ? 0.0 : static_cast<double>(size) * iters / seconds / 1e9;
    if (o.json) {
      printf("{\"size\": %" PRIu64
             ", \"usec\": %.3f, \"gbps\": %.4f, \"iters\": %d, "
             "\"mode\": \"%s\", \"test\": \"%s\"}\n",
             size, usec, gbps, iters, o.mode.c_str(), o.latency ? "pingpong" : "stream");
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
