#include "plugin/setup/readiness.h"

#include "gpu/scatter_engine.h"

#include <limits.h>
#include <linux/capability.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "plugin/core/unique_fd.h"
#include "plugin/cuda/cuda_driver.h"
#include "plugin/devmem/netdev_netlink.h"
#include "plugin/devmem/nic_ethtool.h"
#include "plugin/devmem/uapi.h"
#include "plugin/setup/tx_setup.h"

namespace devmem {
namespace {

std::string JsonEscape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += Format("\\u%04x", c);
        } else {
          out += c;
        }
    }
  }
  return out;
}

}  // namespace

const char* VerdictName(Verdict verdict) {
  switch (verdict) {
    case Verdict::kPass:
      return "PASS";
    case Verdict::kFail:
      return "FAIL";
    case Verdict::kSkip:
      return "SKIP";
  }
  return "?";
}

void ReadinessReport::Add(std::string scope, std::string check, Verdict verdict, std::string detail,
                          std::string fix) {
  checks_.push_back({std::move(scope), std::move(check), verdict, std::move(detail),
                     verdict == Verdict::kFail ? std::move(fix) : std::string()});
}

void ReadinessReport::Append(const ReadinessReport& other) {
  checks_.insert(checks_.end(), other.checks_.begin(), other.checks_.end());
}

const CheckOutcome* ReadinessReport::first_failure() const {
  for (const CheckOutcome& c : checks_) {
    if (c.verdict == Verdict::kFail) return &c;
  }
  return nullptr;
}

std::string ReadinessReport::ToText() const {
  std::string out;
  for (const CheckOutcome& c : checks_) {
    out += Format("%s  %-10s %-18s %s", VerdictName(c.verdict), c.scope.c_str(), c.check.c_str(),
                  c.detail.c_str());
    if (!c.fix.empty()) out += "  [fix: " + c.fix + "]";
    out += "\n";
  }
  return out;
}

std::string ReadinessReport::ToJson() const {
  std::string out = Format("{\"ready\": %s, \"checks\": [", ready() ? "true" : "false");
  for (size_t i = 0; i < checks_.size(); ++i) {
    const CheckOutcome& c = checks_[i];
    out += Format("%s{\"scope\": \"%s\", \"check\": \"%s\", \"result\": \"%s\", \"detail\": \"%s\"",
                  i == 0 ? "" : ", ", JsonEscape(c.scope).c_str(), JsonEscape(c.check).c_str(),
                  VerdictName(c.verdict), JsonEscape(c.detail).c_str());
    if (!c.fix.empty()) out += Format(", \"fix\": \"%s\"", JsonEscape(c.fix).c_str());
    out += "}";
  }
  return out + "]}";
}

ReadinessReport CheckKernel() {
  ReadinessReport report;
  Result<NetdevNetlink> netdev = NetdevNetlink::Open();
  if (netdev.ok()) {
    report.Add("kernel", "netdev family", Verdict::kPass,
               Format("generic netlink \"netdev\" family id %d", netdev->family_id()));
  } else {
    report.Add("kernel", "netdev family", Verdict::kFail, netdev.status().message(),
               "boot Linux >= 6.12 built with CONFIG_NET_DEVMEM=y");
  }
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  // A fresh socket holds no token: returning one is a no-op (0 freed) on a devmem kernel and
  // ENOPROTOOPT elsewhere.
  uapi::DmabufToken unknown{1, 1};
  const int rc =
      setsockopt(fd.get(), SOL_SOCKET, uapi::kSoDevmemDontneed, &unknown, sizeof(unknown));
  if (rc >= 0) {
    report.Add("kernel", "devmem sockopts", Verdict::kPass, "SO_DEVMEM_DONTNEED accepted");
  } else {
    report.Add("kernel", "devmem sockopts", Verdict::kFail,
               Status::Errno(errno, "SO_DEVMEM_DONTNEED").message(),
               "boot a kernel with CONFIG_NET_DEVMEM=y and CONFIG_PAGE_POOL=y");
  }
  return report;
}

ReadinessReport CheckGpuConsumer(UnpackMode unpack) {
  ReadinessReport report;
  if (unpack == UnpackMode::kNccl) {
    report.Add("build", "GPU consumer", Verdict::kPass,
               "NCCL's device unpack (NCCL_DEVMEM_UNPACK=nccl); LL receives need the kernel: " +
                   std::string(gpu::BuiltWithCudaKernels() ? "built in" : "MISSING"));
  } else if (gpu::BuiltWithCudaKernels()) {
    report.Add("build", "GPU consumer", Verdict::kPass,
               "the plugin's CUDA scatter kernel (NCCL_DEVMEM_UNPACK=plugin)");
  } else {
    report.Add("build", "GPU consumer", Verdict::kFail,
               "this build has no CUDA kernels (nvcc was missing when it was built)",
               "rebuild with the CUDA toolkit installed, or set NCCL_DEVMEM_UNPACK=nccl");
  }
  return report;
}

