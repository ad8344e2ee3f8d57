// devmem-doctor --serve / --pair without a network: the control messages a peer sends are
// parsed with every length and value checked (bad bytes are an error naming the field, never a
// crash), and the validation pattern's checker finds a corrupted byte where it is.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstring>
#include <random>
#include <vector>

#include "plugin/core/unique_fd.h"
#include "tools/pair_control.h"
#include "tools/pair_pattern.h"
#include "tools/pair_protocol.h"

namespace {

using devmem::doctor::DecodeFrameHeader;
using devmem::doctor::DecodeHandle;
using devmem::doctor::DecodeHello;
using devmem::doctor::DecodeResult;
using devmem::doctor::DecodeText;
using devmem::doctor::EncodeFrame;
using devmem::doctor::Hello;
using devmem::doctor::MessageType;
using devmem::doctor::ResultMessage;
using devmem::doctor::SizeResult;

std::vector<uint8_t> Header(uint32_t magic, uint16_t version, uint16_t type, uint32_t length) {
  std::vector<uint8_t> out;
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(magic >> (8 * i)));
  for (int i = 0; i < 2; ++i) out.push_back(static_cast<uint8_t>(version >> (8 * i)));
  for (int i = 0; i < 2; ++i) out.push_back(static_cast<uint8_t>(type >> (8 * i)));
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(length >> (8 * i)));
  return out;
}

ResultMessage SampleResult() {
  ResultMessage message;
  message.send_path.mode = devmem::doctor::PathMode::kPlain;
  message.send_path.detail = "host send buffers go by plain TCP";
  message.recv_path.mode = devmem::doctor::PathMode::kEmulated;
  message.recv_path.detail = "EMULATED devmem RX";
  message.recv_path.frags = 7;
  SizeResult row;
  row.size = 4096;
  row.messages = 64;
  row.bad_messages = 1;
  row.first_bad_message = 3;
  row.first_bad_offset = 100;
  row.expected = 0xab;
  row.got = 0x00;
  row.bad_bytes = 1;
  row.nanoseconds = 12345;
  message.received.push_back(row);
  return message;
}

TEST(PairProtocolTest, AFrameHeaderRoundTripsAndNamesItsType) {
  const std::vector<uint8_t> frame =
      EncodeFrame(MessageType::kHello, devmem::doctor::Encode(Hello{}));
  ASSERT_EQ(frame.size(), devmem::doctor::kFrameHeaderBytes + 16);
  devmem::Result<devmem::doctor::FrameHeader> header = DecodeFrameHeader(frame.data());
  ASSERT_TRUE(header.ok()) << header.status().message();
  EXPECT_EQ(header->type, MessageType::kHello);
  EXPECT_EQ(header->length, 16u);
}

TEST(PairProtocolTest, AnotherProgramsBytesAreRefusedOnTheirMagic) {
  const uint8_t http[] = "GET / HTTP/1.1\r\n";
  devmem::Result<devmem::doctor::FrameHeader> header = DecodeFrameHeader(http);
  ASSERT_FALSE(header.ok());
  EXPECT_NE(header.status().message().find("not a devmem-doctor control message"),
            std::string::npos)
      << header.status().message();
}

TEST(PairProtocolTest, AnotherVersionAnUnknownTypeAndAnOverlongLengthAreRefused) {
  const uint32_t magic = devmem::doctor::kPairMagic;
  const uint16_t version = devmem::doctor::kPairVersion;
  std::vector<uint8_t> bad = Header(magic, version + 1, 1, 16);
  EXPECT_NE(DecodeFrameHeader(bad.data()).status().message().find("version"), std::string::npos);
  bad = Header(magic, version, 0, 0);
  EXPECT_NE(DecodeFrameHeader(bad.data()).status().message().find("type 0 is unknown"),
            std::string::npos);
  bad = Header(magic, version, 7, 0);
  EXPECT_FALSE(DecodeFrameHeader(bad.data()).ok());
  // A hello is 16 bytes: a header announcing 4 GiB is refused before any payload is read.
  bad = Header(magic, version, static_cast<uint16_t>(MessageType::kHello), 0xffffffffu);
  devmem::Result<devmem::doctor::FrameHeader> header = DecodeFrameHeader(bad.data());
  ASSERT_FALSE(header.ok());
  EXPECT_NE(header.status().message().find("announces 4294967295 bytes"), std::string::npos)
      << header.status().message();
}

