// devmem-nccl-bench: NCCL collectives between two processes through whatever net NCCL picks,
// printing nccl-tests columns. Both ranks may share one GPU: each process gets its own
// NCCL_HOSTID, so NCCL sees two "nodes" and every connection goes through the network plugin
// (../shared/specs/nccl-net-abi.md section 5). Run it twice in one script, once with
// NCCL_NET_PLUGIN=<our .so> NCCL_NET=devmem and once with NCCL_NET=Socket, to compare.
//
// NCCL is linked dynamically (on the GPU host: LD_LIBRARY_PATH to the pip nvidia-nccl-cu13
// libs); the CUDA runtime statically.
#include <cuda_runtime.h>
#include <nccl.h>
#include <sys/wait.h>
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

// Element i of rank r's input: small integers, so float sums are exact.
float InputValue(int rank, size_t i) { return static_cast<float>((rank + 1) * 3 + (i % 97)); }

int RunRank(int rank, const Options& opt, int id_read_fd, int id_write_fd) {
  // Distinct host ids: NCCL must not see both ranks as one node (no P2P/SHM, no duplicate-GPU
  // error); set before NCCL reads its environment.
  std::string host_id = "devmem-nccl-bench-rank" + std::to_string(rank);
  setenv("NCCL_HOSTID", host_id.c_str(), 1);
  int devices = 0;
  CHECK_CUDA(cudaGetDeviceCount(&devices));
  CHECK_CUDA(cudaSetDevice(rank % devices));
  ncclUniqueId id;
  if (rank == 0) {
    CHECK_NCCL(ncclGetUniqueId(&id));
    if (write(id_write_fd, &id, sizeof(id)) != static_cast<ssize_t>(sizeof(id))) return 1;
  } else if (read(id_read_fd, &id, sizeof(id)) != static_cast<ssize_t>(sizeof(id))) {
    fprintf(stderr, "rank 1: no NCCL id from rank 0\n");
    return 1;
  }
  ncclComm_t comm;
  CHECK_NCCL(ncclCommInitRank(&comm, kRanks, id, rank));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  FILE* json = nullptr;
  if (rank == 0) {
    int version = 0;
    ncclGetVersion(&version);
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, rank % devices);
    printf("# devmem-nccl-bench [%s]: NCCL %d, %s, %d ranks on %d GPU(s), NCCL_NET=%s, "
           "NCCL_NET_PLUGIN=%s\n",
           opt.label.c_str(), version, prop.name, kRanks, devices,
           getenv("NCCL_NET") ? getenv("NCCL_NET") : "(unset)",
           getenv("NCCL_NET_PLUGIN") ? getenv("NCCL_NET_PLUGIN") : "(unset)");
    if (!opt.json_path.empty()) json = fopen(opt.json_path.c_str(), "a");
  }
  const size_t max_count = opt.max_bytes / sizeof(float);
  float* send_buf = nullptr;
  float* recv_buf = nullptr;
  CHECK_CUDA(cudaMalloc(&send_buf, max_count * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&recv_buf, max_count * sizeof(float) * kRanks));
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
        ncclGroupStart();
        ncclSend(send_buf, count, ncclFloat, peer, comm, stream);
        ncclRecv(recv_buf, count, ncclFloat, peer, comm, stream);
        return ncclGroupEnd();
      };
      for (int w = 0; w < opt.warmup; ++w) CHECK_NCCL(launch());
      CHECK_CUDA(cudaStreamSynchronize(stream));
      CHECK_CUDA(cudaEventRecord(start, stream));
      for (int it = 0; it < opt.iters; ++it) CHECK_NCCL(launch());
      CHECK_CUDA(cudaEventRecord(stop, stream));
      CHECK_CUDA(cudaEventSynchronize(stop));
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
      long* wrong_dev = nullptr;
      CHECK_CUDA(cudaMalloc(&wrong_dev, sizeof(long)));
      CHECK_CUDA(cudaMemcpy(wrong_dev, &wrong, sizeof(long), cudaMemcpyHostToDevice));
      CHECK_NCCL(ncclAllReduce(wrong_dev, wrong_dev, 1, ncclInt64, ncclSum, comm, stream));
      CHECK_CUDA(cudaStreamSynchronize(stream));
      CHECK_CUDA(cudaMemcpy(&wrong, wrong_dev, sizeof(long), cudaMemcpyDeviceToHost));
      cudaFree(wrong_dev);
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
        }
      }
    }
  }
  if (json != nullptr) fclose(json);
  cudaFree(send_buf);
  cudaFree(recv_buf);
  ncclCommDestroy(comm);
  return failures == 0 ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt = Parse(argc, argv);
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return 1;
  // Fork before any CUDA call: each rank initializes CUDA and NCCL in its own process.
  pid_t children[kRanks];
  for (int rank = 0; rank < kRanks; ++rank) {
    children[rank] = fork();
    if (children[rank] < 0) return 1;
    if (children[rank] == 0) _exit(RunRank(rank, opt, pipe_fds[0], pipe_fds[1]));
  }
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  int rc = 0;
  for (int rank = 0; rank < kRanks; ++rank) {
    int status = 0;
    waitpid(children[rank], &status, 0);
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code != 0) {
      fprintf(stderr, "rank %d exited with %d%s\n", rank, code,
              code == 3 ? " (wrong results)" : "");
      rc = code;
    }
  }
  return rc;
}
