#include "plugin/transport/wire.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "plugin/core/config.h"
#include "plugin/core/nccl_contract.h"

namespace devmem::wire {

static_assert(ListenHandle::kConnectorSlotOffset + sizeof(void*) <= nccl::kNetHandleMaxSize);
// The extra members stay clear of the nonce (ends at 36), the connector slot [64, 72) and the
// handle's end.
static_assert(36 + 4 * ListenHandle::kMaxExtraIpv4 <= ListenHandle::kConnectorSlotOffset);
static_assert(ListenHandle::kConnectorSlotOffset + sizeof(void*) <= 72 &&
              72 + 16 * ListenHandle::kMaxExtraIpv6 <= nccl::kNetHandleMaxSize);

void ListenHandle::Encode(uint8_t* handle128) const {
  memset(handle128, 0, nccl::kNetHandleMaxSize);
  PutU32(handle128, kMagic);
  PutU16(handle128 + 4, kProtocolVersion);
  address.Encode(handle128 + 8);
  PutU64(handle128 + 28, nonce);
  // Create() checked the count and that every member has the listener's family.
  handle128[6] = static_cast<uint8_t>(extra_members.size());
  for (size_t i = 0; i < extra_members.size(); ++i) {
    const sockaddr* sa = extra_members[i].get();
    if (sa->sa_family == AF_INET) {
      memcpy(handle128 + 36 + 4 * i, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, 4);
    } else {
      memcpy(handle128 + 72 + 16 * i, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, 16);
    }
  }
}

size_t ListenHandle::MaxExtraMembers(int family) {
  return family == AF_INET ? kMaxExtraIpv4 : family == AF_INET6 ? kMaxExtraIpv6 : 0;
}

Result<ListenHandle> ListenHandle::Decode(const uint8_t* handle128) {
  if (GetU32(handle128) != kMagic) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "connect handle has magic 0x%08x, expected 0x%08x (not a devmem handle)",
                         GetU32(handle128), kMagic);
  }
  if (uint16_t version = GetU16(handle128 + 4); version != kProtocolVersion) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "connect handle has protocol version %u, this plugin speaks %u", version,
                         kProtocolVersion);
  }
  Result<SocketAddress> address = SocketAddress::Decode(handle128 + 8);
  if (!address.ok()) return address.status();
  ListenHandle out;
  out.address = address.value();
  out.nonce = GetU64(handle128 + 28);
  const size_t extra = handle128[6];
  const int family = out.address.family();
  if (extra > MaxExtraMembers(family)) {
    return Status::Error(ErrorKind::kInvalidArgument,
                         "connect handle names %zu more member NICs, above the %zu a %s handle "
                         "can carry",
                         extra, MaxExtraMembers(family), family == AF_INET6 ? "IPv6" : "IPv4");
  }
  for (size_t i = 0; i < extra; ++i) {
    sockaddr_storage storage{};
    socklen_t length = 0;
    if (family == AF_INET) {
      auto* in = reinterpret_cast<sockaddr_in*>(&storage);
      in->sin_family = AF_INET;
      in->sin_port = htons(out.address.port());
      memcpy(&in->sin_addr, handle128 + 36 + 4 * i, 4);
      length = sizeof(sockaddr_in);
    } else {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&storage);
      in6->sin6_family = AF_INET6;
      in6->sin6_port = htons(out.address.port());
      memcpy(&in6->sin6_addr, handle128 + 72 + 16 * i, 16);
      length = sizeof(sockaddr_in6);
    }
    Result<SocketAddress> member =
        SocketAddress::FromSockaddr(reinterpret_cast<const sockaddr*>(&storage), length);
    if (!member.ok()) return member.status().WithContext("connect handle member NIC");
    out.extra_members.push_back(member.value());
  }
  return out;
}

void Hello::Encode(uint8_t* out) const {
  memset(out, 0, kSize);
  PutU32(out, kMagic);
  PutU16(out + 4, version);
  out[kRoleOffset] = static_cast<uint8_t>(role);
  PutU16(out + 8, socket_index);
  PutU16(out + 10, data_sockets);
  PutU32(out + 12, chunk_bytes);
  PutU32(out + 16, inline_bytes);
  PutU64(out + kNonceOffset, nonce);
  PutU64(out + 28, connection_id);
}

Status Hello::CheckPrefix(const uint8_t* in, size_t length) {
  uint8_t magic[4];
  PutU32(magic, kMagic);
  const size_t shown = std::min(length, sizeof(magic));
  if (memcmp(in, magic, shown) != 0) {
    char hex[3 * sizeof(magic) + 1] = {};
    for (size_t i = 0; i < shown; ++i) snprintf(hex + 3 * i, 4, " %02x", in[i]);
    return Status::Error(ErrorKind::kRemote,
                         "first bytes%s do not start a hello (not a devmem peer)", hex);
  }
  if (length >= 4 + sizeof(uint16_t) && GetU16(in + 4) != kProtocolVersion) {
    return Status::Error(ErrorKind::kRemote, "peer speaks protocol version %u, we speak %u",
                         GetU16(in + 4), kProtocolVersion);
  }
  if (length > kRoleOffset && in[kRoleOffset] > static_cast<uint8_t>(SocketRole::kData)) {
    return Status::Error(ErrorKind::kRemote, "bad socket role %u in hello", in[kRoleOffset]);
  }
  return Status::Ok();
}

