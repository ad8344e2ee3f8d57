#include "plugin/setup/rx_queue_plan.h"

#include <limits.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>

#include "plugin/devmem/nic_ethtool.h"

namespace devmem {
namespace {

std::string ReadLine(const std::string& path) {
  std::string text;
  if (FILE* f = fopen(path.c_str(), "re"); f != nullptr) {
    char buffer[64] = "";
    if (fgets(buffer, sizeof(buffer), f) != nullptr) text = buffer;
    fclose(f);
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// "/sys/devices/pci0000:00/0000:00:01.0/..." -> "pci0000:00": the root complex.
std::string RootComplex(const std::string& sysfs_path) {
  const std::string marker = "/sys/devices/";
  size_t start = sysfs_path.find(marker);
  if (start == std::string::npos) return "";
  start += marker.size();
  return sysfs_path.substr(start, sysfs_path.find('/', start) - start);
}

}  // namespace

std::vector<uint32_t> DevmemQueuePool(const std::vector<uint32_t>& configured,
                                      const std::vector<RxQueueInfo>& rx,
                                      const std::optional<std::vector<uint32_t>>& rss) {
  if (!configured.empty()) return configured;  // the operator's list wins
  if (rx.size() < 2) return {};
  std::vector<uint32_t> pool;
  if (rss.has_value() && !rss->empty()) {
    const std::set<uint32_t> spread(rss->begin(), rss->end());
    for (const RxQueueInfo& queue : rx) {
      if (spread.count(queue.id) == 0) pool.push_back(queue.id);
    }
    // Every queue out of RSS would leave ordinary traffic nowhere: not a devmem layout.
    if (pool.size() == rx.size()) pool.clear();
  }
  if (pool.empty()) pool = {rx.back().id};
  return pool;
}

std::vector<uint32_t> QueuesToCheck(const std::vector<uint32_t>& configured,
                                    const std::vector<RxQueueInfo>& rx,
                                    const std::optional<std::vector<uint32_t>>& rss) {
  const std::vector<uint32_t> pool = DevmemQueuePool(configured, rx, rss);
  std::vector<uint32_t> free;
  for (uint32_t id : pool) {
    auto it = std::find_if(rx.begin(), rx.end(), [&](const RxQueueInfo& q) { return q.id == id; });
    if (it == rx.end()) return pool;
    if (it->dmabuf_id == 0) free.push_back(id);
  }
  return free.empty() ? pool : free;
}

int GpusNearNic(const std::string& nic_pci_path, const std::string& pci_devices_dir) {
  const std::string nic_root = RootComplex(nic_pci_path);
  int near = 0;
  int all = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(pci_devices_dir, ec)) {
    const std::string dir = entry.path().string();
    if (ReadLine(dir + "/vendor") != "0x10de") continue;
    const std::string pci_class = ReadLine(dir + "/class");
    if (pci_class.rfind("0x0300", 0) != 0 && pci_class.rfind("0x0302", 0) != 0) continue;
    ++all;
    char resolved[PATH_MAX];
    if (!nic_root.empty() && realpath(dir.c_str(), resolved) != nullptr &&
        RootComplex(resolved) == nic_root) {
      ++near;
    }
  }
  return std::max(near > 0 ? near : all, 1);
}

size_t QueuesPerBinder(size_t pool_size, int gpus_near_nic) {
  const size_t gpus = static_cast<size_t>(std::max(gpus_near_nic, 1));
  return std::max<size_t>(pool_size / gpus, 1);
}

Result<std::vector<uint32_t>> ChooseFreeQueues(const std::vector<uint32_t>& pool,
                                               const std::vector<RxQueueInfo>& rx,
                                               const std::vector<QueueClaim>& live_claims,
                                               size_t want) {
  std::vector<uint32_t> chosen;
  std::string taken;
  for (uint32_t id : pool) {
    auto queue =
        std::find_if(rx.begin(), rx.end(), [&](const RxQueueInfo& q) { return q.id == id; });
    auto claim = std::find_if(live_claims.begin(), live_claims.end(),
                              [&](const QueueClaim& c) { return c.queue == id; });
    std::string holder;
    if (queue == rx.end()) {
      holder = "does not exist";
    } else if (claim != live_claims.end()) {
      holder = Format("claimed by %s for GPU %d", claim->owner.ToString().c_str(), claim->gpu);
    } else if (queue->dmabuf_id != 0) {
      holder = Format("bound to dmabuf %u by a process outside this plugin's registry",
                      queue->dmabuf_id);
    }
    if (holder.empty()) {
      if (chosen.size() < want) chosen.push_back(id);
    } else {
      taken += Format("%squeue %u %s", taken.empty() ? "" : "; ", id, holder.c_str());
    }
  }
  if (chosen.empty()) {
    return Status::Error(ErrorKind::kSystem,
                         "no free devmem RX queue: every queue of the pool %s is taken (%s)",
                         JoinQueueIds(pool).c_str(), taken.empty() ? "empty pool" : taken.c_str());
  }
  return chosen;
}

Result<std::vector<uint32_t>> ChooseQueuesForBinder(const HostRegistry& registry,
                                                    const std::string& ifname,
                                                    const std::vector<uint32_t>& pool,
                                                    const std::vector<RxQueueInfo>& rx,
                                                    size_t want) {
  Result<std::vector<QueueClaim>> claims = registry.Queues(ifname);
  if (!claims.ok()) return claims.status();
  std::vector<QueueClaim> live;
  for (const QueueClaim& claim : claims.value()) {
    if (OwnerLiveness(claim.owner, registry.options()) != Liveness::kGone) live.push_back(claim);
  }
  return ChooseFreeQueues(pool, rx, live, want);
}

Status RecordQueueClaims(HostRegistry& registry, const std::string& ifname,
                         const std::vector<uint32_t>& queues, int gpu) {
  Result<Owner> owner = ThisProcess(registry.options());
  if (!owner.ok()) return owner.status();
  for (uint32_t queue : queues) {
    DEVMEM_RETURN_IF_ERROR(registry.Add(QueueClaim{ifname, queue, gpu, owner.value()}));
  }
  return Status::Ok();
}

ReadinessReport DescribeSteering(const NetDevice& nic, const std::vector<uint32_t>& configured) {
  ReadinessReport report;
  if (nic.loopback) return report;
  const std::string& name = nic.name;
  Result<NetdevNetlink> netdev = NetdevNetlink::Open();
  Result<std::vector<RxQueueInfo>> rx = netdev.ok()
                                            ? netdev->RxQueues(nic.ifindex)
                                            : Result<std::vector<RxQueueInfo>>(netdev.status());
  Result<std::shared_ptr<HostRegistry>> registry = HostRegistry::Open();
  const RegistryOptions options = registry.ok() ? registry.value()->options() : RegistryOptions{};
  std::vector<QueueClaim> claims;
  if (registry.ok()) {
    Result<std::vector<QueueClaim>> listed = registry.value()->Queues(name);
    if (listed.ok()) claims = listed.value();
  }
  if (!rx.ok()) {
    report.Add(name, "queue plan", Verdict::kSkip, rx.status().message());
  } else {
    std::optional<std::vector<uint32_t>> rss;
    if (Result<std::vector<uint32_t>> table = QueryRssIndirection(name); table.ok()) {
      rss = std::move(table).value();
    }
    const std::vector<uint32_t> pool = DevmemQueuePool(configured, rx.value(), rss);
    const int gpus = GpusNearNic(nic.pci_path);
    std::string holders;
    for (uint32_t id : pool) {
      auto queue =
          std::find_if(rx->begin(), rx->end(), [&](const RxQueueInfo& q) { return q.id == id; });
      auto claim = std::find_if(claims.begin(), claims.end(),
                                [&](const QueueClaim& c) { return c.queue == id; });
      std::string state = "free";
      if (queue == rx->end()) {
        state = "missing";
      } else if (claim != claims.end()) {
        state = Format("%s by %s GPU %d", LivenessName(OwnerLiveness(claim->owner, options)),
                       claim->owner.ToString().c_str(), claim->gpu);
        if (queue->dmabuf_id != 0) state += Format(", dmabuf %u", queue->dmabuf_id);
      } else if (queue->dmabuf_id != 0) {
        state = Format("dmabuf %u (not this plugin's)", queue->dmabuf_id);
      }
      holders += Format("; queue %u: %s", id, state.c_str());
    }
    report.Add(name, "queue plan", pool.empty() ? Verdict::kSkip : Verdict::kPass,
               pool.empty() ? std::string("fewer than 2 RX queues: no devmem pool")
                            : Format("pool %s (%s), %d GPU(s) near, %zu queue(s) per GPU%s",
                                     JoinQueueIds(pool).c_str(),
                                     configured.empty() ? "queues outside RSS" : "configured", gpus,
                                     QueuesPerBinder(pool.size(), gpus), holders.c_str()));
  }
  Result<FlowRuleTable> table = QueryFlowRuleTable(name);
  std::string books;
  if (!registry.ok()) {
    books = "registry: " + registry.status().message();
  } else {
    Result<std::vector<RuleRecord>> rules = registry.value()->Rules(name);
    size_t live = 0;
    size_t dead = 0;
    if (rules.ok()) {
      for (const RuleRecord& record : rules.value()) {
        (OwnerLiveness(record.owner, options) == Liveness::kGone ? dead : live) += 1;
      }
    }
    books = Format("%zu recorded rule(s) of live processes, %zu of dead ones (in %s)", live, dead,
                   registry.value()->directory().c_str());
    if (dead > 0) {
      report.Add(name, "flow rules", Verdict::kFail,
                 (table.ok() ? Format("%zu of %u locations used; ", table->used.size(), table->size)
                             : std::string()) +
                     books,
                 "devmem-doctor --cleanup");
      return report;
    }
  }
  if (table.ok()) {
    books = (table->driver_selects
                 ? Format("table of %u, locations chosen by the driver; ", table->size)
                 : Format("%zu of %u locations used; ", table->used.size(), table->size)) +
            books;
    report.Add(name, "flow rules", Verdict::kPass, books);
  } else {
    report.Add(name, "flow rules", Verdict::kSkip, table.status().message() + "; " + books);
  }
  return report;
}

}  // namespace devmem