TEST(PairProtocolTest, AHelloOutsideTheSizeRangeOrOfTheWrongLengthIsRefused) {
  EXPECT_TRUE(DecodeHello(devmem::doctor::Encode(Hello{4096, 64 << 20})).ok());
  EXPECT_FALSE(DecodeHello(devmem::doctor::Encode(Hello{0, 4096})).ok());
  EXPECT_FALSE(DecodeHello(devmem::doctor::Encode(Hello{8192, 4096})).ok());
  EXPECT_FALSE(DecodeHello(devmem::doctor::Encode(Hello{4096, (64 << 20) + 1})).ok());
  std::vector<uint8_t> payload = devmem::doctor::Encode(Hello{});
  payload.pop_back();
  EXPECT_NE(DecodeHello(payload).status().message().find("max bytes is cut"), std::string::npos);
  payload = devmem::doctor::Encode(Hello{});
  payload.push_back(0);
  EXPECT_NE(DecodeHello(payload).status().message().find("1 bytes after its last field"),
            std::string::npos);
}

TEST(PairProtocolTest, AHandleMessageRoundTripsAndRefusesANonPrintableNicName) {
  devmem::doctor::HandleMessage message;
  for (size_t i = 0; i < sizeof(message.handle); ++i) message.handle[i] = static_cast<uint8_t>(i);
  message.max_message_bytes = 1 << 30;
  message.nic = "eth0";
  std::vector<uint8_t> payload = devmem::doctor::Encode(message);
  devmem::Result<devmem::doctor::HandleMessage> decoded = DecodeHandle(payload);
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_EQ(memcmp(decoded->handle, message.handle, sizeof(message.handle)), 0);
  EXPECT_EQ(decoded->nic, "eth0");
  payload[payload.size() - 1] = 0x07;  // "eth\a"
  EXPECT_NE(DecodeHandle(payload).status().message().find("not printable"), std::string::npos);
}

TEST(PairProtocolTest, AResultRoundTripsFieldForField) {
  const ResultMessage sent = SampleResult();
  devmem::Result<ResultMessage> got = DecodeResult(devmem::doctor::Encode(sent));
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_EQ(got->send_path.mode, sent.send_path.mode);
  EXPECT_EQ(got->send_path.detail, sent.send_path.detail);
  EXPECT_EQ(got->recv_path.frags, 7u);
  ASSERT_EQ(got->received.size(), 1u);
  EXPECT_EQ(got->received[0].first_bad_offset, 100u);
  EXPECT_EQ(got->received[0].expected, 0xab);
  EXPECT_EQ(got->received[0].nanoseconds, 12345u);
}

TEST(PairProtocolTest, AResultWhoseFindingsContradictThemselvesIsRefused) {
  ResultMessage message = SampleResult();
  message.received[0].first_bad_offset = 4096;  // past the message
  EXPECT_NE(DecodeResult(devmem::doctor::Encode(message)).status().message().find("inconsistent"),
            std::string::npos);
  message = SampleResult();
  message.received[0].bad_messages = 65;  // more than were sent
  EXPECT_FALSE(DecodeResult(devmem::doctor::Encode(message)).ok());
  std::vector<uint8_t> payload = devmem::doctor::Encode(SampleResult());
  payload[0] = 9;  // path mode
  EXPECT_NE(DecodeResult(payload).status().message().find("path mode 9 is unknown"),
            std::string::npos);
}

// Every prefix of a valid message and random bytes: each decoder answers (an error or a value
// that encodes back to the same bytes), never reads past the payload (ASan builds check).
TEST(PairProtocolTest, TruncatedAndRandomPayloadsAreErrorsOrExactRoundTrips) {
  const std::vector<uint8_t> full = devmem::doctor::Encode(SampleResult());
  for (size_t n = 0; n < full.size(); ++n) {
    const std::vector<uint8_t> prefix(full.begin(), full.begin() + static_cast<ptrdiff_t>(n));
    EXPECT_FALSE(DecodeResult(prefix).ok()) << "prefix of " << n << " bytes";
  }
  std::mt19937 random(23);
  for (int round = 0; round < 2000; ++round) {
    std::vector<uint8_t> bytes(random() % 96);
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(random());
    if (devmem::Result<std::string> text = DecodeText(bytes); text.ok()) {
      EXPECT_EQ(devmem::doctor::EncodeText(text.value()), bytes);
    }
    if (devmem::Result<Hello> hello = DecodeHello(bytes); hello.ok()) {
      EXPECT_EQ(devmem::doctor::Encode(hello.value()), bytes);
    }
    if (devmem::Result<ResultMessage> result = DecodeResult(bytes); result.ok()) {
      EXPECT_EQ(devmem::doctor::Encode(result.value()), bytes);
    }
  }
}

