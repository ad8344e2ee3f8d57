// nccl-net-devmem-bench: drives a network plugin through its exported ncclNetPlugin_v11 table
// between two processes (fork; optionally each in its own network namespace), like NCCL's proxy
// does: per connection a window of outstanding isend/irecv of which only the oldest is tested,
// connections progressed round-robin by one thread per side, yielding when a pass made no
// progress. Any plugin loads (--plugin), and so does NCCL's own socket transport from an
// installed libnccl.so.2 (--yardstick, perf/yardstick/installed_nccl_socket.h).
//
//   nccl-net-devmem-bench [--plugin PATH | --yardstick installed[:LIBNCCL]]
//                         [-b MIN] [-e MAX] [-f FACTOR] [-n ITERS] [-w WARMUP]
//                         [--window W] [--comms N] [--test-any] [--latency] [--check] [--json]
//                         [--nccl-profiler]
//                         [--mode host|emulated-devmem|emulated-tx]
//                         [--netns-send NS --netns-recv NS]
//                         [--fuse N] [--verbose]
//
//   --yardstick installed[:LIBNCCL]
//                 drive NCCL's socket transport (NCCL_NET=Socket) inside LIBNCCL (default
//                 /usr/local/cuda/lib64/libnccl.so.2; NCCL 2.28.9 only) instead of a plugin
//   --comms N     N connections carrying the stream (each -n ITERS messages), one proxy thread
//                 per side progressing them in turn, as NCCL's proxy progresses its channels
//                 (1..kMaxComms; buffers permitting: see CheckBufferBudget)
//   --test-any    post into every free slot and test every request in flight, not only the
//                 oldest: a stricter contract than NCCL's (NCCL's own socket transport fails it)
//   --check       byte-exact payload check of every message (stream and ping-pong; slower)
//   --nccl-profiler
//                 init with NCCL's profiler callback as NCCL passes it when no profiler plugin
//                 is loaded, and an event handle with every isend/irecv (NCCL always does both):
//                 what the plugin's profiler events cost a job that does not profile
//   --fuse N      both sides fuse their first N devices into one virtual NIC (makeVDevice, as
//                 NCCL_NET_FORCE_MERGE does) and connect through it (1..4: the v11 table)
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

#include "perf/bench/net_peer.h"
#include "perf/bench/net_table.h"
#include "perf/bench/process_usage.h"
#include "perf/bench/stream_lane.h"
#include "tests/common/plugin_loader.h"

