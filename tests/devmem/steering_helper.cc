// A rank stand-in for the host steering tests (host_steering_test.cc): a separate process that
// takes the lock, installs rules or claims queues through the product's code, prints what it got
// on stdout and then waits to be killed.
//   steering_helper <registry dir> <owner prefix> <lock prefix> lock <ifname>
//   steering_helper ... rules [mlx5:]<table file> <ifname> <peer IPv4> <first peer port> <count>
//   <queue> steering_helper ... claim <ifname> <pool, e.g. 8,9,10> <queues on the NIC> <gpu> <want>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "plugin/core/config.h"
#include "plugin/core/socket_address.h"
#include "plugin/devmem/flow_steering.h"
#include "plugin/setup/rx_queue_plan.h"
#include "tests/common/fake_ntuple_table.h"

namespace {

int Wait() {
  fflush(stdout);
  while (true) pause();
}

int Fail(const std::string& message) {
  printf("error %s\n", message.c_str());
  fflush(stdout);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace devmem;  // NOLINT
  if (argc < 6) return Fail("usage");
  RegistryOptions options;
  options.directories = {argv[1]};
  options.owner_prefix = argv[2];
  FlowRuleLockOptions locking;
  locking.name_prefix = argv[3];
  const std::string mode = argv[4];
  if (mode == "lock") {
    Result<FlowRuleLock> lock = FlowRuleLock::Acquire(argv[5], locking);
    if (!lock.ok()) return Fail(lock.status().message());
    printf("locked\n");
    return Wait();
  }
  Result<std::shared_ptr<HostRegistry>> registry = HostRegistry::Open(options);
  if (!registry.ok()) return Fail(registry.status().message());
  if (mode == "rules" && argc == 11) {
    // "<file>" is a fake fbnic table, "mlx5:<file>" one with explicit locations.
    const std::string table = argv[5];
    const bool mlx5 = table.rfind("mlx5:", 0) == 0;
    SteeringContext context{
        std::make_shared<testing::FileNtupleTable>(argv[6], mlx5 ? table.substr(5) : table, mlx5),
        registry.value(), locking};
    Result<SocketAddress> local = SocketAddress::FromString("198.18.0.1", 5000);
    const int first_port = atoi(argv[8]);
    std::vector<FlowSteeringRule> rules;
    for (int i = 0; i < atoi(argv[9]); ++i) {
      Result<SocketAddress> peer = SocketAddress::FromString(argv[7], first_port + i);
      if (!local.ok() || !peer.ok()) return Fail("bad address");
      Result<FlowSteeringRule> rule = FlowSteeringRule::Install(
          context, local.value(), peer.value(), static_cast<uint32_t>(atoi(argv[10])));
      if (!rule.ok()) return Fail(rule.status().message());
      rules.push_back(std::move(rule).value());
    }
    printf("installed %zu\n", rules.size());
    return Wait();
  }
  if (mode == "claim" && argc == 10) {
    Result<std::vector<uint32_t>> pool = ParseQueueList(argv[6]);
    if (!pool.ok()) return Fail(pool.status().message());
    std::vector<RxQueueInfo> rx(static_cast<size_t>(atoi(argv[7])));
    for (size_t i = 0; i < rx.size(); ++i) rx[i].id = static_cast<uint32_t>(i);
    Result<std::vector<uint32_t>> chosen = std::vector<uint32_t>();
    {
      // As the plugin does (rx_setup.cc BindFreeQueues): choose and record under the lock.
      Result<FlowRuleLock> lock = FlowRuleLock::Acquire(argv[5], locking);
      if (!lock.ok()) return Fail(lock.status().message());
      chosen = ChooseQueuesForBinder(*registry.value(), argv[5], pool.value(), rx,
                                     static_cast<size_t>(atoi(argv[9])));
      if (!chosen.ok()) return Fail(chosen.status().message());
      Status recorded =
          RecordQueueClaims(*registry.value(), argv[5], chosen.value(), atoi(argv[8]));
      if (!recorded.ok()) return Fail(recorded.message());
    }
    printf("queues %s\n", JoinQueueIds(chosen.value()).c_str());
    return Wait();
  }
  return Fail("usage");
}
