// devmem-doctor: is this host ready for devmem TCP receive into GPU memory? Runs the same
// checks the plugin uses to pick a connection's data path, one line per check (PASS, WARN, FAIL,
// SKIP), with the command that fixes each failure or warning. docs/doctor.md lists the checks.
//
//   devmem-doctor [--json] [--ifname NAME[,NAME...]] [--queues ID[,ID...]]
//   devmem-doctor --cleanup [--json] [--ifname NAME[,NAME...]]
//   devmem-doctor --version
//   devmem-doctor --serve --peer HOST [--port N] [--timeout S] [--json] [--verbose]
//   devmem-doctor --pair HOST [--port N] [--timeout S] [--max-bytes SIZE] [--json] [--verbose]
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
// --serve / --pair: a live check of two hosts over the plugin's own transport, both directions,
// every byte checked (tools/doctor_pair.h); --ifname and --queues there set NCCL_SOCKET_IFNAME
// (exact names) and NCCL_DEVMEM_RX_QUEUES for the plugin. Exit status 0 every byte as sent,
// 1 corruption, 2 error.
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
#include "plugin/core/net_device.h"
#include "plugin/core/version.h"
#include "plugin/devmem/flow_steering.h"
#include "plugin/setup/readiness.h"
#include "plugin/setup/rx_queue_plan.h"
#include "tools/doctor_json.h"
#include "tools/doctor_pair.h"

namespace {

using devmem::doctor::JsonString;

constexpr const char* kUsage =
    "usage: devmem-doctor [--json] [--ifname NAME[,NAME...]] [--queues ID[,ID...]]\n"
    "       devmem-doctor --cleanup [--json] [--ifname NAME[,NAME...]]\n"
    "       devmem-doctor --version\n"
    "       devmem-doctor --serve --peer HOST [--port N] [--timeout S] [--json] [--verbose]\n"
    "       devmem-doctor --pair HOST [--port N] [--timeout S] [--max-bytes SIZE] [--json] "
    "[--verbose]";

// Exit status 2: the message on stderr and, with --json, as an error object on stdout.
int Fail(bool json, const std::string& message, bool usage = false) {
  fprintf(stderr, "devmem-doctor: %s\n", message.c_str());
  if (usage) fprintf(stderr, "%s\n", kUsage);
  if (json) printf("{\"ready\": false, \"error\": \"%s\"}\n", JsonString(message).c_str());
  return 2;
}

// Options that take a value (the next argument).
bool TakesValue(const char* arg) {
  for (const char* name :
       {"--ifname", "--queues", "--peer", "--pair", "--port", "--timeout", "--max-bytes"}) {
    if (strcmp(arg, name) == 0) return true;
  }
  return false;
}

// A whole decimal number within [min, max], with an optional binary suffix K, M or G when
// `size`; nullopt otherwise.
std::optional<uint64_t> ParseNumber(const std::string& text, uint64_t min, uint64_t max,
                                    bool size = false) {
  uint64_t value = 0;
  size_t i = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    if (value > (UINT64_MAX - 9) / 10) return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(text[i] - '0');
  }
  if (i == 0) return std::nullopt;
  if (size && i + 1 == text.size()) {
    const char* units = "KMG";
    const char* unit = strchr(units, text[i] & ~0x20);
    if (unit == nullptr || *unit == '\0') return std::nullopt;
    const int shift = 10 * static_cast<int>(unit - units + 1);
    if (value > (max >> shift)) return std::nullopt;
    value <<= shift;
    ++i;
  }
  if (i != text.size() || value < min || value > max) return std::nullopt;
  return value;
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

// The command line, checked: `bad` holds the first problem (reported once --json has been
// seen, wherever it stands).
struct Arguments {
  bool json = false;
  bool cleanup = false;
  bool help = false;
  bool version = false;
  std::vector<std::string> named;  // --ifname: checked even without an IP address
  std::optional<std::string> queue_arg;
  devmem::doctor::PairOptions pair;  // host, json: filled for --serve / --pair
  std::string bad;

