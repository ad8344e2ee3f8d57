// nccl-net-devmem-scale-bench: what N comm pairs cost a process, ours against NCCL's socket
// transport in the same run. A training job opens hundreds to thousands of net comms per rank
// (issue 19); this opens N send + recv comm pairs through the v11 table, as NCCL's proxy does
// (perf/bench/net_peer.h), and reports per pair:
//   - setup: listen + connect + accept of all N pairs, interleaved, divided by N;
//   - threads, fds and RSS with all comms open and again after traffic, as differences from
//     the process after init() and after its message buffers were allocated (so neither the
//     library's load nor the benchmark's own buffers count; what init() itself started is
//     reported as "init");
//   - idle CPU: CPU time of the process over --idle-seconds with every comm open and nothing
//     posted, before and after traffic (NCCL's socket transport starts its helper threads on
//     the first message);
//   - aggregate throughput with all N comms streaming at once, each with a window of W
//     messages, progressed round-robin by one thread per process as NCCL's proxy thread does
//     (each size after one untimed message per comm, which starts NCCL's lazy helper threads);
//     GB/s counts every pair's payload once.
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
//   --window W     messages in flight per comm (default 4; NCCL keeps up to NCCL_STEPS = 8)
//   --sizes LIST   message sizes of the throughput test (up to 8; default 64K,1M)
//   --iters N      messages per comm per size (default: ~512 MiB in all, W..1000 per comm)
//   --check        byte-exact payload check of every message (the sender then needs a buffer
//                  per comm and slot; without it all send comms share W slots)
// Output: a table, or with --json one object per case.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "perf/bench/net_table.h"
#include "perf/bench/process_usage.h"
#include "perf/bench/scale_case.h"
#include "tests/common/plugin_loader.h"

namespace {

using devmem::perf::NetTable;
using devmem::perf::ProcessUsage;
using devmem::perf::scale::CaseOptions;
using devmem::perf::scale::CaseResult;
using devmem::perf::scale::kMaxSizes;
using devmem::perf::scale::MeasureCase;
using devmem::perf::scale::Target;

constexpr int kMaxPairs = 4096;

struct Options {
  std::vector<Target> targets;
  std::vector<int> pairs = {1, 64, 512, 1024};
  CaseOptions measure;
  bool json = false;
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
  std::string plugin =
      (slash == std::string::npos ? "." : self.substr(0, slash)) + "/../libnccl-net-devmem.so";
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
      o.measure.sizes.clear();
      for (const std::string& s : SplitList(next())) o.measure.sizes.push_back(ParseSize(s));
    } else if (a == "--split") {
      o.measure.split = true;
    } else if (a == "--window") {
      o.measure.window = atoi(next().c_str());
    } else if (a == "--iters") {
      o.measure.iters = atoi(next().c_str());
    } else if (a == "--idle-seconds") {
      o.measure.idle_seconds = atof(next().c_str());
    } else if (a == "--check") {
      o.measure.check = true;
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--verbose") {
      devmem::testing::LoggerVerbose() = true;
    } else {
      Die("unknown option %s (see the header of perf/bench/scale_bench.cc)", a.c_str());
    }
  }
  if (!NetTable::IsYardstickSpec(yardstick)) {
    Die("--yardstick %s: expected installed or installed:PATH", yardstick.c_str());
  }
  if (only != "" && only != "ours" && only != "yardstick") Die("--only takes ours or yardstick");
  if (!label.empty() && only.empty()) Die("--label names the one table --only runs");
  if (only != "yardstick") o.targets.push_back({label.empty() ? "ours" : label, false, plugin});
  if (only != "ours") o.targets.push_back({label.empty() ? "nccl" : label, true, yardstick});
  if (o.pairs.empty() || o.measure.sizes.empty() ||
      o.measure.sizes.size() > static_cast<size_t>(kMaxSizes)) {
    Die("need at least one --pairs value and 1..%d --sizes", kMaxSizes);
  }
  for (int n : o.pairs) {
    if (n < 1 || n > kMaxPairs) Die("need 1 <= pairs <= %d", kMaxPairs);
  }
  if (o.measure.window < 1 || o.measure.window > 32 || o.measure.iters < 0 ||
      o.measure.idle_seconds < 0) {
    Die("need 1 <= window <= 32, iters >= 0, idle-seconds >= 0");
  }
  return o;
}

