// devmem-frag-bench: the per-frag bookkeeping of the devmem receive path on one core —
// parsing SCM_DEVMEM_DMABUF cmsgs, building the offset table and batching tokens — with the
// kernel's control-buffer layout. items_per_second counts frags.
#include <benchmark/benchmark.h>
#include <sys/socket.h>

#include <cstring>
#include <random>
#include <vector>

#include "plugin/devmem/frag_parser.h"
#include "plugin/devmem/offset_table.h"
#include "plugin/devmem/token_batch.h"
#include "plugin/devmem/uapi.h"

namespace {

using namespace devmem;  // NOLINT(google-build-using-namespace): benchmark file

// One recvmsg worth of cmsgs: `frags` page frags from a shuffled page pool, consecutive tokens
// (the kernel hands them out in order per socket).
struct Receive {
  std::vector<uint8_t> control;
  msghdr msg{};
  ssize_t bytes = 0;
};

Receive MakeReceive(int frags, uint64_t region_pages, uint32_t first_token, std::mt19937* rng) {
  Receive r;
  r.control.resize(static_cast<size_t>(frags) * CMSG_SPACE(sizeof(uapi::DmabufCmsg)));
  uint8_t* at = r.control.data();
  for (int i = 0; i < frags; ++i) {
    auto* cm = reinterpret_cast<cmsghdr*>(at);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = uapi::kScmDevmemDmabuf;
    cm->cmsg_len = CMSG_LEN(sizeof(uapi::DmabufCmsg));
    uapi::DmabufCmsg frag{((*rng)() % region_pages) * 4096, 4096, first_token + i, 1, 0};
    memcpy(CMSG_DATA(cm), &frag, sizeof(frag));
    at += CMSG_SPACE(sizeof(uapi::DmabufCmsg));
    r.bytes += 4096;
  }
  r.msg.msg_control = r.control.data();
  r.msg.msg_controllen = r.control.size();
  return r;
}

int NoSyscall(int /*fd*/, const uapi::DmabufToken* entries, size_t count) {
  benchmark::DoNotOptimize(entries);
  return static_cast<int>(count);
}

// Parse + offset table + token batch + batched release (the syscall itself excluded, since
// its cost is per 128 ranges / 1024 frags, not per frag).
void BM_FragPipeline(benchmark::State& state) {
  const int frags_per_recv = static_cast<int>(state.range(0));
  std::mt19937 rng(1);
  const uint64_t region_pages = 64 << 10;  // a 256 MiB region
  std::vector<Receive> receives;
  for (int i = 0; i < 16; ++i) {
    receives.push_back(
        MakeReceive(frags_per_recv, region_pages, static_cast<uint32_t>(i * frags_per_recv), &rng));
  }
  const RegionBinding binding{1, region_pages * 4096};
  std::vector<StreamSegment> segments;
  segments.reserve(static_cast<size_t>(frags_per_recv));
  OffsetTable table;
  TokenBatch tokens;
  TokenReleaseStats stats;
  size_t next = 0;
  uint64_t dst = 0;
  for (auto _ : state) {
    Receive& r = receives[next++ % receives.size()];
    segments.clear();
    Result<ParsedReceive> parsed = ParseDevmemReceive(r.msg, r.bytes, binding, 0, &segments);
    if (!parsed.ok()) state.SkipWithError(parsed.status().message().c_str());
    dst = table.Append(segments.data(), segments.size(), dst);
    for (const StreamSegment& s : segments) tokens.Add(s.token);
    if (tokens.tokens() >= 1024) {
      (void)tokens.Release(-1, &stats, NoSyscall);
      table.Clear();
      dst = 0;
    }
  }
  state.SetItemsProcessed(state.iterations() * frags_per_recv);
  state.counters["release_calls"] = static_cast<double>(stats.calls);
}
BENCHMARK(BM_FragPipeline)->Arg(16)->Arg(64)->Arg(256);

// Reference in the same run: touching each frag's 24-byte cmsg once (a memcpy of the control
// buffer), the floor any parser pays.
void BM_ControlBufferCopy(benchmark::State& state) {
  const int frags = static_cast<int>(state.range(0));
  std::mt19937 rng(1);
  Receive r = MakeReceive(frags, 64 << 10, 0, &rng);
  std::vector<uint8_t> copy(r.control.size());
  for (auto _ : state) {
    memcpy(copy.data(), r.control.data(), r.control.size());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * frags);
}
BENCHMARK(BM_ControlBufferCopy)->Arg(256);

}  // namespace

BENCHMARK_MAIN();
