#include "plugin/setup/rx_plan.h"

#include <algorithm>
#include <cstdio>
#include <string>

#include "plugin/consumers/unpack_queue.h"
#include "plugin/core/log.h"
#include "plugin/devmem/nic_ethtool.h"
#include "plugin/devmem/rx_arena.h"
#include "plugin/setup/readiness.h"
#include "plugin/setup/rx_budget.h"

namespace devmem {
namespace {

// The interface's MTU (sysfs); 1500 where it cannot be read.
uint32_t ReadMtu(const NetDevice& device) {
  int mtu = 1500;
  std::string path = "/sys/class/net/" + device.name + "/mtu";
  if (FILE* f = fopen(path.c_str(), "re"); f != nullptr) {
    if (fscanf(f, "%d", &mtu) != 1 || mtu <= 0) mtu = 1500;
    fclose(f);
  }
  return static_cast<uint32_t>(mtu);
}

// What the NIC's driver says about its frags and rings (ethtool); what it does not say is
// assumed as frag_geometry.h and rx_budget.h say.
struct NicRxFacts {
  FragGeometry geometry;
  RxQueueFacts queues;
};
NicRxFacts ReadNicRxFacts(const NetDevice& device, uint32_t niov_bytes, size_t bound_queues) {
  RingSettings rings;
  if (Result<RingSettings> read = QueryRings(device.ifindex); read.ok()) rings = read.value();
  NicRxFacts facts;
  facts.geometry = FragGeometry::ForNic(ReadMtu(device), rings.rx_buf_len.value_or(0), niov_bytes);
  facts.queues.bound_queues = bound_queues;
  facts.queues.ring_entries = rings.rx_ring;
  if (Result<std::string> driver = QueryDriver(device.name); driver.ok()) {
    facts.queues.driver = driver.value();
  }
  return facts;
}

const char* ConsumerText(UnpackMode unpack) {
  return unpack == UnpackMode::kNccl
             ? "NCCL's device unpack (SIMPLE) + the plugin's scatter kernel (LL)"
             : "the plugin's scatter kernel";
}

// The runs one receive of `step` bytes arrives in: its chunks (NCCL_DEVMEM_CHUNK_SIZE) dealt
// over the data sockets, each read up to its end, so each cut at both ends.
uint64_t ReceiveRuns(const Config& config, uint64_t step) {
  return (step + config.chunk_bytes - 1) / config.chunk_bytes +
         static_cast<uint64_t>(std::max(config.data_sockets, 1));
}

}  // namespace

std::string UnpackRefusal(const Config& config, const FragGeometry& geometry) {
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
  const uint64_t frags = geometry.MaxFrags(step, ReceiveRuns(config, step));
  if (frags > unpack::kMaxMetasPerSlot) {
    return Format(
        "NCCL's largest receive (%llu bytes) can take %llu frags (%s), above the %u one unpack "
        "step holds; a smaller NCCL_BUFFSIZE, a larger MTU or NCCL_DEVMEM_RX_PAGE_SIZE lowers it",
        static_cast<unsigned long long>(step), static_cast<unsigned long long>(frags),
        geometry.Describe().c_str(), unpack::kMaxMetasPerSlot);
  }
  return "";
}

uint32_t RxPageBytes(const Config& config) {
  return config.rx_page_bytes != 0 ? config.rx_page_bytes : KernelPageBytes();
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
    plan.geometry = FragGeometry::ForEmulation(RxPageBytes(*config));
    plan.budget = Format("%llu-byte emulated RX region per receive comm, %s",
                         static_cast<unsigned long long>(plan.region_bytes),
                         plan.geometry.Describe().c_str());
    if (config->unpack == UnpackMode::kNccl) unpack_refusal = UnpackRefusal(*config, plan.geometry);
    plans.assign(devices.size(), plan);
  } else {
    ReadinessReport host = CheckKernel();
    host.Append(CheckPrivileges());
    // NCCL_DEVMEM_RX_PAGE_SIZE is sent only where it differs from what the kernel does anyway,
    // so that a kernel without the attribute is asked nothing it would refuse.
    const uint32_t niov_bytes = RxPageBytes(*config);
    const std::string page_refusal =
        config->rx_page_bytes != 0 ? RxPageSizeRefusal(config->rx_page_bytes, KernelPageBytes())
                                   : std::string();
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
      } else if (!page_refusal.empty()) {
        plan.plain_reason = page_refusal;
        log::Warn("NIC %s: %s; this NIC falls back to plain TCP", d.name.c_str(),
                  page_refusal.c_str());
      } else {
        const NicRxFacts facts = ReadNicRxFacts(d, niov_bytes, plan.queues.size());
        plan.geometry = facts.geometry;
        plan.rx_page_bytes = niov_bytes != KernelPageBytes() ? niov_bytes : 0;
        RxBudget budget = PlanRxBudget(*config, facts.queues, facts.geometry);
        if (!budget.refusal.empty()) {
          plan.plain_reason = budget.refusal;
          log::Warn("NIC %s: %s; this NIC falls back to plain TCP", d.name.c_str(),
                    budget.refusal.c_str());
        } else {
          plan.region_bytes = budget.region_bytes;
          plan.budget = budget.text;
          arena_bytes += plan.region_bytes;
          if (config->unpack == UnpackMode::kNccl && unpack_refusal.empty()) {
            unpack_refusal = UnpackRefusal(*config, facts.geometry);
          }
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
  // A receive the consumer holds whole must fit half the region in the worst case: the
  // emulated pool keeps half for the oldest message, and every frag of it may take a page of
  // its own (a niov on a real NIC).
  for (size_t i = 0; i < plans.size(); ++i) {
    RxPlan& plan = plans[i];
    if (!plan.plain_reason.empty()) continue;
    const uint64_t held = plan.geometry.MaxNiovBytesPinned(step);
    if (held > plan.region_bytes / 2) {
      plan.plain_reason = Format(
          "NCCL's largest receive (%llu bytes: NCCL_BUFFSIZE / 4 or NCCL_P2P_NET_CHUNKSIZE) can "
          "hold %llu bytes of RX pages (%s), more than half the %llu-byte RX region; raise "
          "NCCL_DEVMEM_RX_REGION_BYTES",
          static_cast<unsigned long long>(step), static_cast<unsigned long long>(held),
          plan.geometry.Describe().c_str(), static_cast<unsigned long long>(plan.region_bytes));
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