namespace {

using devmem::perf::CheckPattern;
using devmem::perf::FillPattern;
using devmem::perf::HostBuffer;
using devmem::perf::Lane;
using devmem::perf::NetTable;
using devmem::perf::ProcessCpuSeconds;
using devmem::perf::SlotBytes;
using devmem::perf::StreamStep;
using devmem::testing::NetPeer;
using Clock = std::chrono::steady_clock;

// NCCL opens about 1,000 net comms per rank in a 256-rank all-to-all (issue 19): --comms goes
// that far, each connection with its own listen handle and lane buffers.
constexpr int kMaxComms = 1024;

struct Options {
  std::string plugin;
  std::string yardstick;  // "installed[:PATH]": NCCL's socket transport instead of the plugin
  uint64_t min_bytes = 8;
  uint64_t max_bytes = 64ull << 20;
  double factor = 2;
  int iters = 0;  // 0: per connection ~512 MiB / comms per size (5 to 2000 messages); see ItersFor
  int warmup = 2;
  int window = 8;  // NCCL keeps NCCL_STEPS = 8 requests in flight per connection
  int comms = 1;
  bool test_any = false;  // default: test only the oldest request of a connection, as NCCL does
  bool nccl_profiler = false;  // NCCL's profiler callback at init, an event handle per request
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
    else if (a == "--yardstick")
      o.yardstick = next();
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
    else if (a == "--nccl-profiler")
      o.nccl_profiler = true;
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
      Die("unknown option %s (see the header of perf/bench/bench.cc)", a.c_str());
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
  if (o.comms < 1 || o.comms > kMaxComms) Die("need 1 <= comms <= %d", kMaxComms);
  if (!o.yardstick.empty() && !NetTable::IsYardstickSpec(o.yardstick)) {
    Die("--yardstick %s: expected installed or installed:PATH", o.yardstick.c_str());
  }
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

// Streams `iters` messages of `size` bytes on every lane, up to `window` in flight per lane,
// the lanes progressed round-robin by this one thread. The receiver's clock runs from its
// "go" to its last completion.
double Stream(const Options& o, NetPeer& peer, const devmem::abi::NetV11* net, bool sender,
              std::vector<Lane>& lanes, uint64_t size, int iters, bool check, int to_peer,
              int from_peer) {
  std::string error;
  const StreamStep step{net, size, iters, o.window, check, peer.phandles()};
  for (Lane& lane : lanes) lane.Reset(o.window);
  char go = 'g';
  if (sender) ReadAll(from_peer, &go, 1);
  Clock::time_point start = Clock::now();
  if (!sender) WriteAll(to_peer, &go, 1);
  const int64_t total = static_cast<int64_t>(iters) * static_cast<int64_t>(lanes.size());
  int64_t completed = 0;
  while (completed < total) {
    bool progressed = false;
    completed = 0;
    for (Lane& lane : lanes) {
      if (o.test_any ? ProgressAnySlot(step, lane, &error) : ProgressInOrder(step, lane, &error)) {
        progressed = true;
      }
      if (!error.empty()) Die("%s", error.c_str());
      completed += lane.completed;
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
          if (net->isend(peer.send_comm(0), data, size, 1, send_mh, peer.send_phandle(),
                         &request) != 0) {
            Die("isend failed");
          }
        } else {
          size_t capacity = size;
          int tag = 1;
          if (net->irecv(peer.recv_comm(0), 1, &data, &capacity, &tag, &recv_mh, peer.phandles(),
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
      if (check && !send_now) {
        const std::string mismatch = CheckPattern(buffer.data(), size, i, "ping-pong");
        if (!mismatch.empty()) Die("%s", mismatch.c_str());
      }
    }
  }
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Buffers of the stream lanes: `window` slots per connection, each of the largest size.
void CheckBufferBudget(const Options& o, uint64_t largest) {
  constexpr uint64_t kBudget = 4ull << 30;
  const uint64_t slots = o.latency ? 1 : static_cast<uint64_t>(o.comms) * o.window;
  const uint64_t bytes = slots * SlotBytes(largest);
  if (bytes > kBudget) {
    Die("--comms %d x --window %d buffers of %" PRIu64 " B need %.1f GiB per process, over %" PRIu64
        " GiB: lower -e, --window or --comms",
        o.comms, o.window, largest, static_cast<double>(bytes) / (1ull << 30), kBudget >> 30);
  }
}

int RunRank(const Options& o, bool rank0, int to_peer, int from_peer) {
  EnterNetns(rank0 ? o.netns_recv : o.netns_send);
  NetTable table;
  std::string error;
  if (!(o.yardstick.empty() ? table.OpenPlugin(o.plugin, &error)
                            : table.OpenYardstick(o.yardstick, &error))) {
    Die("%s", error.c_str());
  }
  const devmem::abi::NetV11* net = table.v11();
  NetPeer peer(net);
  const size_t handle_bytes = static_cast<size_t>(o.comms) * devmem::abi::kNetHandleMaxSize;
  std::vector<uint8_t> mine(handle_bytes);
  std::vector<uint8_t> theirs(handle_bytes);
  if (!peer.Init(&error, o.nccl_profiler) || !peer.Fuse(o.fuse, &error) ||
      !peer.Listen(o.comms, mine.data(), &error)) {
    Die("%s", error.c_str());
  }
  // One side writes first: above 512 connections the handles outgrow a pipe's 64 KiB, and two
  // writers would wait for each other's reader.
  if (rank0) WriteAll(to_peer, mine.data(), handle_bytes);
  ReadAll(from_peer, theirs.data(), handle_bytes);
  if (!rank0) WriteAll(to_peer, mine.data(), handle_bytes);
  // Rank 1 sends bulk data to rank 0; latency mode uses both directions.
  const bool need_send = !rank0 || o.latency;
  const bool need_recv = rank0 || o.latency;
  if (!peer.Establish(theirs.data(), need_send, need_recv, 30000, &error)) {
    Die("%s", error.c_str());
  }

  const std::vector<uint64_t> sizes = Sizes(o);
  const uint64_t largest = std::max<uint64_t>(sizes.empty() ? 0 : sizes.back(), 1);
  std::vector<Lane> lanes;  // stream: one per connection
  std::vector<HostBuffer> stream_arena;
  std::vector<HostBuffer> pingpong_buffer;
  void* pingpong_send_mh = nullptr;
  void* pingpong_recv_mh = nullptr;
  if (o.latency) {
    HostBuffer& buffer = pingpong_buffer.emplace_back(largest);
    pingpong_send_mh = peer.Register(peer.send_comm(0), buffer.data(), buffer.size());
    pingpong_recv_mh = peer.Register(peer.recv_comm(0), buffer.data(), buffer.size());
  } else {
    const uint64_t slot_bytes = SlotBytes(largest);
    HostBuffer& arena =
        stream_arena.emplace_back(slot_bytes * static_cast<uint64_t>(o.comms) * o.window);
    char* next_slot = arena.data();
    for (int c = 0; c < o.comms; ++c) {
      Lane& lane = lanes.emplace_back();
      lane.comm = rank0 ? peer.recv_comm(c) : peer.send_comm(c);
      lane.sender = !rank0;
      lane.index = static_cast<uint64_t>(c);
      for (int s = 0; s < o.window; ++s, next_slot += slot_bytes) {
        lane.buffers.push_back(next_slot);
        lane.mhandles.push_back(peer.Register(lane.comm, next_slot, largest));
      }
    }
  }
  const char* order = o.test_any ? "any" : "in-order";
  if (rank0 && !o.json) {
    printf("# nccl-net-devmem-bench: mode %s, %s, window %d, comms %d, test %s\n# %s\n",
           o.mode.c_str(), o.latency ? "ping-pong round trips" : "one-way stream",
           o.latency ? 1 : o.window, o.comms, order, table.description().c_str());
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
      Stream(o, peer, net, !rank0, lanes, size, o.warmup, false, to_peer, from_peer);
      const double cpu_before = ProcessCpuSeconds();
      seconds = Stream(o, peer, net, !rank0, lanes, size, iters, o.check, to_peer, from_peer);
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
