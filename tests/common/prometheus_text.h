// A reader of the Prometheus text exposition format (0.0.4), written from the format's rules
// (prometheus/docs content/docs/instrumenting/exposition_formats.md, "Text format details"), to
// check what the plugin writes instead of trusting its writer:
//   - lines end with '\n' (the last one too); `# HELP name text` and `# TYPE name type` come at
//     most once per family, before its first sample;
//   - a sample is `name{label="value",...} value`, names [a-zA-Z_:][a-zA-Z0-9_:]*, label names
//     [a-zA-Z_][a-zA-Z0-9_]*, label values with \\, \" and \n escapes;
//   - a histogram `x` has samples x_bucket{le="..."} (cumulative, le ascending, ending with
//     "+Inf"), x_sum and x_count, and its +Inf bucket equals x_count.
// Problems go to `errors`; samples are kept by their full text key, e.g.
// `nccl_devmem_bytes_total{direction="send",path="plain"}`.
#pragma once

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace devmem::testing {

struct Exposition {
  std::map<std::string, std::string> types;  // family -> counter/gauge/histogram
  std::map<std::string, std::string> help;
  std::map<std::string, double> samples;  // canonical key -> value
  std::vector<std::string> errors;

  double Value(const std::string& key) const {
    auto it = samples.find(key);
    return it == samples.end() ? std::nan("") : it->second;
  }
  bool Has(const std::string& key) const { return samples.count(key) == 1; }
};

inline bool IsNameStart(char c) {
  return isalpha(static_cast<unsigned char>(c)) != 0 || c == '_' || c == ':';
}
inline bool IsNameChar(char c) {
  return IsNameStart(c) || isdigit(static_cast<unsigned char>(c)) != 0;
}

// The family a sample name belongs to (histogram suffixes removed where the family exists).
inline std::string FamilyOf(const std::string& name, const Exposition& out) {
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string s(suffix);
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
      const std::string base = name.substr(0, name.size() - s.size());
      auto it = out.types.find(base);
      if (it != out.types.end() && it->second == "histogram") return base;
    }
  }
  return name;
}

inline Exposition ParseExposition(const std::string& text) {
  Exposition out;
  if (text.empty() || text.back() != '\n') out.errors.push_back("does not end with a newline");
  std::set<std::string> sampled_families;
  std::map<std::string, std::vector<std::pair<double, double>>> buckets;  // family -> (le, n)
  std::istringstream lines(text);
  int number = 0;
  for (std::string line; std::getline(lines, line);) {
    ++number;
    const std::string where = "line " + std::to_string(number) + ": ";
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::istringstream words(line);
      std::string hash, kind, name;
      words >> hash >> kind >> name;
      if (kind != "HELP" && kind != "TYPE") continue;  // a plain comment
      if (sampled_families.count(name) != 0) out.errors.push_back(where + kind + " after samples");
      std::string rest;
      std::getline(words, rest);
      if (!rest.empty() && rest[0] == ' ') rest.erase(0, 1);
      auto& table = kind == "HELP" ? out.help : out.types;
      if (table.count(name) != 0) out.errors.push_back(where + "second " + kind + " of " + name);
      if (kind == "TYPE" && rest != "counter" && rest != "gauge" && rest != "histogram" &&
          rest != "summary" && rest != "untyped") {
        out.errors.push_back(where + "unknown type " + rest);
      }
      table[name] = rest;
      continue;
    }
    size_t at = 0;
    if (!IsNameStart(line[0])) {
      out.errors.push_back(where + "bad metric name");
      continue;
    }
    while (at < line.size() && IsNameChar(line[at])) ++at;
    const std::string name = line.substr(0, at);
    std::string key = name;
    std::map<std::string, std::string> labels;
    if (at < line.size() && line[at] == '{') {
      ++at;
      key.push_back('{');
      bool first = true;
      while (at < line.size() && line[at] != '}') {
        if (!first) {
          if (line[at] != ',') break;
          ++at;
        }
        const size_t label_start = at;
        if (at >= line.size() ||
            !(isalpha(static_cast<unsigned char>(line[at])) || line[at] == '_')) {
          break;
        }
        while (at < line.size() &&
               (isalnum(static_cast<unsigned char>(line[at])) != 0 || line[at] == '_')) {
          ++at;
        }
        const std::string label = line.substr(label_start, at - label_start);
        if (line.compare(at, 2, "=\"") != 0) break;
        at += 2;
        std::string value;
        std::string raw;
        bool closed = false;
        while (at < line.size()) {
          const char c = line[at++];
          if (c == '"') {
            closed = true;
            break;
          }
          raw.push_back(c);
          if (c != '\\') {
            value.push_back(c);
            continue;
          }
          if (at >= line.size()) break;
          const char e = line[at++];
          raw.push_back(e);
          if (e == '\\')
            value.push_back('\\');
          else if (e == '"')
            value.push_back('"');
          else if (e == 'n')
            value.push_back('\n');
          else
            out.errors.push_back(where + "bad escape \\" + std::string(1, e));
        }
        if (!closed) break;
        labels[label] = value;
        if (!first) key.push_back(',');
        key.append(label).append("=\"").append(raw).push_back('"');
        first = false;
      }
      if (at >= line.size() || line[at] != '}') {
        out.errors.push_back(where + "bad label set");
        continue;
      }
      ++at;
      key.push_back('}');
    }
    if (at >= line.size() || line[at] != ' ') {
      out.errors.push_back(where + "no space before the value");
      continue;
    }
    const std::string value_text = line.substr(at + 1);
    char* end = nullptr;
    const double value = strtod(value_text.c_str(), &end);
    if (value_text.empty() || end == nullptr || *end != '\0') {
      out.errors.push_back(where + "bad value \"" + value_text + "\"");
      continue;
    }
    const std::string family = FamilyOf(name, out);
    if (out.types.count(family) == 0) out.errors.push_back(where + name + " has no # TYPE");
    if (out.help.count(family) == 0) out.errors.push_back(where + name + " has no # HELP");
    sampled_families.insert(family);
    if (out.samples.count(key) != 0) out.errors.push_back(where + "duplicate sample " + key);
    out.samples[key] = value;
    if (family != name && name.size() > 7 && name.compare(name.size() - 7, 7, "_bucket") == 0) {
      auto le = labels.find("le");
      if (le == labels.end()) {
        out.errors.push_back(where + "bucket without le");
      } else {
        buckets[family].push_back(
            {le->second == "+Inf" ? INFINITY : strtod(le->second.c_str(), nullptr), value});
      }
    }
  }
  for (const auto& [family, list] : buckets) {
    for (size_t i = 1; i < list.size(); ++i) {
      if (!(list[i].first > list[i - 1].first)) out.errors.push_back(family + ": le not ascending");
      if (list[i].second < list[i - 1].second) out.errors.push_back(family + ": not cumulative");
    }
    if (list.empty() || !std::isinf(list.back().first)) {
      out.errors.push_back(family + ": no +Inf bucket");
    } else if (out.Value(family + "_count") != list.back().second) {
      out.errors.push_back(family + ": +Inf bucket differs from _count");
    }
    if (!out.Has(family + "_sum")) out.errors.push_back(family + ": no _sum");
  }
  return out;
}

}  // namespace devmem::testing
