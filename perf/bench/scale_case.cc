// See scale_case.h.
#include "perf/bench/scale_case.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "perf/bench/net_peer.h"
#include "perf/bench/net_table.h"
#include "perf/bench/stream_lane.h"

namespace devmem::perf::scale {
namespace {

using devmem::testing::NetPeer;
using Clock = std::chrono::steady_clock;
using Options = CaseOptions;

constexpr uint64_t kBufferBudget = 6ull << 30;  // message buffers per process
constexpr int kSetupTimeoutMs = 300000;

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
  const pid_t receiver =
      pipe(down) == 0 && pipe(up) == 0 && pipe(back) == 0 ? fork() : static_cast<pid_t>(-1);
  if (receiver < 0) {
    SetError(&result, std::string("cannot start the receiving process: ") + strerror(errno));
    WriteResult(result_fd, result);
    _exit(0);
  }
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

}  // namespace

CaseResult MeasureCase(const CaseOptions& o, const Target& target, int pairs) {
  CaseResult result{};
  int fds[2];
  fflush(stdout);
  const pid_t child = pipe(fds) == 0 ? fork() : static_cast<pid_t>(-1);
  if (child < 0) {
    SetError(&result, std::string("cannot start the measuring process: ") + strerror(errno));
    return result;
  }
  if (child == 0) {
    close(fds[0]);
    RunCase(o, target, pairs, fds[1]);
  }
  close(fds[1]);
  if (!ReadResult(fds[0], &result)) SetError(&result, "the measuring process died");
  close(fds[0]);
  int status = 0;
  waitpid(child, &status, 0);
  return result;
}

}  // namespace devmem::perf::scale
