// devmem-doctor: is this host ready for devmem TCP receive into GPU memory? Runs the same
// checks the plugin uses to pick a connection's data path, one line per check (PASS, WARN, FAIL,
// SKIP), with the command that fixes each failure or warning. docs/doctor.md lists the checks.
//
//   devmem-doctor [--json] [--ifname NAME[,NAME...]] [--queues ID[,ID...]]
//   devmem-doctor --cleanup [--json] [--ifname NAME[,NAME...]]
//   devmem-doctor --version
//
// The environment is read and validated by the plugin's own Config::FromEnvironment, so a
// value init rejects is rejected here with the same message; --queues stands in for
// NCCL_DEVMEM_RX_QUEUES.
// NICs: --ifname (exact names), else NCCL_SOCKET_IFNAME and NCCL_SOCKET_FAMILY, else the
// plugin's default selection. Queues: --queues, else NCCL_DEVMEM_RX_QUEUES, else each NIC's
// queues outside RSS (the devmem pool; each section "queue plan" shows who holds which).
// --cleanup removes the flow rules and queue claims that processes now gone left on those NICs
// (plugin/devmem/flow_steering.h ReapDeadOwners) and says what it did; exit status 0, or 2 when a
// NIC could not be cleaned.
// Exit status: 0 ready, 1 not ready, 2 error (bad argument or environment, no such NIC). With
// --json, stdout always holds one JSON object: the report, or {"ready": false, "error": "..."}.
#include <strings.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "plugin/core/config.h"
#include "plugin/core/version.h"
#include "plugin/core/net_device.h"
#include "plugin/devmem/flow_steering.h"
#include "plugin/setup/readiness.h"
#include "plugin/setup/rx_queue_plan.h"

namespace {

constexpr const char* kUsage =
    "usage: devmem-doctor [--json] [--ifname NAME[,NAME...]] [--queues ID[,ID...]]\n"
    "       devmem-doctor --cleanup [--json] [--ifname NAME[,NAME...]]\n"
    "       devmem-doctor --version";

// A JSON string body. Bytes outside printable ASCII are escaped one by one, so a message that
// echoes any environment value is still valid JSON.
std::string JsonString(const std::string& text) {
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (byte < 0x20 || byte >= 0x7f) {
      constexpr char kHex[] = "0123456789abcdef";
      out += "\\u00";
      out += kHex[byte >> 4];
      out += kHex[byte & 0xf];
    } else {
      out += c;
    }
  }
  return out;
}

