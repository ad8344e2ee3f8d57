// Which RX queues of a NIC each devmem binder takes. A queue holds one memory provider
// (net/core/netdev_rx_queue.c __net_mp_open_rxq: "designated queue already memory provider
// bound", -EEXIST), so every (NIC, GPU, process) that binds needs queues of its own, host-wide:
//   - the pool: NCCL_DEVMEM_RX_QUEUES where set, else the queues the RSS indirection table leaves
//     out (the operator's `ethtool -X <if> equal N` keeps queues N.. for devmem), else the last
//     queue;
//   - the share of one binder: the pool divided among the GPUs that sit under the NIC's PCIe root
//     complex (NCCL gives a GPU its nearest NIC), at least one queue;
//   - the choice, under the NIC's FlowRuleLock with the bind-rx done before it is released: the
//     first pool queues that no binding holds (NETDEV_A_QUEUE_DMABUF, the kernel's own word, seen
//     by every container of the netns) and no live process claims in the HostRegistry (which
//     names the pid and GPU for the doctor).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "plugin/core/net_device.h"
#include "plugin/core/status.h"
#include "plugin/devmem/host_registry.h"
#include "plugin/devmem/netdev_netlink.h"
#include "plugin/setup/readiness.h"

namespace devmem {

// The pool (see above). `rss`: the indirection table, nullopt when it cannot be read.
std::vector<uint32_t> DevmemQueuePool(const std::vector<uint32_t>& configured,
                                      const std::vector<RxQueueInfo>& rx,
                                      const std::optional<std::vector<uint32_t>>& rss);

// The queues readiness checks for a NIC: the pool less the queues already bound (another rank's,
// which is no reason to fall back), or the whole pool when every one is bound, or the configured
// list as given when it names a queue the NIC lacks (so that the checks say which).
// `rss`: the NIC's RSS indirection table where it could be read (DevmemQueuePool).
std::vector<uint32_t> QueuesToCheck(const std::vector<uint32_t>& configured,
                                    const std::vector<RxQueueInfo>& rx,
                                    const std::optional<std::vector<uint32_t>>& rss);

// NVIDIA GPUs (PCI vendor 0x10de, class 0x0300 or 0x0302) under `pci_devices_dir` (sysfs
// /sys/bus/pci/devices) that share the NIC's PCIe root complex; all of them when none does or the
// NIC's path is unknown; at least 1.
int GpusNearNic(const std::string& nic_pci_path,
                const std::string& pci_devices_dir = "/sys/bus/pci/devices");

// How many queues one binder takes.
size_t QueuesPerBinder(size_t pool_size, int gpus_near_nic);

// The first `want` queues of `pool` (fewer if fewer are free, never none) that exist, are bound to
// no dmabuf and are not claimed by `live_claims`. The error names every pool queue and its holder.
Result<std::vector<uint32_t>> ChooseFreeQueues(const std::vector<uint32_t>& pool,
                                               const std::vector<RxQueueInfo>& rx,
                                               const std::vector<QueueClaim>& live_claims,
                                               size_t want);

// With the NIC's FlowRuleLock held: the queues a new binder on `ifname` takes, by the claims in
// `registry` (those of dead owners ignored) and the kernel's bindings in `rx`.
Result<std::vector<uint32_t>> ChooseQueuesForBinder(const HostRegistry& registry,
                                                    const std::string& ifname,
                                                    const std::vector<uint32_t>& pool,
                                                    const std::vector<RxQueueInfo>& rx,
                                                    size_t want);
// Once bound: one QueueClaim per queue, naming this process and `gpu`.
Status RecordQueueClaims(HostRegistry& registry, const std::string& ifname,
                         const std::vector<uint32_t>& queues, int gpu);

// devmem-doctor's section for one NIC: the queue plan (pool, share, who holds which queue) and the
// flow rule books (table use, recorded rules by live and dead owners).
ReadinessReport DescribeSteering(const NetDevice& nic, const std::vector<uint32_t>& configured);

}  // namespace devmem
