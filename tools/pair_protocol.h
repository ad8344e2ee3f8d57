// The control connection of `devmem-doctor --serve` / `--pair`: one TCP connection on the
// operator's port that carries the few messages the plugin's own connections cannot (the NCCL
// listen handles, the plan, each side's results). Every message is a frame: a 12-byte header
// (magic, version, type, payload length; little-endian) and a payload whose length is checked
// against its type's limit before a byte of it is read. Decoders trust nothing: a wrong magic,
// version, type or length, a truncated or overlong payload, a value out of range or a
// non-printable byte in a string is an error naming the field, never a crash or a hang.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "plugin/core/nccl_contract.h"
#include "plugin/core/status.h"

namespace devmem::doctor {

inline constexpr uint32_t kPairMagic = 0x50444d44;  // "DMDP" on the wire
inline constexpr uint16_t kPairVersion = 1;
inline constexpr size_t kFrameHeaderBytes = 12;
// Message sizes of a run: 4 KiB up to 64 MiB (the range), each size 4x the last.
inline constexpr uint64_t kPairMinBytes = 4 << 10;
inline constexpr uint64_t kPairMaxBytes = 64 << 20;
inline constexpr uint64_t kPairSizeFactor = 4;
inline constexpr size_t kMaxSizeRows = 16;
// Strings on the wire: a reason or a plugin log line, cut to this many printable bytes.
inline constexpr size_t kMaxWireText = 1024;
inline constexpr size_t kMaxNicName = 64;

enum class MessageType : uint16_t {
  kHello = 1,   // pair -> serve: the plan (message sizes)
  kReject = 2,  // serve -> a caller it does not serve: why; then it closes
  kHandle = 3,  // both: this side's NCCL listen handle and limits
  kResult = 4,  // both: what this side's plugin did and what it received
  kError = 5,   // either: this side failed and stops; why
  kStart = 6,   // the sender of a direction: it sends now (the receiver's clock starts)
};

struct FrameHeader {
  MessageType type = MessageType::kError;
  uint32_t length = 0;  // payload bytes that follow
};

// Checks magic, version, type and the type's length limit.
Result<FrameHeader> DecodeFrameHeader(const uint8_t* bytes);
// A whole frame: header and payload.
std::vector<uint8_t> EncodeFrame(MessageType type, const std::vector<uint8_t>& payload);
const char* MessageTypeName(MessageType type);

struct Hello {
  uint64_t min_bytes = kPairMinBytes;
  uint64_t max_bytes = kPairMaxBytes;
};
std::vector<uint8_t> Encode(const Hello& hello);
Result<Hello> DecodeHello(const std::vector<uint8_t>& payload);

struct HandleMessage {
  uint8_t handle[nccl::kNetHandleMaxSize] = {};
  uint64_t max_message_bytes = 0;  // getProperties' maxP2pBytes of the device that listens
  std::string nic;
};
std::vector<uint8_t> Encode(const HandleMessage& message);
Result<HandleMessage> DecodeHandle(const std::vector<uint8_t>& payload);

// The data path one side's plugin ran for one comm, as the plugin decided it.
enum class PathMode : uint8_t { kUnknown = 0, kPlain = 1, kDevmem = 2, kEmulated = 3 };
const char* PathModeName(PathMode mode);

struct PathReport {
  PathMode mode = PathMode::kUnknown;
  std::string detail;  // plain: the plugin's reason; else the plugin's own words for the path
  // Receive side (zero on the send side): what the comm's frag receivers counted.
  uint64_t frags = 0;
  uint64_t frag_bytes = 0;    // payload that arrived as frags in the RX region
  uint64_t linear_bytes = 0;  // payload that arrived as plain bytes on a devmem socket
  uint64_t plain_reads = 0;   // devmem reads without frags: flow steering missed (N8)
};

// One message size of one direction, as its receiver saw it.
struct SizeResult {
  uint64_t size = 0;
  uint32_t messages = 0;
  uint32_t bad_messages = 0;  // messages with at least one byte off the pattern
  uint64_t nanoseconds = 0;   // first irecv posted to last one done
  // The first bad byte of the first bad message (bad_messages > 0).
  uint32_t first_bad_message = 0;
  uint64_t first_bad_offset = 0;
  uint8_t expected = 0;
  uint8_t got = 0;
  uint64_t bad_bytes = 0;  // in all bad messages
};

struct ResultMessage {
  PathReport send_path;
  PathReport recv_path;
  std::vector<SizeResult> received;  // the direction this side received, one row per size
};
std::vector<uint8_t> Encode(const ResultMessage& message);
Result<ResultMessage> DecodeResult(const std::vector<uint8_t>& payload);

// Start: the direction (0: pair -> serve, 1: serve -> pair).
std::vector<uint8_t> EncodeStart(uint32_t direction);
Result<uint32_t> DecodeStart(const std::vector<uint8_t>& payload);

// Reject and Error: one line of text.
std::vector<uint8_t> EncodeText(const std::string& text);
Result<std::string> DecodeText(const std::vector<uint8_t>& payload);

// The message sizes a run uses: min, 4 x min, ... up to max (max itself included when the
// ladder does not land on it).
std::vector<uint64_t> SizeLadder(uint64_t min_bytes, uint64_t max_bytes);

// How many messages of `size` bytes each direction carries: about 128 MiB per size, at least 2
// and at most 64 (both sides compute the plan from the hello, so this is part of the protocol).
uint32_t MessagesPerSize(uint64_t size);

// `text` cut to `limit` bytes, every byte outside printable ASCII replaced by '?': what a
// string must be before it goes on the wire.
std::string PrintableText(const std::string& text, size_t limit = kMaxWireText);

}  // namespace devmem::doctor
