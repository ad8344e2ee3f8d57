// devmem-doctor: is this host ready for devmem TCP receive into GPU memory? Runs the same
// checks the plugin uses to pick a connection's data path, one line per check, with the command
// that fixes each failure.
//
//   devmem-doctor [--json] [--ifname NAME[,NAME...]] [--queues ID[,ID...]]
//
// NICs: --ifname (exact names), else NCCL_SOCKET_IFNAME, else the plugin's default selection.
// Queues: --queues, else NCCL_DEVMEM_RX_QUEUES, else each NIC's last RX queue.
// Exit status: 0 ready, 1 not ready, 2 error.
#include <cstdio>
#include <cstdlib>
#include <strings.h>

#include <cstring>
#include <string>
#include <vector>

#include "plugin/setup/readiness.h"
#include "plugin/core/net_device.h"

namespace {

int Usage(const char* why) {
  fprintf(stderr,
          "devmem-doctor: %s\nusage: devmem-doctor [--json] [--ifname NAME[,NAME...]] "
          "[--queues ID[,ID...]]\n",
          why);
  return 2;
}

// The interfaces named on the command line, as the kernel lists them (address optional: a
// devmem NIC is checked before it is configured).
devmem::Result<std::vector<devmem::NetDevice>> NamedDevices(const std::vector<std::string>& names) {
  devmem::Result<std::vector<devmem::InterfaceInfo>> all = devmem::ListInterfaces();
  if (!all.ok()) return all.status();
  std::vector<devmem::NetDevice> out;
  for (const std::string& name : names) {
    bool found = false;
    for (const devmem::InterfaceInfo& info : all.value()) {
      if (info.name != name) continue;
      devmem::NetDevice device;
      device.name = info.name;
      device.ifindex = info.ifindex;
      device.loopback = info.loopback;
      devmem::DescribeFromSysfs(&device);
      out.push_back(std::move(device));
      found = true;
    }
    if (!found) {
      return devmem::Status::Error(devmem::ErrorKind::kInvalidArgument,
                                   "no usable network interface named %s", name.c_str());
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  std::string ifname_spec;
  std::vector<std::string> named;  // --ifname: checked even without an IP address
  const char* env_ifname = getenv("NCCL_SOCKET_IFNAME");
  if (env_ifname != nullptr) ifname_spec = env_ifname;
  std::string queue_text;
  const char* env_queues = getenv("NCCL_DEVMEM_RX_QUEUES");
  if (env_queues != nullptr) queue_text = env_queues;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--json") == 0) {
      json = true;
    } else if (strcmp(argv[i], "--ifname") == 0 && i + 1 < argc) {
      std::string list = argv[++i];
      size_t pos = 0;
      while (pos <= list.size()) {
        size_t comma = list.find(',', pos);
        if (comma == std::string::npos) comma = list.size();
        if (comma > pos) named.push_back(list.substr(pos, comma - pos));
        pos = comma + 1;
      }
    } else if (strcmp(argv[i], "--queues") == 0 && i + 1 < argc) {
      queue_text = argv[++i];
    } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      Usage("checks devmem TCP readiness");
      return 0;
    } else {
      return Usage((std::string("unknown argument ") + argv[i]).c_str());
    }
  }
  devmem::Result<std::vector<uint32_t>> queues = devmem::ParseQueueList(queue_text);
  if (!queues.ok()) return Usage(queues.status().message().c_str());
  devmem::Result<std::vector<devmem::NetDevice>> devices =
      named.empty() ? devmem::DiscoverDevices(ifname_spec, 0) : NamedDevices(named);
  if (!devices.ok()) {
    fprintf(stderr, "devmem-doctor: %s\n", devices.status().message().c_str());
    return 2;
  }

  devmem::ReadinessReport report = devmem::CheckKernel();
  report.Append(devmem::CheckPrivileges());
  for (const devmem::NetDevice& device : devices.value()) {
    report.Append(devmem::CheckNic(device, queues.value()));
  }
  report.Append(devmem::CheckGpus(devices->front().pci_path));
  const char* unpack = getenv("NCCL_DEVMEM_UNPACK");  // NOLINT(concurrency-mt-unsafe)
  report.Append(devmem::CheckGpuConsumer(unpack != nullptr && strcasecmp(unpack, "nccl") == 0
                                             ? devmem::UnpackMode::kNccl
                                             : devmem::UnpackMode::kPlugin));

  if (json) {
    printf("%s\n", report.ToJson().c_str());
  } else {
    fputs(report.ToText().c_str(), stdout);
    const devmem::CheckOutcome* failure = report.first_failure();
    if (failure == nullptr) {
      printf("devmem RX: READY\n");
    } else {
      printf("devmem RX: NOT READY (first failure: %s %s: %s)\n", failure->scope.c_str(),
             failure->check.c_str(), failure->detail.c_str());
    }
  }
  return report.ready() ? 0 : 1;
}
