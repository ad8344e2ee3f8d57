#include "plugin/devmem/bind_errors.h"

#include <cerrno>
#include <iterator>

#include "plugin/core/status.h"

namespace devmem {
namespace {

// Upstream sources: torvalds/linux net/core/netdev-genl.c @001b5d34 (netdev_nl_bind_rx_doit,
// netdev_nl_bind_tx_doit), net/core/devmem.c @03e96b8c (net_devmem_bind_dmabuf,
// mp_dmabuf_devmem_init), net/core/netdev_rx_queue.c @0caa9a8d (__net_mp_open_rxq,
// netdev_rx_queue_restart), net/netlink/genetlink.c (genl_family_rcv_msg),
// drivers/dma-buf/dma-buf.c (dma_buf_get); NVIDIA open-gpu-kernel-modules
// kernel-open/nvidia/nv-dmabuf.c (nv_dma_buf_attach).
constexpr char kAttachExtack[] = "Failed to bind dmabuf to device";
constexpr char kNvidiaAttachMeaning[] =
    "the GPU driver refused to let the NIC map this GPU memory (dma_buf_attach, "
    "nv_dma_buf_attach)";
constexpr char kNvidiaAttachLook[] =
    "`dmesg | grep NVRM` names the reason: \"topology not supported for mapping type "
    "FORCE_PCIE\" (the export asked for a PCIe mapping this coherent host cannot give), \"PCI "
    "topology not supported for dma-buf\" (GPU and NIC share no PCIe switch or allow-listed root "
    "complex: `nvidia-smi topo -m`), \"importer unable to handle MMIO without struct page\"";
constexpr char kNvidiaAttachSource[] =
    "nv-dmabuf.c nv_dma_buf_attach returns -ENOTSUPP; net/core/devmem.c net_devmem_bind_dmabuf "
    "adds the extack";
constexpr char kBadfMeaning[] = "the dmabuf fd passed is not an open file descriptor";
constexpr char kBadfLook[] = "a plugin bug: report it with this log";
constexpr char kBadfSource[] = "drivers/dma-buf/dma-buf.c dma_buf_get (fget fails)";
constexpr char kInvalMeaning[] =
    "the fd is not a dmabuf, or the kernel could not add the mapped GPU memory to the "
    "binding's pool";
constexpr char kInvalLook[] = "the GPU memory export: `dmesg | grep -i -e NVRM -e dma-buf`";
constexpr char kInvalSource[] =
    "dma-buf.c dma_buf_get (!is_dma_buf_file); net/core/devmem.c net_devmem_bind_dmabuf "
    "(gen_pool_add_owner)";
constexpr char kNoDeviceMeaning[] =
    "no NIC has this ifindex in the calling process's network namespace, or its driver has "
    "detached it (netif_device_present: removed, resetting, suspended)";
constexpr char kNoDeviceLook[] = "`ip link` in the rank's namespace; `dmesg` for a driver reset";
constexpr char kNoMemoryMeaning[] =
    "the kernel ran out of memory mapping the GPU memory (the binding, its chunk pool, one "
    "net_iov per page)";
constexpr char kNoMemoryLook[] = "`dmesg | tail`; free host memory";

constexpr BindErrorCause kCauses[] = {
    {BindCommand::kRx, EPERM, "EPERM", "",
     "bind-rx needs CAP_NET_ADMIN; where the netdev family marks bind-rx GENL_ADMIN_PERM it "
     "must be held in the initial user namespace, so root inside a container's own user "
     "namespace is refused",
     "run the rank with CAP_NET_ADMIN on the host (`capsh --print`; not only inside a user "
     "namespace)",
     "net/core/netdev-genl-gen.c bind-rx op flags; net/netlink/genetlink.c "
     "genl_family_rcv_msg_doit permission check"},
    {BindCommand::kRx, ENODEV, "ENODEV", "", kNoDeviceMeaning, kNoDeviceLook,
     "net/core/netdev-genl.c netdev_nl_bind_rx_doit (netdev_get_by_index_lock, "
     "netif_device_present)"},
    {BindCommand::kRx, EOPNOTSUPP, "EOPNOTSUPP", "",
     "the NIC's driver has no queue-management API (netdev_need_ops_lock, queue_mgmt_ops), so "
     "the kernel cannot restart one RX queue onto GPU memory: this driver cannot do devmem RX",
     "`ethtool -i <if>` for the driver and firmware; devmem RX needs a driver with per-queue "
     "restart (gve, mlx5, bnxt on chips with the queue API, fbnic)",
     "net/core/netdev-genl.c netdev_nl_bind_rx_doit (!netdev_need_ops_lock); "
     "net/core/netdev_rx_queue.c __net_mp_open_rxq, netdev_rx_queue_restart (!qops)"},
    {BindCommand::kRx, EBADF, "EBADF", "", kBadfMeaning, kBadfLook, kBadfSource},
    {BindCommand::kRx, EINVAL, "EINVAL", "", kInvalMeaning, kInvalLook, kInvalSource},
    {BindCommand::kRx, ENOMEM, "ENOMEM", "",
     "the kernel ran out of memory mapping the GPU memory, or (some 6.15-era kernels) the RX "
     "region is smaller than the queue's page pool (\"Insufficient dmabuf memory ... to "
     "satisfy pool_size\" in dmesg)",
     "`dmesg | tail`; a larger RX region or a smaller RX ring (`ethtool -g <if>`)",
     "net/core/devmem.c net_devmem_bind_dmabuf; Mellanox/nic-kernel @727f0bbb "
     "mp_dmabuf_devmem_init (pool_size check)"},
    {BindCommand::kRx, E2BIG, "E2BIG", "",
     "the driver's page pool for the queue wants pages larger than PAGE_SIZE (order != 0), "
     "which a devmem binding cannot back: the NIC's rx-buf-len is above the page size",
     "`ethtool -g <if>` (rx-buf-len); `ethtool -G <if> rx-buf-len 4096`",
     "net/core/devmem.c mp_dmabuf_devmem_init (pool->p.order != 0)"},
    {BindCommand::kRx, ENODATA, "ENODATA", "",
     "the driver restarted the queue without a page pool that draws from the GPU memory: it "
     "does not support unreadable (device) memory in its current mode",
     "`ethtool -i <if>` (driver, firmware), `ethtool -g <if>` (tcp-data-split), `dmesg`",
     "net/core/netdev_rx_queue.c netdev_rx_queue_restart -> page_pool_check_memory_provider"},
    {BindCommand::kRx, kKernelEnotsupp, "ENOTSUPP", kAttachExtack, kNvidiaAttachMeaning,
     kNvidiaAttachLook, kNvidiaAttachSource},

    {BindCommand::kTx, ENODEV, "ENODEV", "", kNoDeviceMeaning, kNoDeviceLook,
     "net/core/netdev-genl.c netdev_nl_bind_tx_doit (netdev_get_by_index_lock, "
     "netif_device_present)"},
    {BindCommand::kTx, EOPNOTSUPP, "EOPNOTSUPP", "",
     "the kernel has no bind-tx command (devmem TX arrived in Linux 6.16): generic netlink "
     "refuses an operation the netdev family does not have",
     "`uname -r`; devmem TX needs Linux >= 6.16",
     "net/netlink/genetlink.c genl_family_rcv_msg (unknown command)"},
    {BindCommand::kTx, EBADF, "EBADF", "", kBadfMeaning, kBadfLook, kBadfSource},
    {BindCommand::kTx, EINVAL, "EINVAL", "", kInvalMeaning, kInvalLook, kInvalSource},
    {BindCommand::kTx, ENOMEM, "ENOMEM", "", kNoMemoryMeaning, kNoMemoryLook,
     "net/core/devmem.c net_devmem_bind_dmabuf"},
    {BindCommand::kTx, kKernelEnotsupp, "ENOTSUPP", kAttachExtack, kNvidiaAttachMeaning,
     kNvidiaAttachLook, kNvidiaAttachSource},
};

}  // namespace

std::span<const BindErrorCause> BindErrorCauses() { return kCauses; }

std::string ExplainBindRefusal(BindCommand command, int error, const std::string& extack) {
  for (const BindErrorCause& cause : kCauses) {
    if (cause.command != command || cause.error != error) continue;
    if (!extack.empty() && extack != cause.extack) break;  // the kernel said something else
    return Format("%s (%s); look at: %s", cause.meaning, cause.error_name, cause.where_to_look);
  }
  if (!extack.empty()) return "";
  return Format(
      "the kernel gave no reason for errno %d; the NIC driver's or GPU driver's log may: `dmesg | "
      "tail`, `dmesg | grep NVRM`",
      error);
}

}  // namespace devmem
