// Every decoder of bytes that come from the network or from the out-of-band handle: the hello
// each socket opens with, the handshake reply, the per-message header, the listen handle and
// the socket address inside it. The input (zero-padded to 128 bytes, each decoder reading the
// first bytes it needs from its own exact-size copy) goes to all of them.
//
// Invariants: a decoded value satisfies every limit the decoder promises (config.h, nccl
// contract); encoding it and decoding again gives the same value; a refusal carries a message.
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

#include "plugin/core/config.h"
#include "plugin/core/nccl_contract.h"
#include "plugin/core/socket_address.h"
#include "plugin/transport/wire.h"
#include "tests/fuzz/fuzz_input.h"

namespace devmem {
namespace {

// The first `n` bytes of the input, zero-padded, in a heap block of exactly `n` bytes (ASan
// sees a decoder that reads past its fixed size).
std::unique_ptr<uint8_t[]> Exact(const uint8_t* data, size_t size, size_t n) {
  std::unique_ptr<uint8_t[]> copy(new uint8_t[n]);
  memset(copy.get(), 0, n);
  memcpy(copy.get(), data, std::min(size, n));
  return copy;
}

void FuzzHello(const uint8_t* data, size_t size) {
  auto bytes = Exact(data, size, wire::Hello::kSize);
  Result<wire::Hello> hello = wire::Hello::Decode(bytes.get());
  if (!hello.ok()) {
    FUZZ_CHECK(!hello.status().message().empty(), "hello refused without a message");
    return;
  }
  const wire::Hello& h = hello.value();
  FUZZ_CHECK(h.version == wire::kProtocolVersion, "version %u", h.version);
  FUZZ_CHECK(h.data_sockets >= 1 && h.data_sockets <= kMaxDataSockets, "%u data sockets",
             h.data_sockets);
  FUZZ_CHECK(h.role == wire::SocketRole::kControl || h.socket_index < h.data_sockets,
             "data socket %u of %u", h.socket_index, h.data_sockets);
  FUZZ_CHECK(h.chunk_bytes >= kMinChunkBytes && h.chunk_bytes <= kMaxChunkBytes, "chunk %u",
             h.chunk_bytes);
  FUZZ_CHECK(h.inline_bytes <= kMaxInlineBytes, "inline %u", h.inline_bytes);
  uint8_t encoded[wire::Hello::kSize];
  h.Encode(encoded);
  Result<wire::Hello> again = wire::Hello::Decode(encoded);
  FUZZ_CHECK(again.ok(), "re-encoded hello refused: %s", again.status().message().c_str());
  const wire::Hello& a = again.value();
  FUZZ_CHECK(a.role == h.role && a.socket_index == h.socket_index &&
                 a.data_sockets == h.data_sockets && a.chunk_bytes == h.chunk_bytes &&
                 a.inline_bytes == h.inline_bytes && a.nonce == h.nonce &&
                 a.connection_id == h.connection_id,
             "hello changed across encode/decode");
}

void FuzzReply(const uint8_t* data, size_t size) {
  auto bytes = Exact(data, size, wire::HelloReply::kSize);
  Result<wire::HelloReply> reply = wire::HelloReply::Decode(bytes.get());
  if (!reply.ok()) {
    FUZZ_CHECK(!reply.status().message().empty(), "reply refused without a message");
    return;
  }
  uint8_t encoded[wire::HelloReply::kSize];
  reply->Encode(encoded);
  Result<wire::HelloReply> again = wire::HelloReply::Decode(encoded);
  FUZZ_CHECK(again.ok() && again->code == reply->code && again->nonce == reply->nonce,
             "reply changed across encode/decode");
}

void FuzzHeader(const uint8_t* data, size_t size) {
  // Up to the longest header: Decode reads EncodedSize() bytes, the receiver has them all.
  auto bytes = Exact(data, size, wire::MessageHeader::kMaxSize);
  Result<wire::MessageHeader> header = wire::MessageHeader::Decode(bytes.get());
  if (!header.ok()) {
    FUZZ_CHECK(!header.status().message().empty(), "header refused without a message");
    return;
  }
  const wire::MessageHeader& h = header.value();
  FUZZ_CHECK(h.kind == wire::MessageHeader::kStriped || h.kind == wire::MessageHeader::kInline ||
                 h.kind == wire::MessageHeader::kStripedOver,
             "kind 0x%08x", h.kind);
  FUZZ_CHECK(h.size <= nccl::kMaxNetSize, "size %llu", static_cast<unsigned long long>(h.size));
  FUZZ_CHECK(h.kind != wire::MessageHeader::kStripedOver || h.sockets != 0,
             "a message striped over no socket was accepted");
  FUZZ_CHECK(h.encoded_size() == wire::MessageHeader::EncodedSize(bytes.get()),
             "decoded size %zu, announced %zu", h.encoded_size(),
             wire::MessageHeader::EncodedSize(bytes.get()));
  uint8_t encoded[wire::MessageHeader::kMaxSize];
  h.Encode(encoded);
  FUZZ_CHECK(memcmp(encoded, bytes.get(), h.encoded_size()) == 0,
             "a header is its encoded bytes: re-encoding changed them");
}

void FuzzHandle(const uint8_t* data, size_t size) {
  auto bytes = Exact(data, size, nccl::kNetHandleMaxSize);
  Result<wire::ListenHandle> handle = wire::ListenHandle::Decode(bytes.get());
  if (!handle.ok()) {
    FUZZ_CHECK(!handle.status().message().empty(), "handle refused without a message");
    return;
  }
  const SocketAddress& address = handle->address;
  FUZZ_CHECK(address.family() == AF_INET || address.family() == AF_INET6, "family %d",
             address.family());
  const std::string text = address.ToString();
  FUZZ_CHECK(!text.empty(), "an address that prints as nothing");
  uint8_t encoded[nccl::kNetHandleMaxSize];
  handle->Encode(encoded);
  Result<wire::ListenHandle> again = wire::ListenHandle::Decode(encoded);
  FUZZ_CHECK(again.ok(), "re-encoded handle refused: %s", again.status().message().c_str());
  FUZZ_CHECK(again->nonce == handle->nonce && again->address.ToString() == text &&
                 again->address.length() == address.length(),
             "handle changed across encode/decode: %s vs %s", text.c_str(),
             again->address.ToString().c_str());
}

void FuzzAddress(const uint8_t* data, size_t size) {
  auto bytes = Exact(data, size, SocketAddress::kEncodedSize);
  Result<SocketAddress> address = SocketAddress::Decode(bytes.get());
  if (!address.ok()) return;
  uint8_t encoded[SocketAddress::kEncodedSize];
  address->Encode(encoded);
  Result<SocketAddress> again = SocketAddress::Decode(encoded);
  FUZZ_CHECK(
      again.ok() && again->ToString() == address->ToString() && again->port() == address->port(),
      "address changed across encode/decode");
}

}  // namespace
}  // namespace devmem

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace devmem;
  FuzzHello(data, size);
  FuzzReply(data, size);
  FuzzHeader(data, size);
  FuzzHandle(data, size);
  FuzzAddress(data, size);
  return 0;
}