// Exit status 2: the message on stderr and, with --json, as an error object on stdout.
int Fail(bool json, const std::string& message, bool usage = false) {
  fprintf(stderr, "devmem-doctor: %s\n", message.c_str());
  if (usage) fprintf(stderr, "%s\n", kUsage);
  if (json) printf("{\"ready\": false, \"error\": \"%s\"}\n", JsonString(message).c_str());
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

// --cleanup: the dead owners' rules and queue claims on every NIC, removed; one line (or one JSON
// object) per NIC.
int RunCleanup(bool json, const std::vector<devmem::NetDevice>& devices) {
  devmem::Result<std::shared_ptr<devmem::HostRegistry>> registry = devmem::HostRegistry::Open();
  if (!registry.ok()) return Fail(json, registry.status().message());
  bool failed = false;
  std::string objects;
  for (const devmem::NetDevice& device : devices) {
    if (device.loopback) continue;
    devmem::SteeringContext context{
        std::make_shared<devmem::EthtoolNtupleTable>(device.name), registry.value(), {}};
    devmem::Result<devmem::ReapOutcome> outcome = devmem::ReapDeadOwners(context);
    failed = failed || !outcome.ok();
    const std::string text =
        outcome.ok() ? outcome->ToString() : "failed: " + outcome.status().message();
    if (!json) {
      printf("%s: %s\n", device.name.c_str(), text.c_str());
      if (outcome.ok()) {
        for (const devmem::RuleRecord& record : outcome->removed) {
          printf("  removed rule %u: %s (%s)\n", record.location, record.match.ToString().c_str(),
                 record.owner.ToString().c_str());
        }
      }
      continue;
    }
    objects += devmem::Format(
        "%s{\"nic\": \"%s\", \"ok\": %s, \"removed\": %zu, \"dropped_records\": %zu, "
        "\"released_queues\": %zu, \"live_rules\": %zu, \"detail\": \"%s\"}",
        objects.empty() ? "" : ", ", JsonString(device.name).c_str(),
        outcome.ok() ? "true" : "false", outcome.ok() ? outcome->removed.size() : 0,
        outcome.ok() ? outcome->vanished.size() : 0, outcome.ok() ? outcome->released.size() : 0,
        outcome.ok() ? outcome->live_rules : 0, JsonString(text).c_str());
  }
  if (json) {
    printf("{\"registry\": \"%s\", \"cleanup\": [%s]}\n",
           JsonString(registry.value()->directory()).c_str(), objects.c_str());
  } else {
    printf("registry: %s\n", registry.value()->directory().c_str());
  }
  return failed ? 2 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  bool cleanup = false;
  std::vector<std::string> named;  // --ifname: checked even without an IP address
  std::optional<std::string> queue_arg;
  std::string bad_argument;  // reported once --json has been seen wherever it stands
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--json") == 0) {
      json = true;
    } else if (strcmp(argv[i], "--cleanup") == 0) {
      cleanup = true;
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
      queue_arg = argv[++i];
    } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      printf("devmem-doctor: checks devmem TCP readiness\n%s\n", kUsage);
      return 0;
    } else if (strcmp(argv[i], "--version") == 0) {
      printf("devmem-doctor (nccl-net-devmem) %s\n", devmem::kVersion);  // CMake's project(VERSION)
      return 0;
    } else if (bad_argument.empty()) {
      bad_argument = strcmp(argv[i], "--ifname") == 0 || strcmp(argv[i], "--queues") == 0
                         ? std::string(argv[i]) + " needs a value"
                         : std::string("unknown argument ") + argv[i];
    }
  }
  if (!bad_argument.empty()) return Fail(json, bad_argument, /*usage=*/true);

  // The plugin's configuration, read exactly as init reads it.
  auto lookup = [&](const char* name) -> const char* {
    if (queue_arg.has_value() && strcmp(name, "NCCL_DEVMEM_RX_QUEUES") == 0) {
      return queue_arg->c_str();
    }
    return getenv(name);  // NOLINT(concurrency-mt-unsafe)
  };
  devmem::Result<devmem::Config> config = devmem::Config::FromEnvironment(lookup);
  if (!config.ok()) {
    std::string message = config.status().message();
    if (queue_arg.has_value() && message.find("NCCL_DEVMEM_RX_QUEUES") != std::string::npos) {
      message += "; read from --queues";
    }
    return Fail(json, message);
  }
  devmem::Result<std::vector<devmem::NetDevice>> devices =
      named.empty() ? devmem::DiscoverDevices(config->socket_ifname, config->socket_family)
                    : NamedDevices(named);
  if (!devices.ok()) return Fail(json, devices.status().message());
  if (cleanup) return RunCleanup(json, devices.value());

  devmem::ReadinessReport report = devmem::CheckKernel();
  report.Append(devmem::CheckPrivileges());
  for (const devmem::NetDevice& device : devices.value()) {
    report.Append(devmem::CheckNic(device, config->rx_queues));
    report.Append(devmem::CheckNicTx(device));
    report.Append(devmem::DescribeSteering(device, config->rx_queues));
  }
  report.Append(devmem::CheckGpus(devices->front().pci_path));
  report.Append(devmem::CheckGpuConsumer(config->unpack));

  if (json) {
    printf("%s\n", report.ToJson().c_str());
  } else {
    fputs(report.ToText().c_str(), stdout);
    const devmem::CheckOutcome* failure = report.first_failure();
    if (failure == nullptr && report.warnings() == 0) {
      printf("devmem RX: READY\n");
    } else if (failure == nullptr) {
      // A WARN is what only the bind itself can confirm (or refute): ready, with its fix shown.
      printf("devmem RX: READY, %zu warning(s) only bind-rx can confirm: apply their fixes\n",
             report.warnings());
    } else {
      printf("devmem RX: NOT READY (first failure: %s %s: %s)\n", failure->scope.c_str(),
             failure->check.c_str(), failure->detail.c_str());
    }
  }
  return report.ready() ? 0 : 1;
}
