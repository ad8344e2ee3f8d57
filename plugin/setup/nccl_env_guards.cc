#include "plugin/setup/nccl_env_guards.h"

#include <strings.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "plugin/core/log.h"

namespace devmem {
namespace {

bool IsZero(const char* value) { return value != nullptr && strcmp(value, "0") == 0; }

}  // namespace

bool ProtoEnablesLl128(const char* value) {
  if (value == nullptr || value[0] == '\0') return true;  // NCCL's default tuning may pick it
  // NCCL's parseList (src/graph/tuning.cc): a leading '^' inverts the list.
  const bool exclude = value[0] == '^';
  const char* cursor = exclude ? value + 1 : value;
  bool listed = false;
  while (*cursor != '\0') {
    const char* end = cursor;
    while (*end != '\0' && *end != ',') ++end;
    std::string token(cursor, static_cast<size_t>(end - cursor));
    // Per-collective forms ("allreduce:ll128;...") name LL128 inside a token: count those too.
    if (strcasecmp(token.c_str(), "ll128") == 0 || strcasestr(token.c_str(), "ll128") != nullptr) {
      listed = true;
    }
    cursor = *end == ',' ? end + 1 : end;
  }
  return exclude ? !listed : listed;
}

NcclEnvNeeds NeedsOf(const std::vector<NicEnvFacts>& nics) {
  NcclEnvNeeds needs;
  bool every_cuda_nic_has_tx = true;
  for (const NicEnvFacts& nic : nics) {
    const bool cuda = nic.gpu_rx_region || nic.devmem_tx;
    needs.gpu_rx_region |= nic.gpu_rx_region;
    needs.unpack |= nic.unpack;
    needs.cuda_pointers |= cuda;
    needs.devmem_tx |= nic.devmem_tx;
    if (cuda && !nic.devmem_tx) every_cuda_nic_has_tx = false;
  }
  needs.devmem_tx = needs.devmem_tx && every_cuda_nic_has_tx;
  return needs;
}

NcclEnvPlan PlanNcclEnvGuards(const NcclEnvNeeds& needs, const EnvGetter& getenv_fn) {
  NcclEnvPlan plan;
  auto guard_zero = [&](const char* name, const char* reason, bool unpack_conflict) {
    const char* value = getenv_fn(name);
    if (value == nullptr) {
      plan.to_set.push_back({name, "0", reason});
    } else if (!IsZero(value)) {
      plan.warnings.push_back(std::string(name) + "=" + value + " is set: " + reason);
      if (unpack_conflict) plan.unpack_unsafe = true;
    }
  };
  if (needs.unpack) {
    guard_zero("NCCL_PAT_ENABLE",
               "NCCL's PAT algorithms never run the device unpack, so their steps would skip it "
               "and desynchronize its queue",
               true);
    guard_zero("NCCL_GRAPH_REGISTER",
               "registered buffers put NCCL on NetRegMode, where the unpack writes through a "
               "NULL step buffer",
               true);
    guard_zero("NCCL_LOCAL_REGISTER",
               "registered buffers put NCCL on NetRegMode, where the unpack writes through a "
               "NULL step buffer",
               true);
    // A conflict moves every receive to the plugin's consumer, which is correct under all of
    // them: then none of the unpack-only settings is forced on the job.
    if (plan.unpack_unsafe) plan.to_set.clear();
  }
  const bool unpack_stays = needs.unpack && !plan.unpack_unsafe;
  if (needs.gpu_rx_region || unpack_stays) {
    const char* proto = getenv_fn("NCCL_PROTO");
    const char* reason =
        "NCCL's LL128 reader trusts a 128-byte line once its flag word landed, and receive "
        "payload scattered out of a GPU RX region is not written a line at a time";
    if (proto == nullptr) {
      plan.to_set.push_back({"NCCL_PROTO", "^LL128", reason});
    } else if (ProtoEnablesLl128(proto)) {
      plan.warnings.push_back(std::string("NCCL_PROTO=") + proto + " leaves LL128 enabled: " +
                              reason + "; LL128 data may be corrupted (set NCCL_PROTO=^LL128)");
    }
  }
  if (needs.cuda_pointers && !needs.devmem_tx) {
    guard_zero("NCCL_NET_GDR_READ",
               "the send side has no devmem TX, so a send buffer in GPU memory costs a "
               "device-to-host copy per message; NCCL keeps it in host memory instead",
               false);
  }
  return plan;
}

void ApplyNcclEnvGuards(const NcclEnvPlan& plan) {
  for (const NcclEnvSetting& s : plan.to_set) {
    // overwrite = 0: a value that appeared since the plan was made still wins.
    if (setenv(s.name.c_str(), s.value.c_str(), 0) != 0) {  // NOLINT(concurrency-mt-unsafe)
      log::Warn("could not set %s=%s in the environment (%s): %s", s.name.c_str(), s.value.c_str(),
                strerror(errno), s.reason.c_str());
      continue;
    }
    log::Info(log::kInit, "set %s=%s (it was unset): %s", s.name.c_str(), s.value.c_str(),
              s.reason.c_str());
  }
  for (const std::string& w : plan.warnings) {
    log::Warn("%s%s", w.c_str(),
              plan.unpack_unsafe ? "; NCCL_DEVMEM_UNPACK=nccl falls back to the plugin's scatter "
                                   "kernel, which is correct under it"
                                 : "");
  }
}

}  // namespace devmem
