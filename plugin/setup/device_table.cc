#include "plugin/setup/device_table.h"

#include <algorithm>

#include "plugin/core/log.h"

namespace devmem {

DeviceTable::DeviceTable(std::vector<NetDevice> devices, std::vector<RxPlan> plans,
                         const std::vector<RailAssignment>& rails,
                         std::vector<std::string> tx_reasons)
    : physical_(std::move(devices)) {
  for (size_t i = 0; i < physical_.size(); ++i) {
    DeviceEntry entry;
    entry.name = physical_[i].name;
    entry.members = {static_cast<int>(i)};
    if (i < plans.size()) entry.plan = std::move(plans[i]);
    if (i < tx_reasons.size()) entry.tx_reason = std::move(tx_reasons[i]);
    entry.pci_path = physical_[i].pci_path;
    entry.speed_mbps = physical_[i].speed_mbps;
    if (const RailAssignment* rail = FindRail(rails, physical_[i].name); rail != nullptr) {
      entry.rail = rail->rail;
      entry.plane = rail->plane;
    }
    entries_.push_back(std::move(entry));
  }
  for (const RailAssignment& rail : rails) {
    const bool known = std::any_of(physical_.begin(), physical_.end(),
                                   [&](const NetDevice& d) { return d.name == rail.ifname; });
    if (!known) {
      log::Warn(
          "NCCL_DEVMEM_RAILS names %s, which is not one of the plugin's NICs "
          "(NCCL_SOCKET_IFNAME, addresses, link state): its rail is ignored",
          rail.ifname.c_str());
    }
  }
}

const DeviceEntry* DeviceTable::At(int dev) const {
  if (dev < 0 || static_cast<size_t>(dev) >= entries_.size()) return nullptr;
  return &entries_[static_cast<size_t>(dev)];
}

Result<int> DeviceTable::MakeVirtual(const int* devs, int ndevs, int max_devs, bool emulate) {
  if (devs == nullptr || ndevs < 1 || ndevs > max_devs) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "a virtual NIC of %d devices: this table version fuses 1 to %d", ndevs,
                         max_devs);
  }
  std::vector<int> members(devs, devs + ndevs);
  for (size_t i = 0; i < members.size(); ++i) {
    const int d = members[i];
    if (d < 0 || static_cast<size_t>(d) >= physical_.size()) {
      return Status::Error(ErrorKind::kInvalidArgument,
                           "virtual NIC member %d is not a physical NIC (0..%zu)", d,
                           physical_.size() - 1);
    }
    if (std::find(members.begin(), members.begin() + static_cast<std::ptrdiff_t>(i), d) !=
        members.begin() + static_cast<std::ptrdiff_t>(i)) {
      return Status::Error(ErrorKind::kInvalidArgument, "virtual NIC names NIC %d (%s) twice", d,
                           physical_[static_cast<size_t>(d)].name.c_str());
    }
  }
  if (ndevs == 1) return members[0];  // a virtual NIC of one NIC is that NIC
  for (size_t e = physical_.size(); e < entries_.size(); ++e) {
    if (entries_[e].members == members) return static_cast<int>(e);
  }
  const NetDevice& first = physical_[static_cast<size_t>(members[0])];
  const int family = first.address.family();
  // One listen handle names every member (wire::ListenHandle): 8 IPv4 or 4 IPv6 addresses.
  const int max_members = family == AF_INET6 ? 4 : 8;
  if (ndevs > max_members) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "a virtual NIC of %d %s NICs: at most %d fit in a listen handle", ndevs,
                         family == AF_INET6 ? "IPv6" : "IPv4", max_members);
  }
  DeviceEntry entry;
  entry.members = members;
  entry.pci_path = first.pci_path;
  entry.rail = entries_[static_cast<size_t>(members[0])].rail;
  entry.plane = entries_[static_cast<size_t>(members[0])].plane;
  std::string plain_reason;
  for (int d : members) {
    const NetDevice& member = physical_[static_cast<size_t>(d)];
    const DeviceEntry& own = entries_[static_cast<size_t>(d)];
    if (member.address.family() != family) {
      return Status::Error(ErrorKind::kInvalidArgument,
                           "virtual NIC members %s (%s) and %s (%s) differ in address family",
                           first.name.c_str(), first.address.ToString().c_str(),
                           member.name.c_str(), member.address.ToString().c_str());
    }
    if (!entry.name.empty()) entry.name += '+';
    entry.name += member.name;
    entry.speed_mbps += member.speed_mbps;
    // NCCL's own rule for its IB vNICs (v2.30.7 src/transport/net_ib/init.cc:227): a rail
    // only when every member shares it.
    if (own.rail != entry.rail) entry.rail = -1;
    if (own.plane != entry.plane) entry.plane = -1;
    if (plain_reason.empty() && !own.plan.plain_reason.empty()) {
      plain_reason = Format("member %s: %s", member.name.c_str(), own.plan.plain_reason.c_str());
    }
  }
  if (plain_reason.empty() && !emulate) {
    // Real devmem RX binds a GPU region to queues of one NIC and steers each data socket's
    // flow there (rx_setup.h); a virtual NIC would need that per member.
    plain_reason =
        "devmem RX on a virtual NIC needs one binding per member NIC, which the plugin does not "
        "do yet";
  }
  if (plain_reason.empty()) {
    entry.plan = entries_[static_cast<size_t>(members[0])].plan;  // emulation: any sockets
  } else {
    entry.plan.plain_reason = plain_reason;
  }
  // A bind-tx names one NIC, and a connection's data sockets leave through several.
  entry.tx_reason =
      "devmem TX on a virtual NIC needs one binding per member NIC, which the plugin does not "
      "do yet";
  const int index = static_cast<int>(entries_.size());
  log::Info(log::kInit,
            "virtual NIC %d: %s (%d NICs), %d Mb/s, rail %d, plane %d; data sockets spread "
            "over the members; receive path: %s",
            index, entry.name.c_str(), ndevs, entry.speed_mbps, entry.rail, entry.plane,
            plain_reason.empty() ? (emulate ? "EMULATED devmem RX" : "devmem RX")
                                 : ("plain TCP (" + plain_reason + ")").c_str());
  entries_.push_back(std::move(entry));
  return index;
}

}  // namespace devmem