ReadinessReport CheckPrivileges() {
  ReadinessReport report;
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &header, data) != 0) {
    report.Add("privileges", "CAP_NET_ADMIN", Verdict::kFail,
               Status::Errno(errno, "capget").message(), "run as root");
    return report;
  }
  const bool admin = (data[CAP_NET_ADMIN / 32].effective & (1u << (CAP_NET_ADMIN % 32))) != 0;
  report.Add("privileges", "CAP_NET_ADMIN", admin ? Verdict::kPass : Verdict::kFail,
             admin ? "effective" : "missing: bind-rx and flow steering rules need it",
             "run as root, or: setcap cap_net_admin+ep <your launcher>");
  return report;
}

ReadinessReport CheckNic(const NetDevice& device, const std::vector<uint32_t>& queues,
                         std::vector<uint32_t>* chosen_queues) {
  ReadinessReport report;
  const std::string& nic = device.name;
  if (device.loopback) {
    report.Add(nic, "device", Verdict::kFail, "loopback cannot carry devmem payloads (no NIC DMA)",
               "select a physical NIC with NCCL_SOCKET_IFNAME");
    return report;
  }
  Result<std::string> driver = QueryDriver(nic);
  report.Add(nic, "driver", driver.ok() ? Verdict::kPass : Verdict::kSkip,
             driver.ok() ? driver.value() : driver.status().message());

  Result<NetdevNetlink> netdev = NetdevNetlink::Open();
  std::vector<RxQueueInfo> rx;
  if (!netdev.ok()) {
    report.Add(nic, "rx queues", Verdict::kFail, netdev.status().message(),
               "boot Linux >= 6.12 built with CONFIG_NET_DEVMEM=y");
  } else {
    Result<std::vector<RxQueueInfo>> listed = netdev->RxQueues(device.ifindex);
    if (!listed.ok()) {
      report.Add(nic, "rx queues", Verdict::kFail, listed.status().message(), "");
    } else {
      rx = listed.value();
    }
  }
  std::vector<uint32_t> chosen = queues;
  if (!rx.empty()) {
    if (chosen.empty() && rx.size() >= 2) chosen = {rx.back().id};
    std::string problem;
    if (rx.size() < 2) {
      problem = Format("%zu RX queue(s): one must stay for ordinary traffic", rx.size());
    }
    for (uint32_t q : chosen) {
      auto it = std::find_if(rx.begin(), rx.end(), [&](const RxQueueInfo& r) { return r.id == q; });
      if (it == rx.end()) {
        problem = Format("queue %u does not exist (the NIC has %zu RX queues)", q, rx.size());
      } else if (it->dmabuf_id != 0) {
        problem = Format("queue %u is already bound to dmabuf %u", q, it->dmabuf_id);
      }
    }
    if (problem.empty()) {
      report.Add(
          nic, "rx queues", Verdict::kPass,
          Format("%zu RX queues; devmem queue(s) %s", rx.size(), JoinQueueIds(chosen).c_str()));
    } else {
      report.Add(nic, "rx queues", Verdict::kFail, problem,
                 Format("ethtool -L %s combined <N>, and NCCL_DEVMEM_RX_QUEUES=<free queue ids>",
                        nic.c_str()));
    }
  }
  if (chosen_queues != nullptr) *chosen_queues = chosen;

  Result<RingSettings> rings = QueryRings(device.ifindex);
  if (!rings.ok()) {
    const std::string fix = Format(
        "ethtool -G %s tcp-data-split on hds-thresh 0 (needs a driver "
        "with header split)",
        nic.c_str());
    report.Add(nic, "tcp-data-split", Verdict::kFail, rings.status().message(), fix);
    report.Add(nic, "hds-thresh", Verdict::kFail, rings.status().message(), fix);
  } else {
    const bool split = rings->tcp_data_split.has_value() && *rings->tcp_data_split == 2;
    report.Add(nic, "tcp-data-split", split ? Verdict::kPass : Verdict::kFail,
               rings->tcp_data_split.has_value()
                   ? Format("%s", *rings->tcp_data_split == 2   ? "on"
                                  : *rings->tcp_data_split == 1 ? "off"
                                                                : "auto (not forced on)")
                   : std::string("driver does not report header split"),
               Format("ethtool -G %s tcp-data-split on", nic.c_str()));
    if (!rings->hds_thresh.has_value()) {
      report.Add(nic, "hds-thresh", Verdict::kSkip, "not reported (kernel < 6.13 or driver)");
    } else {
      report.Add(nic, "hds-thresh", *rings->hds_thresh == 0 ? Verdict::kPass : Verdict::kFail,
                 Format("%u", *rings->hds_thresh),
                 Format("ethtool -G %s hds-thresh 0", nic.c_str()));
    }
  }

  Result<bool> ntuple = QueryNtupleEnabled(nic);
  report.Add(nic, "ntuple", ntuple.ok() && ntuple.value() ? Verdict::kPass : Verdict::kFail,
             ntuple.ok() ? (ntuple.value() ? "on" : "off") : ntuple.status().message(),
             Format("ethtool -K %s ntuple on", nic.c_str()));

  Result<std::vector<uint32_t>> indirection = QueryRssIndirection(nic);
  if (!indirection.ok()) {
    report.Add(nic, "rss", Verdict::kFail, indirection.status().message(),
               Format("ethtool -X %s equal <first devmem queue>", nic.c_str()));
  } else {
    std::set<uint32_t> bound(chosen.begin(), chosen.end());
    size_t hits = 0;
    for (uint32_t q : indirection.value()) hits += bound.count(q);
    const uint32_t first = chosen.empty() ? 0 : *std::min_element(chosen.begin(), chosen.end());
    report.Add(nic, "rss", hits == 0 ? Verdict::kPass : Verdict::kFail,
               hits == 0 ? Format("%zu entries, none on the devmem queues", indirection->size())
                         : Format("%zu of %zu entries send ordinary flows to devmem queues", hits,
                                  indirection->size()),
               Format("ethtool -X %s equal %u", nic.c_str(), first));
  }

  if (device.speed_from_driver) {
    report.Add(nic, "link speed", Verdict::kPass, Format("%d Mb/s", device.speed_mbps));
  } else {
    report.Add(nic, "link speed", Verdict::kSkip,
               Format("driver reports none; NCCL is told %d Mb/s", device.speed_mbps));
  }
  return report;
}

