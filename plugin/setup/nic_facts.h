// What the kernel and the driver report, before anything is bound, about each thing bind-rx
// checks (net/core/netdev-genl.c netdev_nl_bind_rx_doit → net/core/netdev_rx_queue.c
// __net_mp_open_rxq → the driver's queue restart → net/core/devmem.c mp_dmabuf_devmem_init), and
// about who may call it. ReadNicFacts / ReadPrivilegeFacts read the real kernel; tests fill the
// structs by hand to stand in for a driver or a container this host does not have
// (CheckNicFacts / CheckPrivilegeFacts in readiness.h judge them).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "plugin/core/net_device.h"
#include "plugin/core/status.h"
#include "plugin/devmem/netdev_netlink.h"
#include "plugin/devmem/nic_ethtool.h"

namespace devmem {

// RTM_GETLINK for one ifindex.
struct LinkState {
  bool up = false;           // IFF_UP in ifi_flags
  uint8_t xdp_attached = 0;  // IFLA_XDP_ATTACHED: XDP_ATTACHED_NONE (0), _DRV, _SKB, _HW, _MULTI
  uint32_t xdp_prog_id = 0;  // IFLA_XDP_PROG_ID (absent with several programs)
};

// Active offloads, from ETHTOOL_GFEATURES looked up by their ETH_SS_FEATURES names.
struct OffloadFeatures {
  bool rx_checksum = false;  // "rx-checksum"
  bool tx_checksum = false;  // any "tx-checksum-*"
  bool rx_gro_hw = false;    // "rx-gro-hw"
};

struct NicFacts {
  Result<std::string> driver = NotRead();                     // ETHTOOL_GDRVINFO
  Result<LinkState> link = NotRead();                         // rtnetlink
  Result<std::vector<RxQueueInfo>> rx_queues = NotRead();     // netdev queue-get dump
  Result<RingSettings> rings = NotRead();                     // ethtool netlink rings-get
  Result<OffloadFeatures> features = NotRead();               // ETHTOOL_GFEATURES
  Result<bool> ntuple = NotRead();                            // ETHTOOL_GFLAGS
  Result<std::vector<uint32_t>> rss_indirection = NotRead();  // ETHTOOL_GRXFHINDIR
  uint32_t page_bytes = 4096;                                 // this kernel's PAGE_SIZE

  static Status NotRead() { return Status::Error(ErrorKind::kInternal, "not read"); }
};

// Every fact above for `device`, from this host's kernel.
NicFacts ReadNicFacts(const NetDevice& device);

// GENL_ADMIN_PERM / GENL_UNS_ADMIN_PERM (include/uapi/linux/genetlink.h).
inline constexpr uint32_t kGenlAdminPerm = 0x01;
inline constexpr uint32_t kGenlUnsAdminPerm = 0x10;

struct PrivilegeFacts {
  Result<bool> cap_net_admin = NicFacts::NotRead();  // effective, in this user namespace
  bool initial_user_ns = true;  // /proc/self/uid_map maps all 2^32 ids onto themselves
  // The network namespace belongs to this process's user namespace (NS_GET_USERNS on
  // /proc/self/ns/net); absent when the kernel cannot say.
  std::optional<bool> netns_owned_here;
  // CTRL_ATTR_OP_FLAGS of the netdev family's bind-rx op: what genetlink.c checks before
  // netdev_nl_bind_rx_doit runs.
  Result<uint32_t> bind_rx_op_flags = NicFacts::NotRead();
};

PrivilegeFacts ReadPrivilegeFacts();

}  // namespace devmem
