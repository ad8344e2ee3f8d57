#include "plugin/setup/readiness.h"

#include "gpu/scatter_engine.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "plugin/core/unique_fd.h"
#include "plugin/cuda/cuda_driver.h"
#include "plugin/devmem/netdev_netlink.h"
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
    case Verdict::kWarn:
      return "WARN";
    case Verdict::kFail:
      return "FAIL";
    case Verdict::kSkip:
      return "SKIP";
  }
  return "?";
}

void ReadinessReport::Add(std::string scope, std::string check, Verdict verdict, std::string detail,
                          std::string fix) {
  checks_.push_back(
      {std::move(scope), std::move(check), verdict, std::move(detail),
       verdict == Verdict::kFail || verdict == Verdict::kWarn ? std::move(fix) : std::string()});
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

size_t ReadinessReport::warnings() const {
  return static_cast<size_t>(
      std::count_if(checks_.begin(), checks_.end(),
                    [](const CheckOutcome& c) { return c.verdict == Verdict::kWarn; }));
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
  std::string out = Format("{\"ready\": %s, \"warnings\": %zu, \"checks\": [",
                           ready() ? "true" : "false", warnings());
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

ReadinessReport CheckPrivileges() { return CheckPrivilegeFacts(ReadPrivilegeFacts()); }

ReadinessReport CheckNic(const NetDevice& device, const std::vector<uint32_t>& queues,
                         std::vector<uint32_t>* chosen_queues) {
  // Loopback is judged on its name alone: nothing about it is worth asking the kernel.
  NicFacts facts = device.loopback ? NicFacts{} : ReadNicFacts(device);
  return CheckNicFacts(device, std::move(facts), queues, chosen_queues);
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
  // Below the root complex (index 2) comes the root port (index 3): a shared bridge beyond it
  // means one switch; sharing the root port alone still gives both one upstream bridge.
  if (common > 4) return "same PCIe switch";
  return common == 4 ? "same PCIe root port" : "same root complex";
}

ReadinessReport CheckPcieDistance(const std::string& scope, const std::string& gpu_sysfs_path,
                                  const std::string& nic_sysfs_path, const std::string& gpu_bus) {
  ReadinessReport report;
  const std::string distance = PcieDistance(gpu_sysfs_path, nic_sysfs_path);
  const std::string where =
      Format("%s to the NIC (gpu %s)", distance.c_str(), gpu_bus.empty() ? "?" : gpu_bus.c_str());
  // NVIDIA's dmabuf attach (kernel-open/nvidia/nv-dmabuf.c nv_dma_buf_attach →
  // nv-pci.c nv_grdma_pci_topology_supported): on a chipset flagged
  // NV_FLAG_PCI_P2P_UNSUPPORTED_CHIPSET it wants a common upstream bridge
  // (nv_pci_has_common_pci_switch); elsewhere, and on coherent hosts, it allows any pair. The
  // flag is known only to the driver: a pair without a common bridge may still bind.
  if (distance == "same PCIe switch" || distance == "same PCIe root port") {
    report.Add(scope, "pcie distance", Verdict::kPass, where);
  } else {
    report.Add(scope, "pcie distance", Verdict::kWarn,
               where +
                   ": NVIDIA's driver allows the dmabuf attach only where it trusts the "
                   "chipset with peer-to-peer; otherwise every bind-rx fails with 524 and "
                   "dmesg says \"NVRM: dma-buf attach failed: PCI topology not supported\"",
               "pick the NIC behind the GPU's PCIe switch (nvidia-smi topo -m: PIX or PXB)");
  }
  return report;
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
  } else {
    // The probe's message already says what the refusal means (plugin/devmem/bind_errors.h):
    // no bind-tx in this kernel, a NIC absent or detached, no privilege, no memory.
    report.Add(nic, "netmem tx", Verdict::kSkip, why);
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
    report.Append(
        CheckPcieDistance(scope, gpu_path, nic_pci_path, bus.ok() ? bus.value() : std::string()));
  }
  return report;
}

}  // namespace devmem