  bool pair_mode() const { return pair.serve || !pair.host.empty(); }
};

Arguments ParseArguments(int argc, char** argv) {
  Arguments args;
  std::string pair_host;     // --pair HOST
  std::string peer;          // --peer HOST (with --serve)
  bool pair_tuning = false;  // --port, --timeout, --max-bytes or --verbose seen
  bool max_bytes_given = false;
  auto bad = [&](const std::string& why) {
    if (args.bad.empty()) args.bad = why;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--json") {
      args.json = true;
    } else if (arg == "--cleanup") {
      args.cleanup = true;
    } else if (arg == "--serve") {
      args.pair.serve = true;
    } else if (arg == "--verbose") {
      args.pair.verbose = true;
      pair_tuning = true;
    } else if (arg == "--help" || arg == "-h") {
      args.help = true;
    } else if (arg == "--version") {
      args.version = true;
    } else if (!TakesValue(argv[i])) {
      bad(devmem::Format("unknown argument %s", arg.c_str()));
    } else if (i + 1 >= argc) {
      bad(devmem::Format("%s needs a value", arg.c_str()));
    } else {
      const std::string value = argv[++i];
      if (arg == "--ifname") {
        size_t pos = 0;
        while (pos <= value.size()) {
          size_t comma = value.find(',', pos);
          if (comma == std::string::npos) comma = value.size();
          if (comma > pos) args.named.push_back(value.substr(pos, comma - pos));
          pos = comma + 1;
        }
      } else if (arg == "--queues") {
        args.queue_arg = value;
      } else if (arg == "--pair") {
        pair_host = value;
      } else if (arg == "--peer") {
        peer = value;
      } else if (arg == "--port") {
        pair_tuning = true;
        const std::optional<uint64_t> port = ParseNumber(value, 1, 65535);
        if (!port.has_value()) {
          bad(devmem::Format("--port %s: expected a port number, 1 to 65535", value.c_str()));
        }
        args.pair.port = static_cast<uint16_t>(port.value_or(0));
      } else if (arg == "--timeout") {
        pair_tuning = true;
        const std::optional<uint64_t> seconds = ParseNumber(value, 1, 86400);
        if (!seconds.has_value()) {
          bad(devmem::Format("--timeout %s: expected seconds, 1 to 86400", value.c_str()));
        }
        args.pair.timeout = std::chrono::seconds(seconds.value_or(0));
      } else {  // --max-bytes
        pair_tuning = true;
        max_bytes_given = true;
        const std::optional<uint64_t> bytes = ParseNumber(
            value, devmem::doctor::kPairMinBytes, devmem::doctor::kPairMaxBytes, /*size=*/true);
        if (!bytes.has_value()) {
          bad(devmem::Format("--max-bytes %s: expected 4K to 64M", value.c_str()));
        }
        args.pair.max_bytes = bytes.value_or(0);
      }
    }
  }
  const bool serve = args.pair.serve;
  if (serve && !pair_host.empty()) bad("--serve and --pair exclude each other");
  if (serve && peer.empty()) bad("--serve needs --peer HOST, the one host it serves");
  if (!serve && !peer.empty()) bad("--peer goes with --serve");
  if ((serve || !pair_host.empty()) && args.cleanup) {
    bad("--cleanup and --serve/--pair exclude each other");
  }
  if (!serve && pair_host.empty() && pair_tuning) {
    bad("--port, --timeout, --max-bytes and --verbose go with --serve or --pair");
  }
  if (serve && max_bytes_given) bad("--max-bytes goes with --pair: the pair side sets the sizes");
  args.pair.host = serve ? peer : pair_host;
  args.pair.json = args.json;
  return args;
}

}  // namespace

int main(int argc, char** argv) {
  Arguments args = ParseArguments(argc, argv);
  const bool json = args.json;
  if (args.help) {
    printf("devmem-doctor: checks devmem TCP readiness\n%s\n", kUsage);
    return 0;
  }
  if (args.version) {
    printf("devmem-doctor (nccl-net-devmem) %s\n", devmem::kVersion);  // CMake's project(VERSION)
    return 0;
  }
  if (!args.bad.empty()) return Fail(json, args.bad, /*usage=*/true);
  const std::vector<std::string>& named = args.named;
  const std::optional<std::string>& queue_arg = args.queue_arg;
  if (args.pair_mode()) {
    // The plugin reads its NIC and queues from the environment, as under NCCL.
    // NOLINTBEGIN(concurrency-mt-unsafe): no thread runs yet
    if (!named.empty()) {
      std::string exact = "=";
      for (size_t n = 0; n < named.size(); ++n) {
        if (n > 0) exact += ',';
        exact += named[n];
      }
      setenv("NCCL_SOCKET_IFNAME", exact.c_str(), 1);
    }
    if (queue_arg.has_value()) setenv("NCCL_DEVMEM_RX_QUEUES", queue_arg->c_str(), 1);
    // NOLINTEND(concurrency-mt-unsafe)
  }

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
  if (args.pair_mode()) return devmem::doctor::RunPairCheck(args.pair);
  devmem::Result<std::vector<devmem::NetDevice>> devices =
      named.empty() ? devmem::DiscoverDevices(config->socket_ifname, config->socket_family)
                    : NamedDevices(named);
  if (!devices.ok()) return Fail(json, devices.status().message());
  if (args.cleanup) return RunCleanup(json, devices.value());

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
