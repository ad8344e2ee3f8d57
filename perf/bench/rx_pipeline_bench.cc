// devmem-rx-pipeline-bench: the plugin's devmem receive path from the NIC's frags to the tokens
// going back, without a NIC. A synthetic header-split NIC (synthetic_nic.h) answers the
// receiver's recvmsg(MSG_SOCK_DEVMEM) with frags already in the RX region, and counts the
// tokens SO_DEVMEM_DONTNEED would return; everything between is the plugin's own code
// (DevmemFragReceiver, frag parser, offset table, token batching, the consumer). Per consumer,
// frag profile and NCCL step size it runs NCCL's depth of receives in flight (rx_pipeline_run.h)
// and reports receives/s, GB/s, CPU time per GB and the latency from a step's last frag to its
// last token back. Each case first checks every byte of its first steps against the sender's
// pattern; a case that fails its check, or errs, makes the exit status 1 (skipped ones do not).
//
//   devmem-rx-pipeline-bench [-b MIN] [-e MAX] [-f FACTOR] [--bytes PER_CASE]
//       [--consumer host|kernel|unpack|all] [--frags page|mtu|all] [--page 4K|16K|all]
//       [--depth N] [--verify-steps N] [--region-bytes N] [--linear-every N]
//       [--linear-bytes N] [--gpu N] [--json] [--smoke] [--wrong-scatter]
//
// --smoke: 64 KiB and 128 KiB steps, a few MiB per case (CI); --wrong-scatter: the bench hands
// the consumer two frags swapped, so the byte check must fail (a test of the check itself).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gpu/scatter_engine.h"
#include "perf/bench/rx_pipeline_run.h"
#include "perf/bench/synthetic_nic.h"
#include "plugin/consumers/unpack_queue.h"
#include "plugin/core/nccl_contract.h"
#include "plugin/cuda/cuda_driver.h"

