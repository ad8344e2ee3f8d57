// JSON for devmem-doctor's --json output.
#pragma once

#include <string>

namespace devmem::doctor {

// A JSON string body. Bytes outside printable ASCII are escaped one by one, so a message that
// echoes any environment value (or a peer's bytes) is still valid JSON.
inline std::string JsonString(const std::string& text) {
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (byte < 0x20 || byte >= 0x7f) {
      constexpr char kHex[] = "0123456789abcdef";
      out += "\\u00";
      out += kHex[byte >> 4];
      out += kHex[byte & 0xf];
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace devmem::doctor
