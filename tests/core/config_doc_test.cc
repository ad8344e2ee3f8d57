// docs/configuration.md against the code: its table lists exactly the variables
// Config::FromEnvironment reads (NCCL's own ones named in its text), each row's range is the one
// the parser enforces (read from the parser's own refusal message), and each row's default is
// the one Config takes. A variable added, renamed or re-ranged without its row fails here.
#include <gtest/gtest.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "plugin/core/config.h"

namespace devmem {
namespace {

struct Row {
  std::string default_text;
  std::string range_text;
};

std::string ReadDoc() {
  std::ifstream in(std::string(DEVMEM_SOURCE_DIR) + "/docs/configuration.md");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// `| \`NAME\` | default | range | meaning |` rows. (Parsed by hand: GCC 12 reports false
// maybe-uninitialized warnings inside <regex> under ASan.)
std::map<std::string, Row> TableRows(const std::string& doc) {
  std::map<std::string, Row> rows;
  std::istringstream lines(doc);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("| `", 0) != 0) continue;
    const size_t name_end = line.find('`', 3);
    if (name_end == std::string::npos) continue;
    const std::string name = line.substr(3, name_end - 3);
    if (name.empty() || name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") !=
                            std::string::npos) {
      continue;
    }
    std::vector<std::string> cells;
    size_t at = line.find(" | ", name_end);
    while (at != std::string::npos && cells.size() < 2) {
      const size_t next = line.find(" | ", at + 3);
      if (next == std::string::npos) break;
      cells.push_back(line.substr(at + 3, next - at - 3));
      at = next;
    }
    if (cells.size() == 2) rows[name] = Row{cells[0], cells[1]};
  }
  return rows;
}

// Every variable the parser looks up, by recording its getenv calls.
std::set<std::string> VariablesRead() {
  std::set<std::string> names;
  Result<Config> config = Config::FromEnvironment(
      [&](const char* name) -> const char* {
        names.insert(name);
        return nullptr;
      },
      2);
  EXPECT_TRUE(config.ok());
  return names;
}

Config Defaults(int cpus, const char* set_name = nullptr, const char* set_value = nullptr) {
  Result<Config> config = Config::FromEnvironment(
      [&](const char* name) -> const char* {
        return set_name != nullptr && std::string(name) == set_name ? set_value : nullptr;
      },
      cpus);
  EXPECT_TRUE(config.ok());
  return config.ok() ? config.value() : Config();
}

// The parser's refusal of a value no variable accepts, e.g. "... accepted range is [1, 64]".
std::string Refusal(const std::string& name) {
  Result<Config> config = Config::FromEnvironment(
      [&](const char* n) -> const char* { return name == n ? "?not-a-value" : nullptr; }, 2);
  return config.ok() ? std::string() : config.status().message();
}

// 524288 -> "512K", 1073741824 -> "1G", 100 -> "100": how the doc writes sizes.
std::string SizeText(uint64_t bytes) {
  if (bytes != 0 && bytes % (1ull << 30) == 0) return std::to_string(bytes >> 30) + "G";
  if (bytes != 0 && bytes % (1ull << 20) == 0) return std::to_string(bytes >> 20) + "M";
  if (bytes != 0 && bytes % (1ull << 10) == 0) return std::to_string(bytes >> 10) + "K";
  return std::to_string(bytes);
}

// `text` in backticks, as the doc quotes names and values. (Appends: GCC 12's -O3 -Wrestrict
// reports a false overlap for "`" + std::string + "`".)
std::string InBackticks(const std::string& text) {
  std::string quoted(1, '`');
  quoted.append(text);
  quoted.push_back('`');
  return quoted;
}

bool IsWordChar(char c) { return isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'; }

// `token` in `cell` as a whole word.
bool HasToken(const std::string& cell, const std::string& token) {
  for (size_t at = cell.find(token); at != std::string::npos; at = cell.find(token, at + 1)) {
    const bool starts = at == 0 || !IsWordChar(cell[at - 1]);
    const size_t end = at + token.size();
    const bool ends = end == cell.size() || !IsWordChar(cell[end]);
    if (starts && ends) return true;
  }
  return false;
}

TEST(ConfigDocTest, TheTableListsExactlyTheVariablesTheCodeReads) {
  const std::string doc = ReadDoc();
  ASSERT_FALSE(doc.empty()) << "docs/configuration.md not found under " << DEVMEM_SOURCE_DIR;
  const std::map<std::string, Row> rows = TableRows(doc);
  const std::set<std::string> read = VariablesRead();
  for (const std::string& name : read) {
    // NCCL's own variables, read (never set) to size devmem RX: named in the text.
    const bool ours = name.rfind("NCCL_DEVMEM_", 0) == 0 || name.rfind("NCCL_SOCKET_", 0) == 0;
    if (ours) {
      EXPECT_EQ(rows.count(name), 1u) << name << " is read by Config but has no table row";
    } else {
      EXPECT_NE(doc.find(InBackticks(name)), std::string::npos) << name << " is not mentioned";
    }
  }
  for (const auto& [name, row] : rows) {
    EXPECT_EQ(read.count(name), 1u) << "the table documents " << name << ", which Config never reads";
  }
}

TEST(ConfigDocTest, EachRangeIsTheOneTheParserEnforces) {
  const std::map<std::string, Row> rows = TableRows(ReadDoc());
  int checked = 0;
  for (const auto& [name, row] : rows) {
    const std::string refusal = Refusal(name);
    unsigned long long lo = 0;
    unsigned long long hi = 0;
    char first[32] = {};
    char second[32] = {};
    const size_t range_at = refusal.find("accepted range is [");
    const size_t values_at = refusal.find("accepted values are ");
    if (range_at != std::string::npos &&
        sscanf(refusal.c_str() + range_at, "accepted range is [%llu, %llu]", &lo, &hi) == 2) {
      const bool sizes = refusal.find("K, M or G suffix") != std::string::npos;
      std::string expected = sizes ? SizeText(lo) : std::to_string(lo);
      expected.append("..").append(sizes ? SizeText(hi) : std::to_string(hi));
      // A 0/1 switch is written as its two values.
      const bool as_switch = lo == 0 && hi == 1 && row.range_text.rfind("0, 1", 0) == 0;
      EXPECT_TRUE(as_switch || row.range_text.rfind(expected, 0) == 0)
          << name << ": the parser accepts [" << lo << ", " << hi << "], the doc says \""
          << row.range_text << "\" (expected it to start with " << expected << ")";
      ++checked;
    } else if (values_at != std::string::npos &&
               sscanf(refusal.c_str() + values_at, "accepted values are %31[a-z_] and %31[a-z_]",
                      first, second) == 2) {
      EXPECT_NE(row.range_text.find(InBackticks(first)), std::string::npos) << name;
      EXPECT_NE(row.range_text.find(InBackticks(second)), std::string::npos) << name;
      ++checked;
    }
  }
  EXPECT_GE(checked, 18) << "most variables are bounded integers or choices";
}

TEST(ConfigDocTest, EachDefaultIsTheOneConfigTakes) {
  const std::map<std::string, Row> rows = TableRows(ReadDoc());
  const Config few = Defaults(2);
  const Config many = Defaults(16);
  const Config emulated = Defaults(2, "NCCL_DEVMEM_EMULATE", "1");
  // name -> tokens its default cell must hold.
  const std::map<std::string, std::vector<std::string>> expected = {
      {"NCCL_DEVMEM_NSOCKS", {std::to_string(many.data_sockets), std::to_string(few.data_sockets)}},
      {"NCCL_DEVMEM_NTHREADS",
       {std::to_string(many.worker_threads), std::to_string(few.worker_threads)}},
      {"NCCL_DEVMEM_PROXY_BYTES", {SizeText(many.proxy_bytes), SizeText(few.proxy_bytes)}},
      {"NCCL_DEVMEM_INLINE_BYTES",
       {SizeText(few.inline_bytes), SizeText(many.inline_bytes),
        SizeText(few.queued_inline_bytes)}},
      {"NCCL_DEVMEM_CHUNK_SIZE", {SizeText(few.chunk_bytes)}},
      {"NCCL_DEVMEM_SOCKET_BUFFER_BYTES", {SizeText(few.socket_buffer_bytes)}},
      {"NCCL_DEVMEM_MAX_RECVS", {std::to_string(few.max_recvs)}},
      {"NCCL_DEVMEM_GPU_CONSUMER_TIMEOUT_MS", {std::to_string(few.gpu_consumer_timeout_ms)}},
      {"NCCL_DEVMEM_HANDSHAKE_TIMEOUT_MS", {std::to_string(few.handshake_timeout_ms)}},
      {"NCCL_DEVMEM_TCP_USER_TIMEOUT_MS", {std::to_string(few.tcp_user_timeout_ms)}},
      {"NCCL_DEVMEM_EMULATE", {few.emulate_devmem ? "1" : "0"}},
      {"NCCL_DEVMEM_EMULATE_TX", {few.emulate_tx ? "1" : "0"}},
      {"NCCL_DEVMEM_REQUIRE", {few.require_devmem ? "1" : "0"}},
      {"NCCL_DEVMEM_REQUIRE_TX", {few.require_tx ? "1" : "0"}},
      {"NCCL_DEVMEM_RX_REGION_BYTES", {SizeText(emulated.rx_region_bytes)}},
      {"NCCL_DEVMEM_EMULATE_SPLIT_PERCENT", {std::to_string(few.emulate_split_percent)}},
      {"NCCL_DEVMEM_EMULATE_LINEAR_PERCENT", {std::to_string(few.emulate_linear_percent)}},
      {"NCCL_DEVMEM_UNPACK", {few.unpack == UnpackMode::kNccl ? "nccl" : "plugin"}},
      {"NCCL_DEVMEM_VNIC_STRIPING", {few.adaptive_stripes ? "adaptive" : "roundrobin"}},
      {"NCCL_DEVMEM_METRICS_INTERVAL_MS", {std::to_string(few.metrics_interval_ms)}},
  };
  for (const auto& [name, tokens] : expected) {
    auto row = rows.find(name);
    ASSERT_NE(row, rows.end()) << name;
    for (const std::string& token : tokens) {
      EXPECT_TRUE(HasToken(row->second.default_text, token))
          << name << ": Config's default " << token << " is not in the doc's default cell \""
          << row->second.default_text << "\"";
    }
  }
  // What has no value of its own says so.
  for (const char* name : {"NCCL_SOCKET_IFNAME", "NCCL_SOCKET_FAMILY", "NCCL_DEVMEM_RAILS",
                           "NCCL_DEVMEM_METRICS_FILE"}) {
    auto row = rows.find(name);
    ASSERT_NE(row, rows.end()) << name;
    EXPECT_NE(row->second.default_text.find("unset"), std::string::npos) << name;
  }
}

}  // namespace
}  // namespace devmem