namespace devmem::perf {
namespace {

struct Options {
  uint64_t min_step = 64 << 10;  // NCCL's step sizes: 64 KiB to 4 MiB
  uint64_t max_step = 4 << 20;
  uint64_t factor = 2;
  uint64_t bytes_per_case = 1ull << 30;
  std::vector<ConsumerKind> consumers = {ConsumerKind::kHostScatter, ConsumerKind::kKernelScatter,
                                         ConsumerKind::kNcclUnpack};
  std::vector<bool> mtu_frags = {false, true};
  std::vector<uint32_t> niovs = {4096, 16384};
  size_t depth = nccl::kSteps;
  uint64_t verify_steps = 0;  // 0: two rounds of the ring (2 x depth)
  uint64_t region_bytes = 0;
  NicOptions nic;
  int gpu = 0;
  bool json = false;
  bool wrong_scatter = false;
};

uint64_t ParseBytes(const char* text) {
  char* end = nullptr;
  uint64_t value = strtoull(text, &end, 10);
  if (end != nullptr && (*end == 'K' || *end == 'k')) value <<= 10;
  if (end != nullptr && (*end == 'M' || *end == 'm')) value <<= 20;
  if (end != nullptr && (*end == 'G' || *end == 'g')) value <<= 30;
  return value;
}

bool ParseOptions(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
    auto take = [&]() {
      ++i;
      return value;
    };
    if (arg == "--json") {
      o->json = true;
    } else if (arg == "--wrong-scatter") {
      o->wrong_scatter = true;
    } else if (arg == "--smoke") {
      o->min_step = 64 << 10;
      o->max_step = 128 << 10;
      o->bytes_per_case = 4 << 20;
    } else if (value == nullptr) {
      fprintf(stderr, "devmem-rx-pipeline-bench: %s needs a value\n", arg.c_str());
      return false;
    } else if (arg == "-b") {
      o->min_step = ParseBytes(take());
    } else if (arg == "-e") {
      o->max_step = ParseBytes(take());
    } else if (arg == "-f") {
      o->factor = ParseBytes(take());
    } else if (arg == "--bytes") {
      o->bytes_per_case = ParseBytes(take());
    } else if (arg == "--depth") {
      o->depth = static_cast<size_t>(ParseBytes(take()));
    } else if (arg == "--verify-steps") {
      o->verify_steps = ParseBytes(take());
    } else if (arg == "--region-bytes") {
      o->region_bytes = ParseBytes(take());
    } else if (arg == "--linear-every") {
      o->nic.linear_every = static_cast<uint32_t>(ParseBytes(take()));
    } else if (arg == "--linear-bytes") {
      o->nic.linear_bytes = static_cast<uint32_t>(ParseBytes(take()));
    } else if (arg == "--gpu") {
      o->gpu = atoi(take());
    } else if (arg == "--consumer") {
      const std::string v = take();
      if (v == "host")
        o->consumers = {ConsumerKind::kHostScatter};
      else if (v == "kernel")
        o->consumers = {ConsumerKind::kKernelScatter};
      else if (v == "unpack")
        o->consumers = {ConsumerKind::kNcclUnpack};
      else if (v != "all")
        return false;
    } else if (arg == "--frags") {
      const std::string v = take();
      if (v == "page")
        o->mtu_frags = {false};
      else if (v == "mtu")
        o->mtu_frags = {true};
      else if (v != "all")
        return false;
    } else if (arg == "--page") {
      const std::string v = take();
      if (v == "all") continue;
      const uint64_t page = ParseBytes(v.c_str());
      if (page != 4096 && page != 16384) return false;
      o->niovs = {static_cast<uint32_t>(page)};
    } else {
      fprintf(stderr, "devmem-rx-pipeline-bench: unknown option %s\n", arg.c_str());
      return false;
    }
  }
  if (o->min_step == 0 || o->max_step < o->min_step || o->factor < 2 || o->depth == 0 ||
      o->depth > 32 || o->nic.linear_bytes > 1024) {
    fprintf(stderr,
            "devmem-rx-pipeline-bench: need 0 < MIN <= MAX, FACTOR >= 2, 1 <= depth <= 32, "
            "linear bytes <= 1024\n");
    return false;
  }
  return true;
}

// Why a consumer cannot run on this machine, or "".
std::string SkipReason(ConsumerKind consumer, int gpu) {
  if (consumer == ConsumerKind::kHostScatter) return "";
  if (consumer == ConsumerKind::kKernelScatter && !gpu::BuiltWithCudaKernels()) {
    return "built without nvcc: the plugin's scatter kernel is not in this build";
  }
  Result<const CudaDriver*> driver = CudaDriver::Get();
  if (!driver.ok()) return "no CUDA driver (" + driver.status().message() + ")";
  Result<int> count = driver.value()->DeviceCount();
  if (!count.ok()) return "no CUDA device (" + count.status().message() + ")";
  if (gpu >= count.value()) {
    return Format("no GPU %d (%d CUDA device%s)", gpu, count.value(),
                  count.value() == 1 ? "" : "s");
  }
  return "";
}

// NCCL's unpack takes at most 2048 entries per step (unpack_queue.h kMaxMetasPerSlot); a step
// of frags that never merge needs one per frag.
std::string UnpackRefusal(const CaseSpec& spec) {
  const uint64_t frags = spec.step_bytes / spec.profile.unit_bytes + 2;
  if (frags <= unpack::kMaxMetasPerSlot) return "";
  return Format("a %llu-byte step of %s frags is up to %llu unpack entries, NCCL takes %u per step",
                static_cast<unsigned long long>(spec.step_bytes), spec.profile.name.c_str(),
                static_cast<unsigned long long>(frags), unpack::kMaxMetasPerSlot);
}

// A message as a JSON string's contents.
std::string JsonEscape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(static_cast<unsigned char>(c) < 0x20 ? ' ' : c);
  }
  return out;
}

double Percentile(std::vector<double> samples, double p) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  const size_t at = static_cast<size_t>(p * static_cast<double>(samples.size() - 1) + 0.5);
  return samples[std::min(at, samples.size() - 1)];
}

std::string SizeText(uint64_t bytes) {
  if (bytes >= (1 << 20) && bytes % (1 << 20) == 0)
    return Format("%lluM", static_cast<unsigned long long>(bytes >> 20));
  if (bytes >= 1024 && bytes % 1024 == 0)
    return Format("%lluK", static_cast<unsigned long long>(bytes >> 10));
  return Format("%llu", static_cast<unsigned long long>(bytes));
}

void PrintHeader(bool json) {
  if (json) return;
  printf("# devmem receive pipeline: synthetic NIC -> DevmemFragReceiver -> consumer -> tokens\n");
  printf("# %-14s %-12s %6s %7s %10s %8s %9s %6s %7s %9s %9s %9s %s\n", "consumer", "frags", "step",
         "steps", "recv/s", "GB/s", "cpu s/GB", "cores", "nic %", "rel p50us", "rel p99us",
         "recvmsg/st", "check");
}

