#include "plugin/devmem/flow_steering.h"

#include <sys/socket.h>

#include <cerrno>
#include <iterator>

#include "plugin/core/log.h"
#include "plugin/devmem/flow_rule_location.h"

namespace devmem {
namespace {

const char* ScopeName(FlowScope scope) {
  return scope == FlowScope::kExact ? "exact 4-tuple" : "4-tuple without the source address";
}

// A refusal that a coarser scope may get past: the driver does not take this shape (EINVAL,
// EOPNOTSUPP) or ran out of a per-field resource (ENOSPC).
bool CoarserScopeMayHelp(int err) { return err == EINVAL || err == EOPNOTSUPP || err == ENOSPC; }

}  // namespace

std::string ReapOutcome::ToString() const {
  return Format(
      "%zu stale rule(s) removed, %zu stale record(s) of rules already gone dropped, "
      "%zu queue claim(s) of dead processes released, %zu rule(s) of live processes "
      "kept",
      removed.size(), vanished.size(), released.size(), live_rules);
}

Result<ReapOutcome> ReapDeadOwnersLocked(const SteeringContext& context) {
  NtupleTable& table = *context.table;
  HostRegistry& registry = *context.registry;
  ReapOutcome outcome;
  Result<std::vector<RuleRecord>> rules = registry.Rules(table.ifname());
  if (!rules.ok()) return rules.status();
  for (RuleRecord& record : rules.value()) {
    if (OwnerLiveness(record.owner, registry.options()) != Liveness::kGone) {
      ++outcome.live_rules;
      continue;
    }
    // Only our rule, exactly as recorded: the location may since hold another process's rule
    // (a driver that picks locations reuses freed ones) or an operator's.
    Result<std::optional<FlowMatch>> current = table.Read(record.location);
    if (!current.ok()) {
      return current.status().WithContext(Format("reading back stale flow rule %u of %s",
                                                 record.location, record.owner.ToString().c_str()));
    }
    if (current.value() == record.match) {
      DEVMEM_RETURN_IF_ERROR(table.Remove(record.location));
      outcome.removed.push_back(record);
    } else {
      outcome.vanished.push_back(record);
    }
    DEVMEM_RETURN_IF_ERROR(registry.Forget(record));
  }
  Result<std::vector<QueueClaim>> claims = registry.Queues(table.ifname());
  if (!claims.ok()) return claims.status();
  for (const QueueClaim& claim : claims.value()) {
    if (OwnerLiveness(claim.owner, registry.options()) != Liveness::kGone) continue;
    // The kernel unbound the queue when the owner's netlink socket closed
    // (net/core/netdev-genl.c netdev_nl_sock_priv_destroy): only the record is left.
    DEVMEM_RETURN_IF_ERROR(registry.Forget(claim));
    outcome.released.push_back(claim);
  }
  for (const RuleRecord& record : outcome.removed) {
    log::Info(log::kNet, "%s: removed flow rule %u (%s) left by %s, which is gone",
              table.ifname().c_str(), record.location, record.match.ToString().c_str(),
              record.owner.ToString().c_str());
  }
  return outcome;
}

Result<ReapOutcome> ReapDeadOwners(const SteeringContext& context) {
  Result<FlowRuleLock> lock = FlowRuleLock::Acquire(context.table->ifname(), context.locking);
  if (!lock.ok()) return lock.status();
  return ReapDeadOwnersLocked(context);
}

Result<FlowSteeringRule> FlowSteeringRule::Install(const SteeringContext& context,
                                                   const SocketAddress& local,
                                                   const SocketAddress& remote, uint32_t queue) {
  const std::string steering = Format("steering %s -> %s to RX queue %u", remote.ToString().c_str(),
                                      local.ToString().c_str(), queue);
  if (local.family() != remote.family() ||
      (local.family() != AF_INET && local.family() != AF_INET6)) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "%s: flow rule needs one address family, IPv4 or IPv6", steering.c_str());
  }
  NtupleTable& table = *context.table;
  const std::string& ifname = table.ifname();
  Result<Owner> owner = ThisProcess(context.registry->options());
  if (!owner.ok()) return owner.status().WithContext(steering);
  Result<FlowRuleLock> lock = FlowRuleLock::Acquire(ifname, context.locking);
  if (!lock.ok()) return lock.status().WithContext(steering);
  bool reaped = false;
  // Once per install, a full table is worth a look for rules of dead ranks.
  auto reap_once = [&]() -> Result<bool> {
    if (reaped) return false;
    reaped = true;
    Result<ReapOutcome> outcome = ReapDeadOwnersLocked(context);
    if (!outcome.ok()) return outcome.status();
    return !outcome->removed.empty();
  };
  std::string refusals;
  for (auto scope = std::begin(kFlowScopeLadder); scope != std::end(kFlowScopeLadder); ++scope) {
    const FlowMatch match = MatchConnection(local, remote, queue, *scope);
    const bool last_scope = std::next(scope) == std::end(kFlowScopeLadder);
    while (true) {
      Result<FlowRuleTable> state = table.Query();
      if (!state.ok()) return state.status().WithContext(steering + refusals);
      Result<uint32_t> location =
          ChooseRuleLocation(state->size, state->driver_selects, state->used);
      if (!location.ok()) {
        // Every scope takes one location: only stale rules can make room.
        Result<bool> freed = reap_once();
        if (!freed.ok()) return freed.status().WithContext(steering);
        if (freed.value()) continue;
        return location.status().WithContext(Format("%s%s: choosing a flow rule location on %s",
                                                    steering.c_str(), refusals.c_str(),
                                                    ifname.c_str()));
      }
      int err = 0;
      Result<uint32_t> inserted = table.Insert(match, location.value(), &err);
      if (inserted.ok()) {
        RuleRecord record{ifname, inserted.value(), match, owner.value()};
        Status recorded = context.registry->Add(record);
        if (!recorded.ok()) {
          // A rule nobody can find after a crash is the leak this registry exists to prevent.
          Status removed = table.Remove(record.location);
          return recorded.WithContext(
              Format("%s: recording flow rule %u (%s)", steering.c_str(), record.location,
                     removed.ok() ? "removed again" : removed.message().c_str()));
        }
        log::Info(log::kNet, "flow rule %u on %s: %s (%s)%s", record.location, ifname.c_str(),
                  match.ToString().c_str(), ScopeName(*scope), refusals.c_str());
        return FlowSteeringRule(context, std::move(record));
      }
      // fbnic answers a full table with ENOSPC at RX_CLS_LOC_ANY (fbnic_cls_rule_any_loc), the
      // same errno as a full source-address TCAM: reap first, then try the coarser scope.
      if (err == ENOSPC && state->driver_selects) {
        Result<bool> freed = reap_once();
        if (!freed.ok()) return freed.status().WithContext(steering);
        if (freed.value()) continue;
      }
      if (last_scope || !CoarserScopeMayHelp(err)) {
        return inserted.status().WithContext(steering + refusals);
      }
      refusals += Format(" (after the %s form was refused: %s)", ScopeName(*scope),
                         inserted.status().message().c_str());
      break;
    }
  }
  return Status::Error(ErrorKind::kInternal, "%s: no flow rule scope left", steering.c_str());
}

