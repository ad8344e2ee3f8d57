#include "tools/pair_report.h"

#include "plugin/core/status.h"
#include "tools/doctor_json.h"

namespace devmem::doctor {
namespace {

// Bytes per nanosecond are GB/s.
double Gbps(const SizeResult& row) {
  if (row.nanoseconds == 0) return 0;
  return static_cast<double>(row.size) * row.messages / static_cast<double>(row.nanoseconds);
}

std::string SideText(const PairSide& side) {
  return Format("%s %s (%s)", side.role.c_str(), side.address.c_str(), side.nic.c_str());
}

std::string PathText(const PathReport& path, bool receiver) {
  std::string out = PathModeName(path.mode);
  if (!path.detail.empty()) {
    out += ": ";
    out += path.detail;
  }
  if (receiver && path.mode != PathMode::kPlain) {
    out += Format(
        "\n                 %llu frags, %llu frag bytes, %llu linear bytes, %llu plain "
        "reads (flow steering missed)",
        static_cast<unsigned long long>(path.frags),
        static_cast<unsigned long long>(path.frag_bytes),
        static_cast<unsigned long long>(path.linear_bytes),
        static_cast<unsigned long long>(path.plain_reads));
  }
  return out;
}

std::string PathJson(const PathReport& path, bool receiver) {
  std::string out = Format("{\"mode\": \"%s\", \"detail\": \"%s\"", PathModeName(path.mode),
                           JsonString(path.detail).c_str());
  if (receiver) {
    out += Format(
        ", \"frags\": %llu, \"frag_bytes\": %llu, \"linear_bytes\": %llu, "
        "\"plain_reads\": %llu",
        static_cast<unsigned long long>(path.frags),
        static_cast<unsigned long long>(path.frag_bytes),
        static_cast<unsigned long long>(path.linear_bytes),
        static_cast<unsigned long long>(path.plain_reads));
  }
  out += "}";
  return out;
}

std::string SideJson(const PairSide& side) {
  return Format("{\"role\": \"%s\", \"address\": \"%s\", \"nic\": \"%s\"}",
                JsonString(side.role).c_str(), JsonString(side.address).c_str(),
                JsonString(side.nic).c_str());
}

}  // namespace

bool PairReport::corrupt() const {
  for (const DirectionReport& direction : directions) {
    for (const SizeResult& row : direction.sizes) {
      if (row.bad_messages > 0) return true;
    }
  }
  return false;
}

std::string PairReportText(const PairReport& report) {
  std::string out =
      Format("devmem-doctor --%s: %s <-> %s, control port %u\n", report.role.c_str(),
             SideText(report.local).c_str(), SideText(report.peer).c_str(), report.port);
  uint64_t messages = 0;
  for (const DirectionReport& d : report.directions) {
    out += Format("%s -> %s\n", SideText(d.sender).c_str(), SideText(d.receiver).c_str());
    out.append("  send path:    ").append(PathText(d.sender_path, false)).append("\n");
    out.append("  receive path: ").append(PathText(d.receiver_path, true)).append("\n");
    out += Format("  %12s %8s %9s  %s\n", "size(B)", "messages", "GB/s", "pattern check");
    for (const SizeResult& row : d.sizes) {
      messages += row.messages;
      std::string check = "ok";
      if (row.bad_messages > 0) {
        check = Format(
            "CORRUPT: %u of %u messages; first bad byte in message %u at offset %llu: "
            "expected 0x%02x, got 0x%02x (%llu bad bytes)",
            row.bad_messages, row.messages, row.first_bad_message,
            static_cast<unsigned long long>(row.first_bad_offset), row.expected, row.got,
            static_cast<unsigned long long>(row.bad_bytes));
      }
      out += Format("  %12llu %8u %9.3f  %s\n", static_cast<unsigned long long>(row.size),
                    row.messages, Gbps(row), check.c_str());
    }
  }
  if (report.corrupt()) {
    out += "pair check: CORRUPTION (payload differs from what was sent; see the rows above)\n";
  } else {
    out += Format("pair check: PASS (every byte of %llu messages in both directions as sent)\n",
                  static_cast<unsigned long long>(messages));
  }
  return out;
}

std::string PairReportJson(const PairReport& report) {
  std::string out = Format(
      "{\"ready\": %s, \"role\": \"%s\", \"port\": %u, \"local\": %s, "
      "\"peer\": %s, \"directions\": [",
      report.corrupt() ? "false" : "true", report.role.c_str(), report.port,
      SideJson(report.local).c_str(), SideJson(report.peer).c_str());
  for (int i = 0; i < 2; ++i) {
    const DirectionReport& d = report.directions[i];
    out += Format(
        "%s{\"from\": \"%s\", \"to\": \"%s\", \"send_path\": %s, \"receive_path\": %s, "
        "\"sizes\": [",
        i == 0 ? "" : ", ", d.sender.role.c_str(), d.receiver.role.c_str(),
        PathJson(d.sender_path, false).c_str(), PathJson(d.receiver_path, true).c_str());
    for (size_t r = 0; r < d.sizes.size(); ++r) {
      const SizeResult& row = d.sizes[r];
      out += Format("%s{\"size\": %llu, \"messages\": %u, \"gbps\": %.4f, \"bad_messages\": %u",
                    r == 0 ? "" : ", ", static_cast<unsigned long long>(row.size), row.messages,
                    Gbps(row), row.bad_messages);
      if (row.bad_messages > 0) {
        out += Format(
            ", \"first_bad\": {\"message\": %u, \"offset\": %llu, \"expected\": %u, "
            "\"got\": %u, \"bad_bytes\": %llu}",
            row.first_bad_message, static_cast<unsigned long long>(row.first_bad_offset),
            row.expected, row.got, static_cast<unsigned long long>(row.bad_bytes));
      }
      out += "}";
    }
    out += "]}";
  }
  out += "]}";
  return out;
}

}  // namespace devmem::doctor
