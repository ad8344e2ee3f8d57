// Devmem readiness: one library of checks, used by the plugin's per-connection mode selection
// and by devmem-doctor. Each check says PASS, FAIL or SKIP, why, and for a FAIL the command that
// fixes it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "plugin/core/config.h"
#include "plugin/core/net_device.h"
#include "plugin/core/status.h"

namespace devmem {

enum class Verdict { kPass, kFail, kSkip };
const char* VerdictName(Verdict verdict);

struct CheckOutcome {
  std::string scope;  // "kernel", "privileges", a NIC name, or "gpu<N>"
  std::string check;
  Verdict verdict = Verdict::kSkip;
  std::string detail;
  std::string fix;  // FAIL only: what an operator runs
};

class ReadinessReport {
 public:
  void Add(std::string scope, std::string check, Verdict verdict, std::string detail,
           std::string fix = "");
  void Append(const ReadinessReport& other);
  bool ready() const { return first_failure() == nullptr; }
  const CheckOutcome* first_failure() const;
  const std::vector<CheckOutcome>& checks() const { return checks_; }
  // One line per check, aligned; FAIL lines carry "fix: ...".
  std::string ToText() const;
  // {"ready": bool, "checks": [{"scope", "check", "result", "detail", "fix"}...]}
  std::string ToJson() const;

 private:
  std::vector<CheckOutcome> checks_;
};

// The kernel: the netdev genl family and the devmem socket options.
ReadinessReport CheckKernel();
// CAP_NET_ADMIN (bind-rx and flow rules need it).
ReadinessReport CheckPrivileges();
// One NIC: netdev, driver, RX queues (and `queues`, or the default: its last RX queue),
// tcp-data-split, hds-thresh, ntuple, RSS away from the devmem queues, link speed.
// *chosen_queues receives the queues the checks were run for.
ReadinessReport CheckNic(const NetDevice& device, const std::vector<uint32_t>& queues,
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

// "same PCIe switch", "same root complex", "different root complexes" or "unknown".
std::string PcieDistance(const std::string& a_sysfs_path, const std::string& b_sysfs_path);

}  // namespace devmem
