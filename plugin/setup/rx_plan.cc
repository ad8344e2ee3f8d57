#include "plugin/setup/rx_plan.h"

#include <algorithm>
#include <cstdio>
#include <string>

#include "plugin/consumers/unpack_queue.h"
#include "plugin/core/log.h"
#include "plugin/devmem/rx_arena.h"
#include "plugin/setup/readiness.h"
#include "plugin/setup/rx_budget.h"

namespace devmem {
namespace {

// The smallest payload frag a NIC produces at the interface's MTU: one MSS (IPv6 and TCP
// timestamps leave the least). Without header split a frag is never smaller than this except
// at message edges.
uint64_t MinFragBytes(const NetDevice& device) {
  int mtu = 1500;
  std::string path = "/sys/class/net/" + device.name + "/mtu";
  if (FILE* f = fopen(path.c_str(), "r"); f != nullptr) {
    if (fscanf(f, "%d", &mtu) != 1) mtu = 1500;
    fclose(f);
  }
  constexpr int kHeaders = 40 + 20 + 12;  // IPv6 + TCP + timestamps
  return static_cast<uint64_t>(std::max(mtu - kHeaders, 512));
}

const char* ConsumerText(UnpackMode unpack) {
  return unpack == UnpackMode::kNccl
             ? "NCCL's device unpack (SIMPLE) + the plugin's scatter kernel (LL)"
             : "the plugin's scatter kernel";
}

// Whether NCCL's unpack can take NCCL's steps on this device; the reason if not.
std::string UnpackRefusal(const Config& config, uint64_t min_frag) {
  const uint64_t step = config.MaxNcclStepBytes();
  if (step > unpack::kMaxSliceBytes) {
    return Format(
        "NCCL's largest receive is %llu bytes (NCCL_BUFFSIZE=%llu / 4, "
        "NCCL_P2P_NET_CHUNKSIZE=%llu), above the %llu bytes one unpack step holds",
        static_cast<unsigned long long>(step),
        static_cast<unsigned long long>(config.nccl_buffsize),
        static_cast<unsigned long long>(config.nccl_p2p_net_chunk),
        static_cast<unsigned long long>(unpack::kMaxSliceBytes));
  }
  const uint64_t frags = WorstCaseFrags(step, min_frag, config.data_sockets);
  if (frags > unpack::kMaxMetasPerSlot) {
    return Format(
        "NCCL's largest receive (%llu bytes) can take %llu frags of %llu bytes, "
        "above the %u one unpack step holds",
        static_cast<unsigned long long>(step), static_cast<unsigned long long>(frags),
        static_cast<unsigned long long>(min_frag), unpack::kMaxMetasPerSlot);
  }
  return "";
}

}  // namespace

uint64_t WorstCaseFrags(uint64_t step_bytes, uint64_t min_frag_bytes, int data_sockets) {
  if (min_frag_bytes == 0) return UINT64_MAX;
  return (step_bytes + min_frag_bytes - 1) / min_frag_bytes +
         2 * static_cast<uint64_t>(std::max(data_sockets, 1));
}

std::vector<RxPlan> PlanReceivePaths(Config* config, const std::vector<NetDevice>& devices,
                                     bool gpu_present) {
  std::vector<RxPlan> plans;
  const uint64_t step = config->MaxNcclStepBytes();
  std::string unpack_refusal;
  if (config->emulate_devmem) {
    RxPlan plan;
    plan.region_bytes = config->rx_region_bytes;
    plan.arena_bytes = std::min<uint64_t>(kEmulatedCommsPerArena * plan.region_bytes,
                                          std::max(RxArena::kMaxUnpackBytes, plan.region_bytes));
    plan.budget = Format("%llu-byte emulated RX region per receive comm",
                         static_cast<unsigned long long>(plan.region_bytes));
    // Emulated frags are never smaller than half a page except at chunk edges.
    if (config->unpack == UnpackMode::kNccl) unpack_refusal = UnpackRefusal(*config, 2048);
    plans.assign(devices.size(), plan);
  } else {
    ReadinessReport host = CheckKernel();
    host.Append(CheckPrivileges());
    uint64_t arena_bytes = 0;
    for (const NetDevice& d : devices) {
      ReadinessReport report = host;
      RxPlan plan;
      report.Append(CheckNic(d, config->rx_queues, &plan.queues));
      if (report.ready()) report.Append(CheckGpus(d.pci_path));
      report.Append(CheckGpuConsumer(config->unpack));
      if (const CheckOutcome* failure = report.first_failure(); failure != nullptr) {
        plan.plain_reason =
            Format("%s %s: %s (run devmem-doctor for every check)", failure->scope.c_str(),
                   failure->check.c_str(), failure->detail.c_str());
      } else {
        RxBudget budget = PlanRxBudget(*config, plan.queues.size());
        plan.region_bytes = budget.region_bytes;
        plan.budget = budget.text;
        arena_bytes += plan.region_bytes;
        if (config->unpack == UnpackMode::kNccl && unpack_refusal.empty()) {
          unpack_refusal = UnpackRefusal(*config, MinFragBytes(d));
        }
      }
      plans.push_back(std::move(plan));
    }
    // Every devmem NIC of the process may bind to the same GPU: the arena holds them all.
    for (RxPlan& plan : plans) plan.arena_bytes = arena_bytes;
    if (config->unpack == UnpackMode::kNccl && unpack_refusal.empty() &&
        arena_bytes > RxArena::kMaxUnpackBytes) {
      unpack_refusal = Format(
          "the RX regions of this process's devmem NICs take %llu bytes of "
          "one GPU, beyond the 4 GiB NCCL's 32-bit unpack offsets reach",
          static_cast<unsigned long long>(arena_bytes));
    }
  }
  if (!unpack_refusal.empty()) {
    log::Warn(
        "NCCL_DEVMEM_UNPACK=nccl cannot be used: %s; the plugin's scatter kernel "
        "consumes every receive instead",
        unpack_refusal.c_str());
    config->unpack = UnpackMode::kPlugin;
  }
  // A receive the consumer holds whole must fit a quarter of the region (the emulated pool
  // keeps half for the oldest message; split frags use half pages).
  for (size_t i = 0; i < plans.size(); ++i) {
    RxPlan& plan = plans[i];
    if (plan.plain_reason.empty() && step > plan.region_bytes / 4) {
      plan.plain_reason = Format(
          "NCCL's largest receive (%llu bytes: NCCL_BUFFSIZE / 4 or NCCL_P2P_NET_CHUNKSIZE) is "
          "more than a quarter of the %llu-byte RX region; raise NCCL_DEVMEM_RX_REGION_BYTES",
          static_cast<unsigned long long>(step),
          static_cast<unsigned long long>(plan.region_bytes));
      log::Warn("NIC %s: %s; this NIC falls back to plain TCP", devices[i].name.c_str(),
                plan.plain_reason.c_str());
    }
  }
  const char* consumer = ConsumerText(config->unpack);
  if (config->emulate_devmem) {
    log::Info(log::kInit,
              "data path: EMULATED devmem RX on every receive connection (NCCL_DEVMEM_EMULATE=1, "
              "a test mode: payload is read with plain recv() and placed into a %s region cut "
              "into frags like a NIC would); %s; frags consumed by %s; send side plain TCP",
              gpu_present ? "GPU" : "host (no GPU)", plans.empty() ? "" : plans[0].budget.c_str(),
              gpu_present || config->unpack == UnpackMode::kNccl ? consumer : "the CPU");
    return plans;
  }
  for (size_t i = 0; i < plans.size(); ++i) {
    const RxPlan& plan = plans[i];
    if (plan.plain_reason.empty()) {
      log::Info(log::kInit,
                "NIC %s: DEVMEM RX ready (every check passed): receive payload lands in GPU "
                "memory bound to its RX queue(s), frags consumed by %s",
                devices[i].name.c_str(), consumer);
    } else {
      log::Info(log::kInit,
                "NIC %s: data path plain TCP (devmem RX unavailable, first failing check: %s); "
                "host buffers used directly, CUDA buffers staged through pinned host memory",
                devices[i].name.c_str(), plan.plain_reason.c_str());
    }
  }
  return plans;
}

}  // namespace devmem
