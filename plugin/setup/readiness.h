// Devmem readiness: one library of checks, used by the plugin's per-connection mode selection
// and by devmem-doctor. Each check says PASS, WARN, FAIL or SKIP, why, and for a FAIL or WARN the
// command that fixes it. Each NIC check mirrors one refusal of the kernel's bind-rx (the kernel
// line is named where the check is made, nic_checks.cc); WARN marks what only the bind itself can
// tell (the kernel keeps it where no reply shows it), so it does not make a host "not ready".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "plugin/core/config.h"
#include "plugin/core/net_device.h"
#include "plugin/core/status.h"
#include "plugin/setup/nic_facts.h"

namespace devmem {

enum class Verdict { kPass, kWarn, kFail, kSkip };
const char* VerdictName(Verdict verdict);

struct CheckOutcome {
  std::string scope;  // "kernel", "privileges", a NIC name, or "gpu<N>"
  std::string check;
  Verdict verdict = Verdict::kSkip;
  std::string detail;
  std::string fix;  // FAIL and WARN: what an operator runs
};

class ReadinessReport {
 public:
  void Add(std::string scope, std::string check, Verdict verdict, std::string detail,
           std::string fix = "");
  void Append(const ReadinessReport& other);
  bool ready() const { return first_failure() == nullptr; }
  const CheckOutcome* first_failure() const;
  const std::vector<CheckOutcome>& checks() const { return checks_; }
  size_t warnings() const;
  // One line per check, aligned; FAIL and WARN lines carry "fix: ...".
  std::string ToText() const;
  // {"ready": bool, "warnings": N, "checks": [{"scope", "check", "result", "detail", "fix"}...]}
  std::string ToJson() const;

 private:
  std::vector<CheckOutcome> checks_;
};

// The kernel: the netdev genl family and the devmem socket options.
ReadinessReport CheckKernel();
// CAP_NET_ADMIN (bind-rx and flow rules need it), and whether the kernel's bind-rx accepts it
// from this process's user namespace.
ReadinessReport CheckPrivileges();
ReadinessReport CheckPrivilegeFacts(PrivilegeFacts facts);
// One NIC: device, driver, link, queue API, RX queues (`queues`, or the free queues of its
// devmem pool: rx_queue_plan.h) and what holds them, tcp-data-split, hds-thresh, XDP,
// rx-buf-len, offloads, ntuple, RSS away from the devmem queues, link speed. *chosen_queues receives the queues the checks
// were run for.
ReadinessReport CheckNic(const NetDevice& device, const std::vector<uint32_t>& queues,
                         std::vector<uint32_t>* chosen_queues = nullptr);
// The same on facts already read (tests: a driver's report this host cannot produce).
ReadinessReport CheckNicFacts(const NetDevice& device, NicFacts facts,
                              const std::vector<uint32_t>& queues,
                              std::vector<uint32_t>* chosen_queues = nullptr);
// Devmem TX on one NIC (information: the plugin does not send with devmem TX yet, so the
// verdict is PASS or SKIP, never FAIL): a bind-tx probe with a 4 KiB memfd, which the kernel
// refuses at the driver ("Driver does not support netmem TX", EOPNOTSUPP), at an unknown
// command (a kernel before 6.16), or only at the fake dmabuf: then the driver takes netmem TX.
ReadinessReport CheckNicTx(const NetDevice& device);
// GPUs through the CUDA driver: dmabuf export support and PCIe distance to `nic_pci_path`.
ReadinessReport CheckGpus(const std::string& nic_pci_path);

// This build: can something consume frags that sit in GPU memory (our CUDA scatter kernel, or
// NCCL's device unpack with NCCL_DEVMEM_UNPACK=nccl)?
ReadinessReport CheckGpuConsumer(UnpackMode unpack);

// "same PCIe switch", "same PCIe root port", "same root complex", "different root complexes"
// or "unknown".
std::string PcieDistance(const std::string& a_sysfs_path, const std::string& b_sysfs_path);
// One GPU's "pcie distance" row: what NVIDIA's dmabuf attach will allow between it and the NIC.
ReadinessReport CheckPcieDistance(const std::string& scope, const std::string& gpu_sysfs_path,
                                  const std::string& nic_sysfs_path, const std::string& gpu_bus);

}  // namespace devmem
