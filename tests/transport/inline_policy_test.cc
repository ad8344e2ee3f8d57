// Which messages ride the control socket (inline) and which go over the data sockets, on real
// loopback sockets: a message alone on its comm goes inline up to ConnectionParams::inline_bytes,
// one posted while other sends of the comm are in flight only up to queued_inline_bytes
// (plugin/transport/send_comm.cc PostSend; the reason is in plugin/core/config.h at
// kMaxDefaultQueuedInlineBytes). Every message arrives byte-exact whichever way it went.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <vector>

#include "plugin/transport/comm.h"
#include "plugin/transport/request.h"
#include "tests/common/comm_pair.h"

namespace devmem {
namespace {

constexpr size_t kMessage = 32 << 10;

ConnectionParams InlineParams(uint32_t queued_inline_bytes) {
  ConnectionParams params = testing::TestParams(2, 1, 16 << 10);
  params.proxy_bytes = 1 << 30;  // the calling thread moves everything, as on small hosts
  params.inline_bytes = 64 << 10;
  params.queued_inline_bytes = queued_inline_bytes;
  return params;
}

std::vector<char> Pattern(size_t bytes, int seed) {
  std::vector<char> data(bytes);
  for (size_t i = 0; i < bytes; ++i) data[i] = static_cast<char>((i * 131 + seed * 7) & 0xff);
  return data;
}

// Sends `count` messages back to back (none tested before the next is posted), receives them
// in order, and checks every byte. Returns the sender's inline message count afterwards.
uint64_t SendBurst(testing::CommPair& pair, int count, int first_tag) {
  std::vector<std::vector<char>> sent, received;
  std::vector<Request*> sends, recvs;
  for (int i = 0; i < count; ++i) {
    sent.push_back(Pattern(kMessage, first_tag + i));
    received.emplace_back(kMessage, 0);
  }
  for (int i = 0; i < count; ++i) {
    Result<Request*> send = pair.send->PostSend(sent[i].data(), kMessage, first_tag + i, nullptr);
    EXPECT_TRUE(send.ok()) << send.status().message();
    sends.push_back(send.ok() ? send.value() : nullptr);
    EXPECT_NE(sends.back(), nullptr);
    void* data = received[i].data();
    const size_t size = kMessage;
    const int tag = first_tag + i;
    MemoryRegion* region = nullptr;
    Result<Request*> recv = pair.recv->PostRecv(1, &data, &size, &tag, &region);
    EXPECT_TRUE(recv.ok()) << recv.status().message();
    recvs.push_back(recv.ok() ? recv.value() : nullptr);
    EXPECT_NE(recvs.back(), nullptr);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  int left = 2 * count;
  // Tests one request until done; done, it reports the whole message (SendComm::Test and
  // RecvComm::Test both give its size).
  auto poll = [&left](auto& comm, Request* request, int* finished) {
    if (*finished || request == nullptr) return;
    bool done = false;
    int size = 0;
    Status status = comm.Test(request, &done, &size);
    EXPECT_TRUE(status.ok()) << status.message();
    if (!done) return;
    EXPECT_EQ(size, static_cast<int>(kMessage));
    *finished = 1;
    --left;
  };
  std::vector<int> send_done(count, 0), recv_done(count, 0);
  while (left > 0 && std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < count; ++i) {
      poll(*pair.send, sends[i], &send_done[i]);
      poll(*pair.recv, recvs[i], &recv_done[i]);
    }
  }
  EXPECT_EQ(left, 0) << "messages still in flight after 20 s";
  for (int i = 0; i < count; ++i) EXPECT_EQ(received[i], sent[i]) << "message " << i;
  return pair.send->counters().inline_messages.load();
}

TEST(InlinePolicyTest, AMessageAloneGoesInlineOnesPostedBehindOthersTakeTheQueuedLimit) {
  Result<testing::CommPair> pair =
      testing::CreateCommPair(InlineParams(/*queued_inline_bytes=*/16 << 10), RxPath());
  ASSERT_TRUE(pair.ok()) << pair.status().message();
  // Alone on the comm: 32 KiB <= inline_bytes (64 KiB), inline.
  EXPECT_EQ(SendBurst(pair.value(), 1, 100), 1u);
  // Three posted back to back: the first finds nothing in flight (inline), the other two find
  // earlier sends of the comm still in flight and 32 KiB > the queued limit (data sockets).
  EXPECT_EQ(SendBurst(pair.value(), 3, 200), 2u);
  EXPECT_EQ(pair->send->counters().messages.load(), 4u);
}

TEST(InlinePolicyTest, WithoutAQueuedLimitEveryMessageUpToTheInlineLimitGoesInline) {
  // ConnectionParams' default (and an explicit NCCL_DEVMEM_INLINE_BYTES): no separate limit.
  Result<testing::CommPair> pair = testing::CreateCommPair(InlineParams(UINT32_MAX), RxPath());
  ASSERT_TRUE(pair.ok()) << pair.status().message();
  EXPECT_EQ(SendBurst(pair.value(), 3, 300), 3u);
}

}  // namespace
}  // namespace devmem