TEST(PairProtocolTest, AStartNamesDirectionZeroOrOneInExactlyOneByte) {
  EXPECT_EQ(devmem::doctor::DecodeStart(devmem::doctor::EncodeStart(1)).value(), 1u);
  EXPECT_NE(devmem::doctor::DecodeStart({2}).status().message().find("direction 2"),
            std::string::npos);
  EXPECT_FALSE(devmem::doctor::DecodeStart({}).ok());
  EXPECT_FALSE(devmem::doctor::DecodeStart({0, 0}).ok());
}

TEST(PairProtocolTest, TheSizeLadderRunsFrom4KiBTo64MiBByFours) {
  const std::vector<uint64_t> sizes = devmem::doctor::SizeLadder(4 << 10, 64 << 20);
  ASSERT_EQ(sizes.size(), 8u);
  EXPECT_EQ(sizes.front(), 4096u);
  EXPECT_EQ(sizes[1], 16384u);
  EXPECT_EQ(sizes.back(), 64u << 20);
  // A maximum off the ladder is still the last size.
  EXPECT_EQ(devmem::doctor::SizeLadder(4 << 10, 100 << 10).back(), 100u << 10);
  EXPECT_EQ(devmem::doctor::MessagesPerSize(64 << 20), 2u);
  EXPECT_EQ(devmem::doctor::MessagesPerSize(4096), 64u);
}

// A control connection whose peer sends junk: Poll() fails on the first 12 bytes, at once.
TEST(PairControlTest, JunkOnTheControlConnectionIsAnErrorWithoutWaiting) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
  devmem::UniqueFd ours(fds[0]);
  devmem::UniqueFd theirs(fds[1]);
  devmem::doctor::ControlChannel channel(std::move(ours), devmem::SocketAddress());
  const char junk[] = "SSH-2.0-OpenSSH_9.2\r\n";
  ASSERT_EQ(write(theirs.get(), junk, sizeof(junk) - 1), static_cast<ssize_t>(sizeof(junk) - 1));
  devmem::Result<std::vector<uint8_t>> got = channel.Expect(
      MessageType::kHello, "a hello", devmem::doctor::Clock::now() + std::chrono::hours(1));
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("not a devmem-doctor control message"), std::string::npos)
      << got.status().message();
}

TEST(PairControlTest, APeersErrorMessageBecomesThisSidesErrorWithItsText) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
  devmem::UniqueFd ours(fds[0]);
  devmem::UniqueFd theirs(fds[1]);
  devmem::doctor::ControlChannel channel(std::move(ours), devmem::SocketAddress());
  const std::vector<uint8_t> frame =
      EncodeFrame(MessageType::kError, devmem::doctor::EncodeText("listen failed on eth9"));
  ASSERT_EQ(write(theirs.get(), frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
  devmem::Result<std::vector<uint8_t>> got = channel.Expect(
      MessageType::kHandle, "a handle", devmem::doctor::Clock::now() + std::chrono::hours(1));
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("failed: listen failed on eth9"), std::string::npos)
      << got.status().message();
}

TEST(PairControlTest, APeerThatClosesMidMessageIsAnError) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
  devmem::UniqueFd ours(fds[0]);
  devmem::UniqueFd theirs(fds[1]);
  devmem::doctor::ControlChannel channel(std::move(ours), devmem::SocketAddress());
  const std::vector<uint8_t> frame =
      EncodeFrame(MessageType::kHello, devmem::doctor::Encode(Hello{}));
  ASSERT_EQ(write(theirs.get(), frame.data(), 20), 20);
  theirs.reset();
  devmem::Result<std::vector<uint8_t>> got = channel.Expect(
      MessageType::kHello, "a hello", devmem::doctor::Clock::now() + std::chrono::hours(1));
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("closed the control connection in the middle of a message"),
            std::string::npos)
      << got.status().message();
}

