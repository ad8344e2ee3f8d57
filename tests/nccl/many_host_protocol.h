// What many_host_test.cc (the parent) and many_host_rank.cc (one rank per namespace) say to
// each other: one text line per message, words separated by single spaces, so a failing run's
// transcript reads as it is.
//
// rank -> parent (the rank's stdout):
//   baseline FDS THREADS                 after init and one warm-up comm pair, opened and closed
//   handle PEER HEX                      the listen handle PEER connects to (kNetHandleMaxSize)
//   connected MS                         every comm is up (MS after the handles) and registered
//   streaming                            every comm completed kStreamingMessages messages
//   comm DIR PEER ok MESSAGES BYTES WINDOW_MESSAGES
//   comm DIR PEER failed CALL RESULT AT_MS MESSAGES WARN...
//   comm DIR PEER hung CALL WAITED_MS MESSAGES
//   corrupt DIR PEER SEQ TEXT...         a received message that is not the one sent
//   closing DIR PEER                     just before closeSend/closeRecv/closeListen
//   after FDS THREADS                    once every comm is closed
//   warn TEXT...                         a WARN line of the plugin's logger
//   error TEXT...                        the rank could not go on (it exits 1)
//   done                                 finalize returned; the rank exits 0
// parent -> rank (the rank's stdin):
//   peer PEER HEX                        PEER's handle for this rank to connect to
//   go                                   every rank is connected: start the traffic
//   killed                               the victim's link is cut and the victim SIGKILLed
//
// DIR is send or recv; CALL the ABI call that returned RESULT (an ncclResult_t; `check`: a
// message arrived wrong); WARN what the plugin logged for that call (empty when nothing);
// AT_MS is CLOCK_MONOTONIC in milliseconds (one clock for every process on the machine,
// namespaces or not); WINDOW_MESSAGES counts the messages completed between `killed` and the
// moment every comm of the rank with the victim had failed.
#pragma once

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <sstream>
#include <string>
#include <vector>

namespace devmem::testing::many_host {

// AT_MS and every deadline: CLOCK_MONOTONIC in milliseconds.
inline int64_t NowMs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

inline constexpr int kStreamingMessages = 2;
inline constexpr int kMessageTag = 0x5a;
// Message sizes, in turn (the last is the largest), and the all-to-all's message count per comm.
inline constexpr int kSizes = 3;
inline constexpr size_t kAllToAllSizes[kSizes] = {4 << 10, 256 << 10, 4 << 20};
inline constexpr size_t kKillSizes[kSizes] = {4 << 10, 256 << 10, 1 << 20};
inline constexpr int kAllToAllMessages = 3 * kSizes;

inline std::vector<std::string> SplitWords(const std::string& line) {
  std::vector<std::string> words;
  std::istringstream in(line);
  for (std::string word; in >> word;) words.push_back(word);
  return words;
}

// Listen handles travel as lowercase hex.
inline std::string Hex(const uint8_t* bytes, size_t n) {
  static const char kDigits[] = "0123456789abcdef";
  std::string text;
  for (size_t i = 0; i < n; ++i) {
    text += kDigits[bytes[i] >> 4];
    text += kDigits[bytes[i] & 15];
  }
  return text;
}
inline bool Unhex(const std::string& text, uint8_t* bytes, size_t n) {
  if (text.size() != 2 * n) return false;
  auto digit = [](char c) {
    return isdigit(static_cast<unsigned char>(c)) ? c - '0' : (c | 0x20) - 'a' + 10;
  };
  for (size_t i = 0; i < n; ++i) {
    const char hi = text[2 * i], lo = text[2 * i + 1];
    if (!isxdigit(static_cast<unsigned char>(hi)) || !isxdigit(static_cast<unsigned char>(lo))) {
      return false;
    }
    bytes[i] = static_cast<uint8_t>(digit(hi) << 4 | digit(lo));
  }
  return true;
}

// The words of `line` from index `first` on, joined again (the free text at a line's end).
inline std::string TextFrom(const std::string& line, size_t first) {
  size_t pos = 0;
  for (size_t i = 0; i < first && pos != std::string::npos; ++i) {
    pos = line.find(' ', pos);
    if (pos != std::string::npos) ++pos;
  }
  return pos == std::string::npos ? std::string() : line.substr(pos);
}

}  // namespace devmem::testing::many_host
