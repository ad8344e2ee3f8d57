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
#include <cstring>
#include <string>
#include <vector>

#include "plugin/devmem/readiness.h"
#include "plugin/net_device.h"

namespace {

int Usage(const char* why) {
  fprintf(stderr, "devmem-doctor: %s\nusage: devmem-doctor [--json] [--ifname NAME[,NAME...]] "
          "[--queues ID[,ID...]]\n", why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  std::string ifname_spec;
  const char* env_ifname = getenv("NCCL_SOCKET_IFNAME");
  if (env_ifname != nullptr) ifname_spec = env_ifname;
  std::string queue_text;
  const char* env_queues = getenv("NCCL_DEVMEM_RX_QUEUES");
  if (env_queues != nullptr) queue_text = env_queues;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--json") == 0) {
      json = true;
    } else if (strcmp(argv[i], "--ifname") == 0 && i + 1 < argc) {
      ifname_spec = std::string("=") + argv[++i];
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
      devmem::DiscoverDevices(ifname_spec, 0);
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
