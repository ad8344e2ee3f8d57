#include "plugin/core/rails.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>

namespace devmem {
namespace {

constexpr const char* kVariable = "NCCL_DEVMEM_RAILS";
constexpr long kMaxId = 32767;  // int16_t, and never the -1 of "undefined"

// A decimal id in [0, kMaxId], nothing else (no sign, no blanks, no suffix).
bool ParseId(const std::string& text, int16_t* out) {
  if (text.empty() || text.size() > 5 ||
      text.find_first_not_of("0123456789") != std::string::npos) {
    return false;
  }
  const long value = strtol(text.c_str(), nullptr, 10);
  if (value > kMaxId) return false;
  *out = static_cast<int16_t>(value);
  return true;
}

}  // namespace

Result<std::vector<RailAssignment>> ParseRails(const char* text) {
  std::vector<RailAssignment> rails;
  if (text == nullptr || text[0] == '\0') return rails;
  const std::string all = text;
  size_t pos = 0;
  while (pos <= all.size()) {
    size_t comma = all.find(',', pos);
    if (comma == std::string::npos) comma = all.size();
    const std::string item = all.substr(pos, comma - pos);
    pos = comma + 1;
    const size_t equals = item.find('=');
    RailAssignment rail;
    bool ok = equals != std::string::npos && equals > 0;
    if (ok) {
      rail.ifname = item.substr(0, equals);
      const std::string ids = item.substr(equals + 1);
      const size_t slash = ids.find('/');
      ok = ParseId(ids.substr(0, slash), &rail.rail) &&
           (slash == std::string::npos || ParseId(ids.substr(slash + 1), &rail.plane));
    }
    if (!ok || rail.ifname.find_first_of(" \t/=") != std::string::npos) {
      return Status::Error(ErrorKind::kInvalidArgument,
                           "%s=\"%s\": item \"%s\" is not NAME=RAIL or NAME=RAIL/PLANE (an exact "
                           "interface name, ids in [0, %ld], items separated by commas)",
                           kVariable, text, item.c_str(), kMaxId);
    }
    if (FindRail(rails, rail.ifname) != nullptr) {
      return Status::Error(ErrorKind::kInvalidArgument, "%s=\"%s\" names interface %s twice",
                           kVariable, text, rail.ifname.c_str());
    }
    rails.push_back(rail);
  }
  return rails;
}

const RailAssignment* FindRail(const std::vector<RailAssignment>& rails,
                               const std::string& ifname) {
  auto it = std::find_if(rails.begin(), rails.end(),
                         [&](const RailAssignment& r) { return r.ifname == ifname; });
  return it == rails.end() ? nullptr : &*it;
}

std::string FormatRails(const std::vector<RailAssignment>& rails) {
  std::string out;
  for (const RailAssignment& r : rails) {
    if (!out.empty()) out += ',';
    out += r.ifname;
    out += '=';
    out += std::to_string(r.rail);
    if (r.plane >= 0) {
      out += '/';
      out += std::to_string(r.plane);
    }
  }
  return out;
}

}  // namespace devmem