TEST(PairControlTest, AnIpv4PeerMatchesItsIpv4MappedForm) {
  devmem::Result<devmem::SocketAddress> v4 = devmem::SocketAddress::FromString("198.18.0.2", 1);
  devmem::Result<devmem::SocketAddress> mapped =
      devmem::SocketAddress::FromString("::ffff:198.18.0.2", 2);
  devmem::Result<devmem::SocketAddress> other = devmem::SocketAddress::FromString("198.18.0.3", 1);
  ASSERT_TRUE(v4.ok() && mapped.ok() && other.ok());
  EXPECT_TRUE(devmem::doctor::IsOneOf(mapped.value(), {v4.value()}));
  EXPECT_FALSE(devmem::doctor::IsOneOf(other.value(), {v4.value()}));
  EXPECT_EQ(devmem::doctor::HostText(mapped.value()), "198.18.0.2");
}

TEST(PairPatternTest, AnUntouchedMessagePassesTheCheck) {
  std::vector<uint8_t> data(64 << 10);
  const uint64_t seed = devmem::doctor::PatternSeed(0, data.size(), 5);
  devmem::doctor::FillPattern(data.data(), data.size(), seed);
  EXPECT_FALSE(devmem::doctor::CheckPattern(data.data(), data.size(), seed).has_value());
}

TEST(PairPatternTest, AFlippedByteIsReportedAtItsOffsetWithExpectedAndGot) {
  std::vector<uint8_t> data(4099);  // a tail shorter than a pattern word
  const uint64_t seed = devmem::doctor::PatternSeed(1, data.size(), 0);
  devmem::doctor::FillPattern(data.data(), data.size(), seed);
  for (const size_t offset : {size_t{0}, size_t{1234}, data.size() - 1}) {
    std::vector<uint8_t> corrupted = data;
    corrupted[offset] ^= 0x40;
    const std::optional<devmem::doctor::PatternMismatch> bad =
        devmem::doctor::CheckPattern(corrupted.data(), corrupted.size(), seed);
    ASSERT_TRUE(bad.has_value()) << offset;
    EXPECT_EQ(bad->offset, offset);
    EXPECT_EQ(bad->expected, data[offset]);
    EXPECT_EQ(bad->got, static_cast<uint8_t>(data[offset] ^ 0x40));
    EXPECT_EQ(bad->bad_bytes, 1u);
  }
}

// What the pattern exists for beyond ncdevmem's running counter: a message that was never
// written (the buffer still holds the message before it), a chunk at the wrong offset and
// a zeroed page are all caught, from their first byte.
TEST(PairPatternTest, AStaleAShiftedAndAZeroedChunkAreEachCaught) {
  const size_t size = 16 << 10;
  std::vector<uint8_t> previous(size);
  std::vector<uint8_t> data(size);
  const uint64_t seed = devmem::doctor::PatternSeed(0, size, 8);
  devmem::doctor::FillPattern(previous.data(), size, devmem::doctor::PatternSeed(0, size, 7));
  devmem::doctor::FillPattern(data.data(), size, seed);
  std::optional<devmem::doctor::PatternMismatch> bad =
      devmem::doctor::CheckPattern(previous.data(), size, seed);
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->offset, 0u);

  std::vector<uint8_t> shifted = data;
  memmove(shifted.data() + 8192, data.data() + 4096, 4096);  // chunk 1 landed at chunk 2
  bad = devmem::doctor::CheckPattern(shifted.data(), size, seed);
  ASSERT_TRUE(bad.has_value());
  EXPECT_GE(bad->offset, 8192u);
  EXPECT_LT(bad->offset, 8192u + 8);

  std::vector<uint8_t> zeroed = data;
  memset(zeroed.data() + 12288, 0, 4096);
  bad = devmem::doctor::CheckPattern(zeroed.data(), size, seed);
  ASSERT_TRUE(bad.has_value());
  EXPECT_LT(bad->offset, 12288u + 8);
  EXPECT_GT(bad->bad_bytes, 4000u);
}

}  // namespace
