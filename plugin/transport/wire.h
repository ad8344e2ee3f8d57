// Everything that crosses the network or the out-of-band handle, with explicit little-endian
// encodings so that peer bytes are parsed, never reinterpreted. Decoders validate what they can
// without context; the caller checks nonce and limits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "plugin/core/socket_address.h"
#include "plugin/core/status.h"

namespace devmem::wire {

// 2: messages are striped in chunks of the negotiated chunk size (plugin/transport/striping.h);
// a version-1 peer would place bytes differently, so the handshake refuses it.
// 3: a message header may name the data sockets its chunks use (kStripedOver, virtual NICs).
inline constexpr uint16_t kProtocolVersion = 4;

inline void PutU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
inline void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline uint16_t GetU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// The listen handle NCCL ships to the peer out of band (<= 128 bytes). Bytes [64, 72) are never
// sent by us: the connecting side keeps its in-progress connector pointer there, as NCCL's own
// socket transport does, because NCCL calls connect() again with the same handle buffer.
//
// A virtual NIC's listener also names its other member NICs' addresses (same family, the same
// port: it listens on the wildcard address), so the sender can spread its data sockets over
// them. They fill the bytes the single-NIC handle leaves zero, so a single-NIC handle is
// unchanged: byte 6 counts them; IPv4 ones take 4 bytes each at [36, 64) (up to 7), IPv6 ones
// 16 bytes each at [72, 120) (up to 3). Hence a virtual NIC of up to 8 IPv4 or 4 IPv6 NICs.
struct ListenHandle {
  static constexpr uint32_t kMagic = 0x4d44484e;  // "NHDM"
  static constexpr size_t kConnectorSlotOffset = 64;
  static constexpr size_t kMaxExtraIpv4 = 7;
  static constexpr size_t kMaxExtraIpv6 = 3;
  SocketAddress address;
  uint64_t nonce = 0;
  std::vector<SocketAddress> extra_members;  // the virtual NIC's members after the first

  // How many extra members a handle can carry for `family`.
  static size_t MaxExtraMembers(int family);

  void Encode(uint8_t* handle128) const;
  static Result<ListenHandle> Decode(const uint8_t* handle128);
};

enum class SocketRole : uint8_t { kControl = 0, kData = 1 };

// First bytes on every connection, sender -> receiver.
struct Hello {
  static constexpr uint32_t kMagic = 0x4d444c48;  // "HLDM"
  static constexpr size_t kSize = 40;
  static constexpr size_t kRoleOffset = 6;
  static constexpr size_t kNonceOffset = 20;
  uint16_t version = kProtocolVersion;
  SocketRole role = SocketRole::kControl;
  uint16_t socket_index = 0;  // data sockets: 0..data_sockets-1
  uint16_t data_sockets = 0;
  uint32_t chunk_bytes = 0;
  uint32_t inline_bytes = 0;
  uint64_t nonce = 0;
  uint64_t connection_id = 0;  // groups the 1 + N sockets of one connect()

  void Encode(uint8_t* out) const;
  // Checks magic, version and field ranges (limits from config.h).
  static Result<Hello> Decode(const uint8_t* in);
  // The first `length` (<= kSize) bytes of a hello in flight: an error as soon as they
  // cannot begin a valid one (magic, version, role), so a listener drops junk on its first
  // bytes instead of holding the socket until a full hello or the timeout.
  static Status CheckPrefix(const uint8_t* in, size_t length);
};

// Receiver -> sender on the control socket once all sockets of a connection are in.
struct HelloReply {
  static constexpr uint32_t kMagic = 0x4d445052;  // "RPDM"
  static constexpr size_t kSize = 24;
  enum Code : uint32_t { kAccepted = 0, kRejected = 1 };
  uint32_t code = kAccepted;
  uint64_t nonce = 0;
  // Protocol 4: the largest inline payload the receiver takes on this connection (at most the
  // hello's): a devmem RX connection keeps payload off the control stream, whose bytes land in
  // host memory. 0 in a rejection.
  uint32_t inline_bytes = 0;

  void Encode(uint8_t* out) const;
  static Result<HelloReply> Decode(const uint8_t* in);
};

// One per isend on the control socket. kStriped payload travels on the data sockets; kInline
// payload follows the header on the control socket. kStripedOver is kStriped over only the data
// sockets of `sockets` (bit s: socket s), 8 more header bytes: a sender spreading a virtual
// NIC's load steers chunks away from sockets whose member is slower (striping.h).
struct MessageHeader {
  static constexpr uint32_t kStriped = 0x4d44534d;      // "MSDM"
  static constexpr uint32_t kInline = 0x4d44494d;       // "MIDM"
  static constexpr uint32_t kStripedOver = 0x4d444f4d;  // "MODM"
  static constexpr size_t kSize = 16;
  static constexpr size_t kMaxSize = 24;  // kStripedOver
  uint32_t kind = kStriped;
  int32_t tag = 0;
  uint64_t size = 0;
  uint64_t sockets = 0;  // kStripedOver only; never 0 there

  // Bytes of the encoded header whose first 4 bytes are `in` (16, or 24 for kStripedOver).
  static size_t EncodedSize(const uint8_t* in);
  size_t encoded_size() const { return kind == kStripedOver ? kMaxSize : kSize; }
  void Encode(uint8_t* out) const;  // encoded_size() bytes
  // `in` holds EncodedSize(in) bytes. Checks the kind, the size limit and a non-empty socket
  // set; the receiver checks the set against its socket count.
  static Result<MessageHeader> Decode(const uint8_t* in);
};

}  // namespace devmem::wire