FlowSteeringRule::FlowSteeringRule(FlowSteeringRule&& other) noexcept
    : context_(std::move(other.context_)), record_(std::move(other.record_)), armed_(other.armed_) {
  other.armed_ = false;
}

FlowSteeringRule::~FlowSteeringRule() {
  if (!armed_) return;
  NtupleTable& table = *context_.table;
  auto warn = [&](const Status& why) {
    log::Warn(
        "removing flow rule %u on %s (%s): %s; it stays recorded, and a later process or "
        "devmem-doctor --cleanup removes it once this process is gone",
        record_.location, table.ifname().c_str(), record_.match.ToString().c_str(),
        why.message().c_str());
  };
  // Under the lock: between the read-back and the delete nobody may put a rule at the location.
  Result<FlowRuleLock> lock = FlowRuleLock::Acquire(table.ifname(), context_.locking);
  if (!lock.ok()) {
    warn(lock.status());
    return;
  }
  Result<std::optional<FlowMatch>> current = table.Read(record_.location);
  if (!current.ok()) {
    warn(current.status());
    return;
  }
  if (current.value() == record_.match) {
    if (Status removed = table.Remove(record_.location); !removed.ok()) {
      warn(removed);
      return;
    }
  } else {
    log::Warn(
        "flow rule %u on %s no longer holds %s (removed or replaced by someone else); "
        "left as it is",
        record_.location, table.ifname().c_str(), record_.match.ToString().c_str());
  }
  if (Status forgotten = context_.registry->Forget(record_); !forgotten.ok()) warn(forgotten);
}

}  // namespace devmem
