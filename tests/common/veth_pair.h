// Two network namespaces joined by a veth pair, for the tests of label netns (root only): the
// first namespace holds 198.18.0.1 and fd00:d3::1, the second 198.18.0.2 and fd00:d3::2, on
// interfaces named dmva<id> and dmvb<id> (NCCL_SOCKET_IFNAME=dmv selects them).
#pragma once

#include <unistd.h>

#include <string>
#include <vector>

#include "tests/common/shell.h"

namespace devmem::testing {

// Two namespaces and a veth pair between them; removed in the destructor.
class VethPair {
 public:
  VethPair() {
    const std::string id = std::to_string(getpid() % 100000);
    ns_a_ = "dmA" + id;
    ns_b_ = "dmB" + id;
    const std::string va = "dmva" + id;
    const std::string vb = "dmvb" + id;
    const std::vector<std::string> steps = {
        "ip netns add " + ns_a_,
        "ip netns add " + ns_b_,
        "ip link add " + va + " type veth peer name " + vb,
        "ip link set " + va + " netns " + ns_a_,
        "ip link set " + vb + " netns " + ns_b_,
        // RFC 2544 benchmarking and ULA ranges: addresses that exist only inside these netns.
        "ip -n " + ns_a_ + " addr add 198.18.0.1/24 dev " + va,
        "ip -n " + ns_b_ + " addr add 198.18.0.2/24 dev " + vb,
        "ip -n " + ns_a_ + " addr add fd00:d3::1/64 dev " + va + " nodad",
        "ip -n " + ns_b_ + " addr add fd00:d3::2/64 dev " + vb + " nodad",
        "ip -n " + ns_a_ + " link set " + va + " up",
        "ip -n " + ns_b_ + " link set " + vb + " up",
        "ip -n " + ns_a_ + " link set lo up",
        "ip -n " + ns_b_ + " link set lo up",
    };
    for (const std::string& step : steps) {
      std::string output;
      if (RunCommand(step, &output) != 0) {
        error_ = step + ": " + output;
        return;
      }
    }
    veth_b_ = vb;
  }
  ~VethPair() {
    RunCommand("ip netns del " + ns_a_);
    RunCommand("ip netns del " + ns_b_);
  }
  const std::string& error() const { return error_; }
  const std::string& ns_a() const { return ns_a_; }
  const std::string& ns_b() const { return ns_b_; }
  const std::string& veth_b() const { return veth_b_; }

 private:
  std::string ns_a_, ns_b_, veth_b_, error_;
};

}  // namespace devmem::testing
