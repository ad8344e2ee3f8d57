// devmem-nccl-bench: NCCL collectives between two processes through whatever net NCCL picks,
// printing nccl-tests columns. Both ranks may share one GPU: each process gets its own
// NCCL_HOSTID, so NCCL sees two "nodes" and every connection goes through the network plugin
// (../shared/specs/nccl-net-abi.md section 5). Run it twice in one script, once with
// NCCL_NET_PLUGIN=<our .so> NCCL_NET=devmem and once with NCCL_NET=Socket, to compare.
//
// NCCL is linked dynamically (on the GPU host: LD_LIBRARY_PATH to the pip nvidia-nccl-cu13
// libs); the CUDA runtime statically.
//
// Exit status: 0 all results correct; 3 some result wrong (the #wrong column, summed over both
// ranks); 2 bad options; anything else a failure (the failing call is printed). A rank that
// fails takes the other one down with it (EOF on the id pipe, or a kill after a grace period),
// so a failure never turns into a hang.
#include <cuda_runtime.h>
#include <errno.h>
#include <nccl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Options {
  std::vector<std::string> ops = {"all_reduce", "all_gather", "sendrecv"};
  size_t min_bytes = 1 << 10;
  size_t max_bytes = 256 << 20;
  int factor = 4;
  int warmup = 5;
  int iters = 20;
  std::string json_path;  // one JSON line per (op, size) appended here by rank 0
  std::string label = "run";
};

size_t ParseSize(const char* text) {
  char* end = nullptr;
  double value = strtod(text, &end);
  if (end == text || value < 0) {
    fprintf(stderr, "bad size \"%s\"\n", text);
    exit(2);
  }
  switch (*end) {
    case 'K': case 'k': value *= 1024; break;
    case 'M': case 'm': value *= 1024 * 1024; break;
    case 'G': case 'g': value *= 1024.0 * 1024 * 1024; break;
    default: break;
  }
  return static_cast<size_t>(value);
}

Options Parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        fprintf(stderr, "%s needs a value\n", a.c_str());
        exit(2);
      }
      return argv[++i];
    };
    if (a == "-b") o.min_bytes = ParseSize(next());
    else if (a == "-e") o.max_bytes = ParseSize(next());
    else if (a == "-f") o.factor = atoi(next());
    else if (a == "-w") o.warmup = atoi(next());
    else if (a == "-n") o.iters = atoi(next());
    else if (a == "--json") o.json_path = next();
    else if (a == "--label") o.label = next();
    else if (a == "--op") {
      std::string op = next();
      o.ops = op == "all" ? Options().ops : std::vector<std::string>{op};
    } else {
      fprintf(stderr,
              "usage: %s [-b 1K] [-e 256M] [-f 4] [-w 5] [-n 20] "
              "[--op all_reduce|all_gather|sendrecv|all] [--json FILE] [--label NAME]\n",
              argv[0]);
      exit(2);
    }
  }
  if (o.factor < 2 || o.iters < 1 || o.min_bytes < 4 || o.max_bytes < o.min_bytes) {
    fprintf(stderr, "bad options: need -f >= 2, -n >= 1, 4 <= -b <= -e\n");
    exit(2);
  }
  for (const std::string& op : o.ops) {
    if (op != "all_reduce" && op != "all_gather" && op != "sendrecv") {
      fprintf(stderr, "unknown --op %s\n", op.c_str());
      exit(2);
    }
  }
  return o;
}

