// The real devmem RX path of one receive connection, set up at accept:
//   - per (NIC, GPU), once per process: a slice of the GPU's RX arena (one allocation per GPU,
//     rx_arena.h) exported as a dmabuf and bound to this binder's own share of the NIC's devmem
//     queue pool, chosen host-wide (rx_queue_plan.h; bind-rx; the binding's netlink socket stays
//     open for the life of the process, closing it would unbind);
//   - per data socket: a flow steering rule sending its 4-tuple to a bound queue, recorded in the
//     host registry (flow_steering.h; removed when the comm closes, or by a later process once
//     this one is gone) and a DevmemFragReceiver reading frags with recvmsg(MSG_SOCK_DEVMEM).
// Any refusal is returned with the kernel's reason; the caller falls back to plain TCP for that
// connection (or fails it under NCCL_DEVMEM_REQUIRE=1).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "plugin/core/net_device.h"
#include "plugin/core/status.h"
#include "plugin/setup/rx_path.h"

namespace devmem {

struct DevmemRxRequest {
  const NetDevice* nic = nullptr;
  // The NIC's devmem queue pool readiness checked (NCCL_DEVMEM_RX_QUEUES or the queues outside
  // RSS); the binder takes its share of the free ones.
  std::vector<uint32_t> queues;
  int gpu = 0;
  uint64_t region_bytes = 0;  // this NIC's slice of the GPU's arena
  uint64_t arena_bytes = 0;   // the GPU's arena, if this is its first use in the process
  std::string budget;         // how region_bytes was chosen (logged at the first bind)
  FragGeometry geometry;      // the NIC's frag sizes (receivers' control buffers)
  uint32_t rx_page_bytes = 0;  // bind-rx's rx-page-size (0: not sent, the kernel's PAGE_SIZE)
  std::vector<int> data_fds;  // accepted data sockets, in order
  bool require = false;       // NCCL_DEVMEM_REQUIRE=1: a flow steering miss fails the comm
};

// Fills path->region, path->receivers and path->keep_alive (flow rules, binding).
Status PrepareDevmemRx(const DevmemRxRequest& request, RxPath* path);

}  // namespace devmem
