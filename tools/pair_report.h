// What `devmem-doctor --serve` / `--pair` prints: per direction, the data path each side's plugin
// ran, and per message size the receiver's GB/s and any corruption; as text or as one JSON
// object.
#pragma once

#include <string>
#include <vector>

#include "tools/pair_protocol.h"

namespace devmem::doctor {

struct PairSide {
  std::string role;     // "pair" or "serve"
  std::string address;  // where its plugin listens
  std::string nic;
};

struct DirectionReport {
  PairSide sender;
  PairSide receiver;
  PathReport sender_path;
  PathReport receiver_path;
  std::vector<SizeResult> sizes;  // as the receiver saw them
};

struct PairReport {
  std::string role;  // of this side
  uint16_t port = 0;
  PairSide local;
  PairSide peer;
  DirectionReport directions[2];  // 0: pair -> serve, 1: serve -> pair

  // Some message of either direction had a byte off the pattern.
  bool corrupt() const;
};

std::string PairReportText(const PairReport& report);
std::string PairReportJson(const PairReport& report);

}  // namespace devmem::doctor