// JSON: one line per case. The table: one line per reason and consumer.
// JSON: one line per case. The table: one line for a consumer that cannot run at all.
void PrintSkip(const CaseSpec& spec, const std::string& why, bool whole_consumer, bool json,
               std::string* last_table_skip) {
  if (!json && whole_consumer) {
    const std::string key = std::string(ConsumerName(spec.consumer)) + why;
    if (key != *last_table_skip) {
      printf("  %-14s every case skipped: %s\n", ConsumerName(spec.consumer), why.c_str());
    }
    *last_table_skip = key;
    return;
  }
  if (json) {
    printf(
        "{\"bench\":\"rx-pipeline\",\"consumer\":\"%s\",\"frags\":\"%s\",\"step_bytes\":%llu,"
        "\"skipped\":\"%s\"}\n",
        ConsumerName(spec.consumer), spec.profile.name.c_str(),
        static_cast<unsigned long long>(spec.step_bytes), JsonEscape(why).c_str());
  } else {
    printf("  %-14s %-12s %6s  skipped: %s\n", ConsumerName(spec.consumer),
           spec.profile.name.c_str(), SizeText(spec.step_bytes).c_str(), why.c_str());
  }
}

void PrintError(const CaseSpec& spec, const std::string& why, bool json) {
  if (json) {
    printf(
        "{\"bench\":\"rx-pipeline\",\"consumer\":\"%s\",\"frags\":\"%s\",\"step_bytes\":%llu,"
        "\"error\":\"%s\"}\n",
        ConsumerName(spec.consumer), spec.profile.name.c_str(),
        static_cast<unsigned long long>(spec.step_bytes), JsonEscape(why).c_str());
  } else {
    printf("  %-14s %-12s %6s  FAILED: %s\n", ConsumerName(spec.consumer),
           spec.profile.name.c_str(), SizeText(spec.step_bytes).c_str(), why.c_str());
  }
}

void PrintResult(const CaseSpec& spec, const CaseResult& r, bool json) {
  const double gb = static_cast<double>(r.bytes) / 1e9;
  const double receives_per_s = r.seconds > 0 ? static_cast<double>(r.steps) / r.seconds : 0;
  const double gbps = r.seconds > 0 ? gb / r.seconds : 0;
  const double cpu_per_gb = gb > 0 ? r.thread_cpu_seconds / gb : 0;
  const double plugin_cpu_per_gb = gb > 0 ? (r.thread_cpu_seconds - r.stand_in_seconds) / gb : 0;
  const double cores = r.seconds > 0 ? r.process_cpu_seconds / r.seconds : 0;
  const double stand_in_share = r.seconds > 0 ? r.stand_in_seconds / r.seconds : 0;
  const double p50 = Percentile(r.release_latency_us, 0.50);
  const double p99 = Percentile(r.release_latency_us, 0.99);
  const double worst = Percentile(r.release_latency_us, 1.0);
  const double recvmsg_per_step =
      r.steps > 0 ? static_cast<double>(r.nic.recvmsg_calls) / static_cast<double>(r.steps) : 0;
  const char* check = r.check_passed ? "passed" : "FAILED";
  if (json) {
    printf(
        "{\"bench\":\"rx-pipeline\",\"consumer\":\"%s\",\"frags\":\"%s\",\"step_bytes\":%llu,"
        "\"depth\":%zu,\"region_bytes\":%llu,\"steps\":%llu,\"bytes\":%llu,\"seconds\":%.6f,"
        "\"receives_per_s\":%.1f,\"gbps\":%.3f,\"thread_cpu_s_per_gb\":%.5f,"
        "\"plugin_cpu_s_per_gb\":%.5f,\"process_cores\":%.3f,\"stand_in_share\":%.3f,"
        "\"release_latency_us_p50\":%.2f,\"release_latency_us_p99\":%.2f,"
        "\"release_latency_us_max\":%.2f,\"recvmsg_calls\":%llu,\"frags_described\":%llu,"
        "\"linear_bytes\":%llu,\"tokens_issued\":%llu,\"tokens_released\":%llu,"
        "\"dontneed_calls\":%llu,\"pool_empty\":%llu,\"verify_steps\":%llu,\"check\":\"%s\"",
        ConsumerName(spec.consumer), spec.profile.name.c_str(),
        static_cast<unsigned long long>(spec.step_bytes), spec.depth,
        static_cast<unsigned long long>(r.region_bytes), static_cast<unsigned long long>(r.steps),
        static_cast<unsigned long long>(r.bytes), r.seconds, receives_per_s, gbps, cpu_per_gb,
        plugin_cpu_per_gb, cores, stand_in_share, p50, p99, worst,
        static_cast<unsigned long long>(r.nic.recvmsg_calls),
        static_cast<unsigned long long>(r.nic.frags),
        static_cast<unsigned long long>(r.nic.linear_bytes),
        static_cast<unsigned long long>(r.nic.tokens_issued),
        static_cast<unsigned long long>(r.nic.tokens_released),
        static_cast<unsigned long long>(r.nic.release_calls),
        static_cast<unsigned long long>(r.nic.would_block),
        static_cast<unsigned long long>(spec.verify_steps), check);
    if (!r.check_detail.empty()) {
      printf(",\"check_detail\":\"%s\"", JsonEscape(r.check_detail).c_str());
    }
    printf("}\n");
    return;
  }
  printf("  %-14s %-12s %6s %7llu %10.0f %8.2f %9.4f %6.2f %6.1f%% %9.1f %9.1f %10.1f %s%s%s\n",
         ConsumerName(spec.consumer), spec.profile.name.c_str(), SizeText(spec.step_bytes).c_str(),
         static_cast<unsigned long long>(r.steps), receives_per_s, gbps, cpu_per_gb, cores,
         100 * stand_in_share, p50, p99, recvmsg_per_step, check,
         r.check_detail.empty() ? "" : ": ", r.check_detail.c_str());
}