std::string SizeLabel(uint64_t size) {
  if (size % (1 << 20) == 0) return std::to_string(size >> 20) + "MiB";
  if (size % (1 << 10) == 0) return std::to_string(size >> 10) + "KiB";
  return std::to_string(size) + "B";
}

void PrintJson(const Options& o, const Target& target, int pairs, const CaseResult& r) {
  auto usage = [](const ProcessUsage& u) {
    char text[128];
    snprintf(text, sizeof(text),
             "{\"threads\": %" PRId64 ", \"fds\": %" PRId64 ", \"rss_kib\": %" PRId64 "}",
             u.threads, u.fds, u.rss_kib);
    return std::string(text);
  };
  printf("{\"who\": \"%s\", \"pairs\": %d, \"split\": %s, \"window\": %d, ", target.label.c_str(),
         pairs, o.measure.split ? "true" : "false", o.measure.window);
  if (r.error[0] != '\0') {
    std::string error = r.error;
    std::replace(error.begin(), error.end(), '"', '\'');
    printf("\"error\": \"%s\"}\n", error.c_str());
    return;
  }
  printf(
      "\"setup_s\": %.6f, \"setup_us_per_pair\": %.2f, \"init\": %s, \"open\": %s, "
      "\"after\": %s, \"idle_s\": %.2f, \"idle_cpu_open_s\": %.4f, \"idle_cpu_after_s\": %.4f, "
      "\"throughput\": [",
      r.setup_s, r.setup_s * 1e6 / pairs, usage(r.init).c_str(), usage(r.open).c_str(),
      usage(r.after).c_str(), o.measure.idle_seconds, r.idle_cpu_open_s, r.idle_cpu_after_s);
  for (size_t i = 0; i < o.measure.sizes.size(); ++i) {
    printf("%s{\"size\": %" PRIu64 ", \"iters\": %d, \"gbps\": %.4f}", i ? ", " : "",
           o.measure.sizes[i], r.iters[i], r.gbps[i]);
  }
  std::string table = r.description;
  std::replace(table.begin(), table.end(), '"', '\'');
  printf("], \"table\": \"%s\"}\n", table.c_str());
}

void PrintHeader(const Options& o) {
  printf(
      "# nccl-net-devmem-scale-bench: %s, window %d, idle %.1f s; per pair unless marked "
      "(total)\n",
      o.measure.split ? "send and recv comms in two processes" : "both ends in one process",
      o.measure.window, o.measure.idle_seconds);
  printf("# %-14s %6s %11s %15s %15s %17s %13s", "who", "pairs", "setup(us)", "threads(total)",
         "fds open/after", "RSS KiB open/aft", "idle CPU %");
  for (uint64_t size : o.measure.sizes) printf(" %9s", ("GB/s " + SizeLabel(size)).c_str());
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
  if (o.measure.idle_seconds > 0) {
    snprintf(idle, sizeof(idle), "%.1f/%.1f", 100 * r.idle_cpu_open_s / o.measure.idle_seconds,
             100 * r.idle_cpu_after_s / o.measure.idle_seconds);
  } else {
    snprintf(idle, sizeof(idle), "-");
  }
  printf("  %-14s %6d %11.1f %15s %15s %17s %13s", target.label.c_str(), pairs, r.setup_s * 1e6 / n,
         threads, fds, rss, idle);
  for (size_t i = 0; i < o.measure.sizes.size(); ++i) printf(" %9.3f", r.gbps[i]);
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
      const CaseResult result = MeasureCase(o.measure, target, o.pairs[p]);
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
