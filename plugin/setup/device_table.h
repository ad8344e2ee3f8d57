// The devices the plugin offers NCCL: the physical NICs found at init, then the virtual NICs
// NCCL fuses from them with makeVDevice (NCCL numbers them after the physical ones: it asks
// devices() again after fusing, NCCL v2.30.7 src/graph/topo.cc ncclTopoProcessNet).
//
// A virtual NIC's comms spread their data sockets over the member NICs (connector.h,
// DataSocketsFor); its speed is the members' sum, its rail the members' common rail.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "plugin/core/net_device.h"
#include "plugin/core/rails.h"
#include "plugin/core/status.h"
#include "plugin/setup/rx_path.h"

namespace devmem {

struct DeviceEntry {
  std::string name;          // "eth0", or "eth0+eth1" for a virtual NIC
  std::vector<int> members;  // physical device indices; {self} for a physical NIC
  RxPlan plan;               // how its receive connections run
  std::string pci_path;      // the first member's
  int speed_mbps = 0;        // the members' sum
  int16_t rail = -1;         // NCCL_DEVMEM_RAILS; a virtual NIC: the members' common one
  int16_t plane = -1;
  // Devmem TX (tx_setup.h): empty when CUDA send buffers may be sent from GPU memory on this
  // NIC, else why they stage through host memory (decided at init, logged once per NIC).
  std::string tx_reason = "not checked";
  bool devmem_tx() const { return tx_reason.empty(); }
  bool is_virtual() const { return members.size() > 1; }
};

class DeviceTable {
 public:
  DeviceTable() = default;
  // One entry per physical NIC with its plan (same order) and its rail assignment.
  // `tx_reasons`: DeviceEntry::tx_reason per NIC (same order; missing: "not checked").
  DeviceTable(std::vector<NetDevice> devices, std::vector<RxPlan> plans,
              const std::vector<RailAssignment>& rails, std::vector<std::string> tx_reasons = {});

  size_t size() const { return entries_.size(); }
  size_t physical_count() const { return physical_.size(); }
  // nullptr for an index out of range. Entries never move: names may be handed to NCCL.
  const DeviceEntry* At(int dev) const;
  const NetDevice& Physical(int index) const { return physical_[static_cast<size_t>(index)]; }

  // makeVDevice: the index of the virtual NIC of physical devices `devs` (the device itself
  // for one, an existing entry for the same list), or an error saying what is wrong: a count
  // outside [1, max_devs], an index that is not a physical NIC, a NIC named twice, members of
  // different address families, or more members than a listen handle can name.
  // `emulate`: NCCL_DEVMEM_EMULATE=1 (emulated devmem RX runs on any sockets).
  Result<int> MakeVirtual(const int* devs, int ndevs, int max_devs, bool emulate);

 private:
  std::vector<NetDevice> physical_;
  std::deque<DeviceEntry> entries_;  // physical first, then virtual
};

}  // namespace devmem
