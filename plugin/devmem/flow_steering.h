// Flow steering rules that survive their owner's death safely.
//
// A rule is chosen, inserted and recorded under the NIC's FlowRuleLock (network-namespace wide):
// its location as ethtool's rule manager chooses it (flow_rule_location.h), the scope ladder below
// when the driver refuses a shape, and a RuleRecord in the HostRegistry naming this process. It is
// removed when its FlowSteeringRule is destroyed, after reading it back (ETHTOOL_GRXCLSRULE) to
// make sure the location still holds our rule. ReapDeadOwners removes the rules whose recorded
// owner is gone; FlowSteeringRule::Install runs it once when the table is full, and the plugin at
// the first devmem bind on a NIC, and `devmem-doctor --cleanup`.
//
// Why one rule per data socket, not per listener: a receive comm's control socket connects to the
// same listener port as its data sockets (plugin/transport/listen_comm.cc), so any rule without
// the source port would steer the control socket onto the devmem queue too, where a read without
// MSG_SOCK_DEVMEM fails with EFAULT (net/ipv4/tcp.c tcp_recvmsg_locked: "dmabuf skbs can only be
// received with the MSG_SOCK_DEVMEM flag"). docs/flow-steering.md has the driver limits.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "plugin/core/socket_address.h"
#include "plugin/core/status.h"
#include "plugin/devmem/flow_rule_lock.h"
#include "plugin/devmem/host_registry.h"
#include "plugin/devmem/nic_ethtool.h"

namespace devmem {

// The scopes tried for one data socket, finest first. A driver that refuses a shape (EINVAL,
// EOPNOTSUPP) or runs out of a per-field resource (ENOSPC from fbnic's 8-entry source-address
// TCAM: fbnic_ethtool.c fbnic_set_cls_rule_ins, "__fbnic_ip4_sync ... return -ENOSPC") gets the
// next one; kAnySourceAddress takes no source-address slot (fbnic skips the IP-source TCAM when
// the mask is zero) and still matches only this socket's source and destination ports.
inline constexpr FlowScope kFlowScopeLadder[] = {FlowScope::kExact, FlowScope::kAnySourceAddress};

// Where a rule lives and who keeps its books.
struct SteeringContext {
  std::shared_ptr<NtupleTable> table;
  std::shared_ptr<HostRegistry> registry;
  FlowRuleLockOptions locking;
};

// What ReapDeadOwners did on one NIC.
struct ReapOutcome {
  std::vector<RuleRecord> removed;   // rules of dead owners, deleted from the NIC
  std::vector<RuleRecord> vanished;  // records of dead owners whose rule was already gone or
                                     // replaced by someone else's: the record alone was dropped
  std::vector<QueueClaim> released;  // queue claims of dead owners (the kernel unbound them)
  size_t live_rules = 0;             // records whose owner is alive (or in doubt): kept
  std::string ToString() const;
};

// Under the NIC's lock: every record of a dead owner is undone. A rule is deleted only when the
// location still holds exactly the recorded rule.
Result<ReapOutcome> ReapDeadOwners(const SteeringContext& context);
// The same, with the lock already held by the caller.
Result<ReapOutcome> ReapDeadOwnersLocked(const SteeringContext& context);

// An ntuple rule steering one data socket to an RX queue, recorded host-wide while it exists.
class FlowSteeringRule final {
 public:
  static Result<FlowSteeringRule> Install(const SteeringContext& context,
                                          const SocketAddress& local, const SocketAddress& remote,
                                          uint32_t queue);
  FlowSteeringRule(FlowSteeringRule&& other) noexcept;
  FlowSteeringRule& operator=(FlowSteeringRule&&) = delete;
  FlowSteeringRule(const FlowSteeringRule&) = delete;
  ~FlowSteeringRule();
  uint32_t location() const { return record_.location; }
  const FlowMatch& match() const { return record_.match; }

 private:
  FlowSteeringRule(SteeringContext context, RuleRecord record)
      : context_(std::move(context)), record_(std::move(record)), armed_(true) {}
  SteeringContext context_;
  RuleRecord record_;
  bool armed_ = false;
};

}  // namespace devmem
