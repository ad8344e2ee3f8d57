#include "plugin/transport/wire.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>

#include "plugin/abi/net_abi.h"
#include "plugin/core/config.h"

namespace devmem::wire {
namespace {

Hello ValidHello() {
  Hello hello;
  hello.role = SocketRole::kData;
  hello.socket_index = 3;
  hello.data_sockets = 4;
  hello.chunk_bytes = 512 << 10;
  hello.inline_bytes = 1024;
  hello.nonce = 0x1122334455667788ull;
  hello.connection_id = 42;
  return hello;
}

TEST(WireTest, ListenHandleRoundTripsAndFitsNcclsBuffer) {
  uint8_t buffer[abi::kNetHandleMaxSize];
  memset(buffer, 0xff, sizeof(buffer));
  ListenHandle handle;
  handle.address = SocketAddress::FromString("::1", 4242).value();
  handle.nonce = 99;
  handle.Encode(buffer);
  // The connector slot must start zeroed: the connecting side trusts only what it put there.
  for (size_t i = ListenHandle::kConnectorSlotOffset;
       i < ListenHandle::kConnectorSlotOffset + sizeof(void*); ++i) {
    EXPECT_EQ(buffer[i], 0);
  }
  Result<ListenHandle> decoded = ListenHandle::Decode(buffer);
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_EQ(decoded->address.ToString(), "[::1]:4242");
  EXPECT_EQ(decoded->nonce, 99u);
}

TEST(WireTest, ListenHandleRejectsForeignBytes) {
  uint8_t buffer[abi::kNetHandleMaxSize] = {};
  EXPECT_FALSE(ListenHandle::Decode(buffer).ok());
  ListenHandle handle;
  handle.address = SocketAddress::FromString("127.0.0.1", 1).value();
  handle.Encode(buffer);
  buffer[4] = 9;  // protocol version
  Result<ListenHandle> decoded = ListenHandle::Decode(buffer);
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.status().message().find("protocol version"), std::string::npos);
  handle.Encode(buffer);
  buffer[10] = buffer[11] = 0;  // port 0
  EXPECT_FALSE(ListenHandle::Decode(buffer).ok());
}

TEST(WireTest, HelloRoundTrips) {
  uint8_t bytes[Hello::kSize];
  ValidHello().Encode(bytes);
  Result<Hello> decoded = Hello::Decode(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_EQ(decoded->role, SocketRole::kData);
  EXPECT_EQ(decoded->socket_index, 3);
  EXPECT_EQ(decoded->data_sockets, 4);
  EXPECT_EQ(decoded->chunk_bytes, 512u << 10);
  EXPECT_EQ(decoded->inline_bytes, 1024u);
  EXPECT_EQ(decoded->nonce, 0x1122334455667788ull);
  EXPECT_EQ(decoded->connection_id, 42u);
}

TEST(WireTest, HelloRejectsOutOfRangeFields) {
  auto expect_rejected = [](Hello hello, const char* why) {
    uint8_t bytes[Hello::kSize];
    hello.Encode(bytes);
    Result<Hello> decoded = Hello::Decode(bytes);
    ASSERT_FALSE(decoded.ok()) << why;
    EXPECT_EQ(decoded.status().kind(), ErrorKind::kRemote);
    EXPECT_NE(decoded.status().message().find(why), std::string::npos)
        << decoded.status().message();
  };
  Hello hello = ValidHello();
  hello.socket_index = 4;
  expect_rejected(hello, "index 4 out of range");
  hello = ValidHello();
  hello.data_sockets = 0;
  expect_rejected(hello, "0 data sockets");
  hello = ValidHello();
  hello.data_sockets = 65;
  expect_rejected(hello, "65 data sockets");
  hello = ValidHello();
  hello.chunk_bytes = 1;
  expect_rejected(hello, "chunk size 1");
  hello = ValidHello();
  hello.inline_bytes = devmem::kMaxInlineBytes + 1;
  expect_rejected(hello, "inline limit");
  hello = ValidHello();
  // A peer of another protocol version stripes differently: refused, whichever side is newer.
  hello.version = kProtocolVersion + 1;
  expect_rejected(hello, ("protocol version " + std::to_string(kProtocolVersion + 1)).c_str());
  hello = ValidHello();
  hello.version = 1;  // before 2026-11-26's striping change
  expect_rejected(hello, "protocol version 1");
}

TEST(WireTest, RandomBytesNeverDecodeAsAHello) {
  std::mt19937_64 rng(7);
  uint8_t bytes[Hello::kSize];
  for (int i = 0; i < 100000; ++i) {
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
    EXPECT_FALSE(Hello::Decode(bytes).ok());
  }
}

TEST(WireTest, MessageHeaderValidatesKindAndSize) {
  uint8_t bytes[MessageHeader::kSize];
  MessageHeader header;
  header.kind = MessageHeader::kInline;
  header.tag = -7;
  header.size = 12345;
  header.Encode(bytes);
  Result<MessageHeader> decoded = MessageHeader::Decode(bytes);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->tag, -7);
  EXPECT_EQ(decoded->size, 12345u);
  header.size = (1ull << 30) + 1;
  header.Encode(bytes);
  EXPECT_FALSE(MessageHeader::Decode(bytes).ok());
  header.size = 1;
  header.kind = 0xdeadbeef;
  header.Encode(bytes);
  EXPECT_FALSE(MessageHeader::Decode(bytes).ok());
}

TEST(WireTest, AHeaderWithASocketSetIs24BytesAndNeverEmpty) {
  uint8_t bytes[MessageHeader::kMaxSize];
  MessageHeader header;
  header.kind = MessageHeader::kStripedOver;
  header.tag = 3;
  header.size = 1 << 20;
  header.sockets = 0x5;
  header.Encode(bytes);
  EXPECT_EQ(header.encoded_size(), 24u);
  EXPECT_EQ(MessageHeader::EncodedSize(bytes), 24u);
  Result<MessageHeader> decoded = MessageHeader::Decode(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_EQ(decoded->sockets, 0x5u);
  EXPECT_EQ(decoded->size, 1u << 20);
  header.sockets = 0;
  header.Encode(bytes);
  EXPECT_FALSE(MessageHeader::Decode(bytes).ok());
  header.kind = MessageHeader::kStriped;
  header.Encode(bytes);
  EXPECT_EQ(MessageHeader::EncodedSize(bytes), 16u);
}

TEST(WireTest, ReplyRoundTrips) {
  uint8_t bytes[HelloReply::kSize];
  HelloReply reply;
  reply.code = HelloReply::kRejected;
  reply.nonce = 5;
  reply.Encode(bytes);
  Result<HelloReply> decoded = HelloReply::Decode(bytes);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->code, HelloReply::kRejected);
  EXPECT_EQ(decoded->nonce, 5u);
  EXPECT_EQ(decoded->inline_bytes, 0u);
  bytes[0] ^= 1;
  EXPECT_FALSE(HelloReply::Decode(bytes).ok());
}

// Protocol 4: the receiver says how much it takes inline (a devmem RX receiver caps it).
TEST(WireTest, ReplyCarriesTheReceiversInlineLimitWithinTheMaximum) {
  uint8_t bytes[HelloReply::kSize];
  HelloReply reply;
  reply.nonce = 9;
  reply.inline_bytes = devmem::kDevmemInlineBytes;
  reply.Encode(bytes);
  Result<HelloReply> decoded = HelloReply::Decode(bytes);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->inline_bytes, devmem::kDevmemInlineBytes);
  reply.inline_bytes = devmem::kMaxInlineBytes + 1;
  reply.Encode(bytes);
  Result<HelloReply> too_big = HelloReply::Decode(bytes);
  ASSERT_FALSE(too_big.ok());
  EXPECT_NE(too_big.status().message().find("inline limit"), std::string::npos);
}

}  // namespace
}  // namespace devmem::wire