#define CHECK_CUDA(call)                                                                  \
  do {                                                                                    \
    cudaError_t err_ = (call);                                                            \
    if (err_ != cudaSuccess) {                                                            \
      fprintf(stderr, "rank %d: %s failed: %s\n", rank, #call, cudaGetErrorString(err_)); \
      return 1;                                                                           \
    }                                                                                     \
  } while (0)
#define CHECK_NCCL(call)                                                                  \
  do {                                                                                    \
    ncclResult_t res_ = (call);                                                           \
    if (res_ != ncclSuccess) {                                                            \
      fprintf(stderr, "rank %d: %s failed: %s\n", rank, #call, ncclGetErrorString(res_)); \
      return 1;                                                                           \
    }                                                                                     \
  } while (0)

constexpr int kRanks = 2;
constexpr int kWrongExit = 3;      // results verified wrong (scripts tell this from a failure)
constexpr int kPeerGraceSeconds = 10;  // after one rank fails, the other gets this long to exit

// Element i of rank r's input: small integers, so float sums are exact.
float InputValue(int rank, size_t i) { return static_cast<float>((rank + 1) * 3 + (i % 97)); }

bool WriteFull(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// The bytes read before EOF (fewer than `size` when the writer went away), or -1 on an error.
ssize_t ReadFull(int fd, void* data, size_t size) {
  char* p = static_cast<char*>(data);
  size_t got = 0;
  while (got < size) {
    const ssize_t n = read(fd, p + got, size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(got);
}

// Waits for `stream` without blocking inside CUDA: when the peer or the net plugin fails, NCCL
// reports it as an asynchronous communicator error while the kernel waits forever for data that
// never comes. Polling both turns that into a clear error (and an abort) instead of a hang.
// Timing is unaffected: it comes from CUDA events on the stream, not from this loop.
int WaitStream(int rank, cudaStream_t stream, ncclComm_t comm, const char* what) {
  for (;;) {
    const cudaError_t err = cudaStreamQuery(stream);
    if (err == cudaSuccess) return 0;
    if (err != cudaErrorNotReady) {
      fprintf(stderr, "rank %d: waiting for %s: %s\n", rank, what, cudaGetErrorString(err));
      return 1;
    }
    ncclResult_t async = ncclSuccess;
    const ncclResult_t res = ncclCommGetAsyncError(comm, &async);
    if (res != ncclSuccess || (async != ncclSuccess && async != ncclInProgress)) {
      fprintf(stderr, "rank %d: NCCL failed during %s: %s; aborting the communicator\n", rank,
              what, ncclGetErrorString(res != ncclSuccess ? res : async));
      ncclCommAbort(comm);
      return 1;
    }
    const timespec pause{0, 50 * 1000};  // 50 us
    nanosleep(&pause, nullptr);
  }
}

// One rank. `id_fd` is the write end of the id pipe for rank 0 and the read end for rank 1; the
// other end is already closed in this process, so rank 1 sees EOF if rank 0 dies before sending.
int RunRank(int rank, const Options& opt, int id_fd) {
  // Distinct host ids: NCCL must not see both ranks as one node (no P2P/SHM, no duplicate-GPU
  // error); set before NCCL reads its environment.
  std::string host_id = "devmem-nccl-bench-rank" + std::to_string(rank);
  setenv("NCCL_HOSTID", host_id.c_str(), 1);
  FILE* json = nullptr;
  if (rank == 0 && !opt.json_path.empty()) {
    // Opened before the id is sent: failing here still releases rank 1 through EOF.
    json = fopen(opt.json_path.c_str(), "a");
    if (json == nullptr) {
      fprintf(stderr, "rank 0: cannot append to %s: %s\n", opt.json_path.c_str(), strerror(errno));
      return 1;
    }
  }
  int devices = 0;
  CHECK_CUDA(cudaGetDeviceCount(&devices));
  if (devices < 1) {
    fprintf(stderr, "rank %d: no CUDA device\n", rank);
    return 1;
  }
  CHECK_CUDA(cudaSetDevice(rank % devices));
  ncclUniqueId id;
  if (rank == 0) {
    CHECK_NCCL(ncclGetUniqueId(&id));
    if (!WriteFull(id_fd, &id, sizeof(id))) {
      fprintf(stderr, "rank 0: sending the NCCL unique id to rank 1 failed: %s\n",
              strerror(errno));
      return 1;
    }
  } else {
    const ssize_t got = ReadFull(id_fd, &id, sizeof(id));
    if (got < 0) {
      fprintf(stderr, "rank 1: reading the NCCL unique id failed: %s\n", strerror(errno));
      return 1;
    }
    if (got != static_cast<ssize_t>(sizeof(id))) {
      fprintf(stderr,
              "rank 1: rank 0 exited before sending the NCCL unique id (EOF after %zd of %zu "
              "bytes); its error is above\n",
              got, sizeof(id));
      return 1;
    }
  }
  close(id_fd);
  ncclComm_t comm;
  CHECK_NCCL(ncclCommInitRank(&comm, kRanks, id, rank));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  if (rank == 0) {
    int version = 0;
    CHECK_NCCL(ncclGetVersion(&version));
    cudaDeviceProp prop{};
    CHECK_CUDA(cudaGetDeviceProperties(&prop, rank % devices));
    printf("# devmem-nccl-bench [%s]: NCCL %d, %s, %d ranks on %d GPU(s), NCCL_NET=%s, "
           "NCCL_NET_PLUGIN=%s\n",
           opt.label.c_str(), version, prop.name, kRanks, devices,
           getenv("NCCL_NET") ? getenv("NCCL_NET") : "(unset)",
           getenv("NCCL_NET_PLUGIN") ? getenv("NCCL_NET_PLUGIN") : "(unset)");
    fflush(stdout);
  }
  const size_t max_count = opt.max_bytes / sizeof(float);
  float* send_buf = nullptr;
  float* recv_buf = nullptr;
  long* wrong_dev = nullptr;
  CHECK_CUDA(cudaMalloc(&send_buf, max_count * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&recv_buf, max_count * sizeof(float) * kRanks));
  CHECK_CUDA(cudaMalloc(&wrong_dev, sizeof(long)));
  std::vector<float> host(max_count * kRanks);
  int failures = 0;
  for (const std::string& op : opt.ops) {
    if (rank == 0) {
      printf("#\n# %s\n#%12s %12s %6s %6s %10s %8s %8s %7s\n", op.c_str(), "size(B)", "count",
             "type", "redop", "time(us)", "algbw", "busbw", "#wrong");
    }
    for (size_t bytes = opt.min_bytes; bytes <= opt.max_bytes; bytes *= opt.factor) {
      // all_gather: `bytes` is the output size, as in nccl-tests.
      const size_t count = op == "all_gather" ? bytes / sizeof(float) / kRanks : bytes / sizeof(float);
      if (count == 0) continue;
      for (size_t i = 0; i < count; ++i) host[i] = InputValue(rank, i);
      CHECK_CUDA(cudaMemcpy(send_buf, host.data(), count * sizeof(float), cudaMemcpyHostToDevice));
      CHECK_CUDA(cudaMemset(recv_buf, 0, count * sizeof(float) * kRanks));
      auto launch = [&]() -> ncclResult_t {
        if (op == "all_reduce") {
          return ncclAllReduce(send_buf, recv_buf, count, ncclFloat, ncclSum, comm, stream);
        }
        if (op == "all_gather") {
          return ncclAllGather(send_buf, recv_buf, count, ncclFloat, comm, stream);
        }
        const int peer = 1 - rank;
        ncclResult_t res = ncclGroupStart();
        if (res != ncclSuccess) return res;
        res = ncclSend(send_buf, count, ncclFloat, peer, comm, stream);
        if (res == ncclSuccess) res = ncclRecv(recv_buf, count, ncclFloat, peer, comm, stream);
        const ncclResult_t end = ncclGroupEnd();  // always closes the group
        return res != ncclSuccess ? res : end;
      };
      const std::string what = op + " of " + std::to_string(bytes) + " B";
      for (int w = 0; w < opt.warmup; ++w) CHECK_NCCL(launch());
      if (WaitStream(rank, stream, comm, (what + " (warmup)").c_str()) != 0) return 1;
      CHECK_CUDA(cudaEventRecord(start, stream));
      for (int it = 0; it < opt.iters; ++it) CHECK_NCCL(launch());
      CHECK_CUDA(cudaEventRecord(stop, stream));
      if (WaitStream(rank, stream, comm, what.c_str()) != 0) return 1;
      float ms = 0;
      CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
      const double seconds = ms / 1e3 / opt.iters;
      // Verify the last iteration's output (inputs never change, so every iteration matches).
      const size_t out_count = op == "all_gather" ? count * kRanks : count;
      CHECK_CUDA(cudaMemcpy(host.data(), recv_buf, out_count * sizeof(float), cudaMemcpyDeviceToHost));
      long wrong = 0;
      for (size_t i = 0; i < out_count; ++i) {
        float expected;
        if (op == "all_reduce") {
          expected = InputValue(0, i) + InputValue(1, i);
        } else if (op == "all_gather") {
          expected = InputValue(static_cast<int>(i / count), i % count);
        } else {
          expected = InputValue(1 - rank, i);
        }
        wrong += host[i] != expected ? 1 : 0;
      }
      // Both ranks' errors count: sum them over NCCL itself (tiny all_reduce on the side).
      CHECK_CUDA(cudaMemcpy(wrong_dev, &wrong, sizeof(long), cudaMemcpyHostToDevice));
      CHECK_NCCL(ncclAllReduce(wrong_dev, wrong_dev, 1, ncclInt64, ncclSum, comm, stream));
      if (WaitStream(rank, stream, comm, "the #wrong sum") != 0) return 1;
      CHECK_CUDA(cudaMemcpy(&wrong, wrong_dev, sizeof(long), cudaMemcpyDeviceToHost));
      failures += wrong > 0 ? 1 : 0;
      const double algbw = static_cast<double>(bytes) / seconds / 1e9;
      // nccl-tests bus bandwidth factors for n ranks.
      const double factor = op == "all_reduce" ? 2.0 * (kRanks - 1) / kRanks
                            : op == "all_gather" ? static_cast<double>(kRanks - 1) / kRanks
                                                 : 1.0;
      const double busbw = algbw * factor;
      if (rank == 0) {
        printf(" %12zu %12zu %6s %6s %10.1f %8.2f %8.2f %7ld\n", bytes, count, "float",
               op == "all_reduce" ? "sum" : "none", seconds * 1e6, algbw, busbw, wrong);
        fflush(stdout);
        if (json != nullptr) {
          fprintf(json,
                  "{\"label\":\"%s\",\"op\":\"%s\",\"bytes\":%zu,\"time_us\":%.3f,"
                  "\"algbw\":%.4f,\"busbw\":%.4f,\"wrong\":%ld}\n",
                  opt.label.c_str(), op.c_str(), bytes, seconds * 1e6, algbw, busbw, wrong);
          fflush(json);  // a later failure or kill keeps the sizes measured so far
        }
      }
    }
  }
  int rc = failures == 0 ? 0 : kWrongExit;
  if (json != nullptr && fclose(json) != 0) {
    fprintf(stderr, "rank 0: writing %s failed: %s\n", opt.json_path.c_str(), strerror(errno));
    rc = 1;
  }
  cudaFree(wrong_dev);
  cudaFree(send_buf);
  cudaFree(recv_buf);
  const ncclResult_t destroyed = ncclCommDestroy(comm);
  if (destroyed != ncclSuccess) {
    fprintf(stderr, "rank %d: ncclCommDestroy failed: %s\n", rank, ncclGetErrorString(destroyed));
    if (rc == 0) rc = 1;
  }
  if (failures != 0) {
    fprintf(stderr, "rank %d: %d (op, size) result(s) wrong, see the #wrong column\n", rank,
            failures);
  }
  return rc;
}

double Now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt = Parse(argc, argv);
  if (!opt.json_path.empty()) {
    // Checked here so a bad path is a plain error before any rank starts.
    FILE* json = fopen(opt.json_path.c_str(), "a");
    if (json == nullptr) {
      fprintf(stderr, "devmem-nccl-bench: cannot append to %s: %s\n", opt.json_path.c_str(),
              strerror(errno));
      return 1;
    }
    fclose(json);
  }
  // Rank 0 writes the id into the pipe, rank 1 reads it; a rank that dies early must not leave
  // its peer blocked, and a write to a pipe whose reader is gone must be an error, not a signal.
  signal(SIGPIPE, SIG_IGN);
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) {
    fprintf(stderr, "devmem-nccl-bench: pipe: %s\n", strerror(errno));
    return 1;
  }
  fflush(nullptr);  // nothing buffered may be written twice by the children
  const pid_t parent = getpid();
  // Fork before any CUDA call: each rank initializes CUDA and NCCL in its own process.
  pid_t children[kRanks];
  for (int rank = 0; rank < kRanks; ++rank) {
    children[rank] = fork();
    if (children[rank] < 0) {
      fprintf(stderr, "devmem-nccl-bench: fork: %s\n", strerror(errno));
      if (rank > 0) kill(children[0], SIGKILL);
      return 1;
    }
    if (children[rank] == 0) {
      // A rank must not outlive the parent (killed by `timeout`, say) and hold the GPU.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      // Each rank keeps only its own end of the pipe: with rank 1 holding no write end, rank
      // 0's exit is an EOF for rank 1's read() instead of a read that blocks forever.
      int own_end = pipe_fds[0];
      if (rank == 0) {
        close(pipe_fds[0]);
        own_end = pipe_fds[1];
      } else {
        close(pipe_fds[1]);
      }
      const int rc = RunRank(rank, opt, own_end);
      fflush(nullptr);  // _exit does not flush stdio, and the table may be in a buffer
      _exit(rc);
    }
  }
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  // Wait for both ranks. One rank's failure usually leaves the other stuck inside NCCL
  // (bootstrap or a collective waiting for its peer): it gets kPeerGraceSeconds to exit by
  // itself, then is killed, so a failure is reported instead of hanging until an outer timeout.
  int rc = 0;
  bool first_failure_seen = false;
  bool exited[kRanks] = {false, false};
  bool killed_by_us[kRanks] = {false, false};
  int running = kRanks;
  double kill_at = -1;
  while (running > 0) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, kill_at < 0 ? 0 : WNOHANG);
    if (pid < 0) {
      if (errno == EINTR) continue;
      fprintf(stderr, "devmem-nccl-bench: waitpid: %s\n", strerror(errno));
      return 1;
    }
    if (pid == 0) {  // WNOHANG: a peer of a failed rank is still running
      if (Now() >= kill_at) {
        for (int r = 0; r < kRanks; ++r) {
          if (!exited[r] && !killed_by_us[r]) {
            fprintf(stderr, "rank %d still running %d s after its peer failed: killing it\n", r,
                    kPeerGraceSeconds);
            kill(children[r], SIGKILL);
            killed_by_us[r] = true;
          }
        }
        kill_at = -1;  // block in waitpid again: the kill is certain to end them
      } else {
        const timespec pause{0, 100 * 1000 * 1000};
        nanosleep(&pause, nullptr);
      }
      continue;
    }
    int rank = -1;
    for (int r = 0; r < kRanks; ++r) {
      if (children[r] == pid) rank = r;
    }
    if (rank < 0) continue;
    exited[rank] = true;
    --running;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code == 0) continue;
    if (killed_by_us[rank]) continue;  // the failure that caused the kill is already recorded
    if (WIFEXITED(status)) {
      fprintf(stderr, "rank %d exited with %d%s\n", rank, code,
              code == kWrongExit ? " (wrong results)" : " (failed, see its error above)");
    } else {
      fprintf(stderr, "rank %d was killed by signal %d (%s)\n", rank, WTERMSIG(status),
              strsignal(WTERMSIG(status)));
    }
    // A real failure outranks wrong results: 3 only when every failing rank said "wrong".
    if (!first_failure_seen || (rc == kWrongExit && code != kWrongExit)) rc = code;
    first_failure_seen = true;
    if (running > 0 && kill_at < 0) kill_at = Now() + kPeerGraceSeconds;
  }
  if (rc != 0) {
    fprintf(stderr, "devmem-nccl-bench: %s (exit %d)\n",
            rc == kWrongExit ? "WRONG results" : "FAILED", rc);
  }
  return rc;
}