int Main(int argc, char** argv) {
  Options o;
  if (!ParseOptions(argc, argv, &o)) {
    fprintf(stderr,
            "usage: devmem-rx-pipeline-bench [-b MIN] [-e MAX] [-f FACTOR] [--bytes PER_CASE] "
            "[--consumer host|kernel|unpack|all] [--frags page|mtu|all] [--page 4K|16K|all] "
            "[--depth N] [--verify-steps N] [--region-bytes N] [--linear-every N] "
            "[--linear-bytes N] [--gpu N] [--json] [--smoke] [--wrong-scatter]\n");
    return 2;
  }
  PrintHeader(o.json);
  int ran = 0;
  int failed = 0;
  std::string last_table_skip;
  for (ConsumerKind consumer : o.consumers) {
    const std::string skip = SkipReason(consumer, o.gpu);
    for (bool mtu : o.mtu_frags) {
      for (uint32_t niov : o.niovs) {
        for (uint64_t step = o.min_step; step <= o.max_step; step *= o.factor) {
          CaseSpec spec;
          spec.consumer = consumer;
          spec.profile = mtu ? MtuFrags(1500, niov) : PageFrags(niov);
          spec.nic = o.nic;
          spec.step_bytes = step;
          spec.depth = o.depth;
          spec.verify_steps = o.verify_steps != 0 ? o.verify_steps : 2 * o.depth;
          spec.timed_steps = std::max<uint64_t>(o.bytes_per_case / step, o.depth);
          spec.region_bytes = o.region_bytes;
          spec.gpu = o.gpu;
          spec.wrong_scatter = o.wrong_scatter;
          std::string why = skip;
          if (why.empty() && consumer == ConsumerKind::kNcclUnpack) why = UnpackRefusal(spec);
          if (!why.empty()) {
            PrintSkip(spec, why, !skip.empty(), o.json, &last_table_skip);
            continue;
          }
          Result<CaseResult> result = RunCase(spec);
          ++ran;
          if (!result.ok()) {
            ++failed;
            PrintError(spec, result.status().message(), o.json);
            continue;
          }
          if (!result.value().check_passed) ++failed;
          PrintResult(spec, result.value(), o.json);
          fflush(stdout);
        }
      }
    }
  }
  if (!o.json) printf("# %d cases ran, %d failed\n", ran, failed);
  return failed == 0 ? 0 : 1;  // skipped cases fail nothing (the smoke test asserts rows ran)
}

}  // namespace
}  // namespace devmem::perf

int main(int argc, char** argv) { return devmem::perf::Main(argc, argv); }