std::string PcieDistance(const std::string& a, const std::string& b) {
  if (a.empty() || b.empty()) return "unknown";
  // Paths look like /sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/...
  auto split = [](const std::string& path) {
    std::vector<std::string> parts;
    size_t pos = 0;
    while (pos < path.size()) {
      size_t next = path.find('/', pos);
      if (next == std::string::npos) next = path.size();
      if (next > pos) parts.push_back(path.substr(pos, next - pos));
      pos = next + 1;
    }
    return parts;
  };
  std::vector<std::string> pa = split(a), pb = split(b);
  if (pa.size() < 3 || pb.size() < 3 || pa[2] != pb[2]) return "different root complexes";
  size_t common = 0;
  while (common < pa.size() && common < pb.size() && pa[common] == pb[common]) ++common;
  // Below the root complex (index 2), a shared bridge beyond the root port means one switch.
  return common > 4 ? "same PCIe switch" : "same root complex";
}

ReadinessReport CheckNicTx(const NetDevice& device) {
  ReadinessReport report;
  const std::string& nic = device.name;
  if (device.loopback) {
    report.Add(nic, "netmem tx", Verdict::kSkip, "loopback: no NIC to send from device memory");
    return report;
  }
  Status probe = ProbeNetmemTx(device.ifindex);
  const std::string& why = probe.message();
  if (probe.ok()) {
    report.Add(nic, "netmem tx", Verdict::kPass,
               "bind-tx reaches the dmabuf stage: the driver sends from netmem, so NCCL's CUDA "
               "send buffers are bound for devmem TX (with a GPU that exports dmabufs)");
  } else if (why.find("netmem TX") != std::string::npos) {
    report.Add(nic, "netmem tx", Verdict::kSkip,
               "driver without netmem TX (" + why +
                   "); sends stage CUDA buffers through host "
                   "memory");
  } else if (why.find("memfd") != std::string::npos) {
    report.Add(nic, "netmem tx", Verdict::kSkip, why);
  } else {
    report.Add(nic, "netmem tx", Verdict::kSkip,
               "the kernel has no bind-tx (Linux >= 6.16): " + why);
  }
  return report;
}

ReadinessReport CheckGpus(const std::string& nic_pci_path) {
  ReadinessReport report;
  Result<const CudaDriver*> driver = CudaDriver::Get();
  if (!driver.ok()) {
    report.Add("gpu", "cuda driver", Verdict::kFail, driver.status().message(),
               "install the NVIDIA driver (open kernel modules, >= 535) on this host");
    return report;
  }
  Result<int> count = driver.value()->DeviceCount();
  if (!count.ok() || count.value() == 0) {
    report.Add("gpu", "cuda devices", Verdict::kFail,
               count.ok() ? "no CUDA device" : count.status().message(), "check nvidia-smi");
    return report;
  }
  for (int g = 0; g < count.value(); ++g) {
    const std::string scope = Format("gpu%d", g);
    Result<bool> dmabuf = driver.value()->DmaBufSupported(g);
    report.Add(
        scope, "dmabuf export", dmabuf.ok() && dmabuf.value() ? Verdict::kPass : Verdict::kFail,
        dmabuf.ok() ? (dmabuf.value() ? "supported" : "not supported") : dmabuf.status().message(),
        "use the NVIDIA open kernel modules and a kernel with dmabuf P2P support");
    Result<std::string> bus = driver.value()->PciBusId(g);
    std::string gpu_path;
    if (bus.ok()) {
      char resolved[PATH_MAX];
      if (realpath(("/sys/bus/pci/devices/" + bus.value()).c_str(), resolved) != nullptr) {
        gpu_path = resolved;
      }
    }
    report.Add(scope, "pcie distance", Verdict::kPass,
               Format("%s to the NIC (gpu %s)", PcieDistance(gpu_path, nic_pci_path).c_str(),
                      bus.ok() ? bus.value().c_str() : "?"));
  }
  return report;
}

}  // namespace devmem
