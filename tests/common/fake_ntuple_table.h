// A NIC rule table that lives in a file, so that it outlives the processes that change it, as a
// real NIC's table does: the fake-kernel seam behind NtupleTable for tests that kill a rank.
// Its answers follow fbnic (drivers/net/ethernet/meta/fbnic/fbnic_ethtool.c and fbnic_rpc.h, as
// of torvalds/linux 2025; ids 568703091 and 190795729 in the audit):
//   - 48 NFC locations: FBNIC_RPC_ACT_TBL_NFC_ENTRIES = RSS_OFFSET - NFC_OFFSET (64 - 14 - 2);
//   - GRXCLSRLCNT reports RX_CLS_LOC_SPECIAL and an insert must say RX_CLS_LOC_ANY, else EINVAL
//     (fbnic_set_cls_rule_ins: "if (fsp->location != RX_CLS_LOC_ANY) return -EINVAL");
//   - the driver takes the highest free location and answers ENOSPC when none is left
//     (fbnic_cls_rule_any_loc walks down from the top);
//   - source addresses share an 8-entry TCAM (FBNIC_RPC_TCAM_ACT0_IPSRC_IDX is GENMASK(2, 0));
//     a rule with a new address when all 8 are taken is ENOSPC (__fbnic_ip4_sync returns NULL);
//     a zero source mask takes no entry;
//   - reading or deleting an empty location is EINVAL (fbnic_set_cls_rule_del: state !=
//     FBNIC_TCAM_S_VALID).
// `explicit_locations` turns it into an mlx5-like table instead: the caller picks the location,
// and an insert at an occupied one replaces the rule there (mlx5e_ethtool_flow_replace).
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <map>
#include <set>
#include <string>

#include "plugin/devmem/flow_rule_location.h"
#include "plugin/devmem/nic_ethtool.h"

namespace devmem::testing {

inline constexpr uint32_t kFbnicNfcEntries = 48;
inline constexpr size_t kFbnicSourceAddressEntries = 8;

class FileNtupleTable final : public NtupleTable {
 public:
  FileNtupleTable(std::string ifname, std::string path, bool explicit_locations = false)
      : ifname_(std::move(ifname)), path_(std::move(path)), explicit_(explicit_locations) {}
  const std::string& ifname() const override { return ifname_; }

  Result<FlowRuleTable> Query() override {
    Locked locked(path_);
    FlowRuleTable table;
    table.size = kFbnicNfcEntries;
    table.driver_selects = !explicit_;
    if (explicit_) {
      for (const auto& [location, match] : Load()) table.used.push_back(location);
    }
    return table;
  }

  Result<uint32_t> Insert(const FlowMatch& match, uint32_t location, int* failed_errno) override {
    Locked locked(path_);
    std::map<uint32_t, FlowMatch> rules = Load();
    auto refuse = [&](int err) -> Result<uint32_t> {
      *failed_errno = err;
      return Status::Errno(err, "ETHTOOL_SRXCLSRLINS on %s (fake)", ifname_.c_str());
    };
    ++inserts_;
    if (explicit_) {
      if (location >= kFbnicNfcEntries) return refuse(EINVAL);
      rules[location] = match;  // replaces, as mlx5 does
      Store(rules);
      return location;
    }
    if (location != kRuleLocationAny) return refuse(EINVAL);
    uint32_t chosen = kFbnicNfcEntries;
    for (uint32_t i = kFbnicNfcEntries; i-- > 0;) {
      if (rules.count(i) == 0) {
        chosen = i;
        break;
      }
    }
    if (chosen == kFbnicNfcEntries) return refuse(ENOSPC);
    if (match.match_src_addr) {
      std::set<std::array<uint8_t, 16>> sources;
      for (const auto& [at, rule] : rules) {
        if (rule.match_src_addr) sources.insert(rule.src);
      }
      sources.insert(match.src);
      if (sources.size() > kFbnicSourceAddressEntries) return refuse(ENOSPC);
    }
    rules[chosen] = match;
    Store(rules);
    return chosen;
  }

  Result<std::optional<FlowMatch>> Read(uint32_t location) override {
    Locked locked(path_);
    std::map<uint32_t, FlowMatch> rules = Load();
    auto it = rules.find(location);
    if (it == rules.end()) return std::optional<FlowMatch>();
    return std::optional<FlowMatch>(it->second);
  }

  Status Remove(uint32_t location) override {
    Locked locked(path_);
    std::map<uint32_t, FlowMatch> rules = Load();
    if (rules.erase(location) == 0) {
      return Status::Errno(EINVAL, "ETHTOOL_SRXCLSRLDEL on %s (fake)", ifname_.c_str());
    }
    Store(rules);
    return Status::Ok();
  }

  std::map<uint32_t, FlowMatch> Rules() {
    Locked locked(path_);
    return Load();
  }
  int inserts() const { return inserts_; }

 private:
  // Serialises the processes that share the file (a NIC serialises its ethtool ops under RTNL).
  struct Locked {
    explicit Locked(const std::string& path)
        : fd(open((path + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
      if (fd >= 0) flock(fd, LOCK_EX);
    }
    ~Locked() {
      if (fd >= 0) close(fd);
    }
    int fd;
  };

  std::map<uint32_t, FlowMatch> Load() const {
    std::map<uint32_t, FlowMatch> rules;
    FILE* f = fopen(path_.c_str(), "re");
    if (f == nullptr) return rules;
    unsigned location = 0;
    FlowMatch m;
    unsigned family = 0, src_port = 0, dst_port = 0, match_src = 0, queue = 0;
    char src[33] = "", dst[33] = "";
    while (fscanf(f, "%u %u %32s %32s %u %u %u %u", &location, &family, src, dst, &src_port,
                  &dst_port, &match_src, &queue) == 8) {
      m.family = static_cast<int>(family);
      for (size_t i = 0; i < 16; ++i) {
        m.src[i] = static_cast<uint8_t>(std::stoul(std::string(src + 2 * i, 2), nullptr, 16));
        m.dst[i] = static_cast<uint8_t>(std::stoul(std::string(dst + 2 * i, 2), nullptr, 16));
      }
      m.src_port = static_cast<uint16_t>(src_port);
      m.dst_port = static_cast<uint16_t>(dst_port);
      m.match_src_addr = match_src != 0;
      m.queue = queue;
      rules[location] = m;
    }
    fclose(f);
    return rules;
  }

  void Store(const std::map<uint32_t, FlowMatch>& rules) const {
    FILE* f = fopen(path_.c_str(), "we");
    if (f == nullptr) return;
    for (const auto& [location, m] : rules) {
      std::string src, dst;
      for (size_t i = 0; i < 16; ++i) {
        char hex[3];
        snprintf(hex, sizeof(hex), "%02x", m.src[i]);
        src += hex;
        snprintf(hex, sizeof(hex), "%02x", m.dst[i]);
        dst += hex;
      }
      fprintf(f, "%u %d %s %s %u %u %d %u\n", location, m.family, src.c_str(), dst.c_str(),
              m.src_port, m.dst_port, m.match_src_addr ? 1 : 0, m.queue);
    }
    fclose(f);
  }

  std::string ifname_;
  std::string path_;
  bool explicit_;
  int inserts_ = 0;
};

}  // namespace devmem::testing