Result<Hello> Hello::Decode(const uint8_t* in) {
  if (GetU32(in) != kMagic) {
    return Status::Error(ErrorKind::kRemote, "bad hello magic 0x%08x (not a devmem peer)",
                         GetU32(in));
  }
  Hello out;
  out.version = GetU16(in + 4);
  if (out.version != kProtocolVersion) {
    return Status::Error(ErrorKind::kRemote, "peer speaks protocol version %u, we speak %u",
                         out.version, kProtocolVersion);
  }
  if (in[kRoleOffset] > static_cast<uint8_t>(SocketRole::kData)) {
    return Status::Error(ErrorKind::kRemote, "bad socket role %u in hello", in[kRoleOffset]);
  }
  out.role = static_cast<SocketRole>(in[kRoleOffset]);
  out.socket_index = GetU16(in + 8);
  out.data_sockets = GetU16(in + 10);
  out.chunk_bytes = GetU32(in + 12);
  out.inline_bytes = GetU32(in + 16);
  out.nonce = GetU64(in + kNonceOffset);
  out.connection_id = GetU64(in + 28);
  if (out.data_sockets < 1 || out.data_sockets > kMaxDataSockets) {
    return Status::Error(ErrorKind::kRemote, "peer announced %u data sockets, accepted [1, %d]",
                         out.data_sockets, kMaxDataSockets);
  }
  if (out.role == SocketRole::kData && out.socket_index >= out.data_sockets) {
    return Status::Error(ErrorKind::kRemote, "data socket index %u out of range [0, %u)",
                         out.socket_index, out.data_sockets);
  }
  if (out.chunk_bytes < kMinChunkBytes || out.chunk_bytes > kMaxChunkBytes) {
    return Status::Error(ErrorKind::kRemote, "peer chunk size %u outside [%llu, %llu]",
                         out.chunk_bytes, static_cast<unsigned long long>(kMinChunkBytes),
                         static_cast<unsigned long long>(kMaxChunkBytes));
  }
  if (out.inline_bytes > kMaxInlineBytes) {
    return Status::Error(ErrorKind::kRemote, "peer inline limit %u above %u", out.inline_bytes,
                         kMaxInlineBytes);
  }
  return out;
}

void HelloReply::Encode(uint8_t* out) const {
  PutU32(out, kMagic);
  PutU32(out + 4, code);
  PutU64(out + 8, nonce);
  PutU32(out + 16, inline_bytes);
  PutU32(out + 20, 0);  // reserved
}

Result<HelloReply> HelloReply::Decode(const uint8_t* in) {
  if (GetU32(in) != kMagic) {
    return Status::Error(ErrorKind::kRemote, "bad handshake reply magic 0x%08x", GetU32(in));
  }
  HelloReply out;
  out.code = GetU32(in + 4);
  out.nonce = GetU64(in + 8);
  out.inline_bytes = GetU32(in + 16);
  if (out.inline_bytes > kMaxInlineBytes) {
    return Status::Error(ErrorKind::kRemote, "handshake reply inline limit %u above %u",
                         out.inline_bytes, kMaxInlineBytes);
  }
  return out;
}

size_t MessageHeader::EncodedSize(const uint8_t* in) {
  return GetU32(in) == kStripedOver ? kMaxSize : kSize;
}

void MessageHeader::Encode(uint8_t* out) const {
  PutU32(out, kind);
  PutU32(out + 4, static_cast<uint32_t>(tag));
  PutU64(out + 8, size);
  if (kind == kStripedOver) PutU64(out + 16, sockets);
}

Result<MessageHeader> MessageHeader::Decode(const uint8_t* in) {
  MessageHeader out;
  out.kind = GetU32(in);
  if (out.kind != kStriped && out.kind != kInline && out.kind != kStripedOver) {
    return Status::Error(ErrorKind::kRemote, "control stream corrupt: message header kind 0x%08x",
                         out.kind);
  }
  out.tag = static_cast<int32_t>(GetU32(in + 4));
  out.size = GetU64(in + 8);
  if (out.kind == kStripedOver) {
    out.sockets = GetU64(in + 16);
    if (out.sockets == 0) {
      return Status::Error(ErrorKind::kRemote,
                           "control stream corrupt: a message striped over no data socket");
    }
  }
  if (out.size > nccl::kMaxNetSize) {
    return Status::Error(ErrorKind::kRemote, "peer announced a %llu-byte message, limit %zu",
                         static_cast<unsigned long long>(out.size), nccl::kMaxNetSize);
  }
  return out;
}

}  // namespace devmem::wire
