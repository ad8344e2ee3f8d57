// Zero-copy sends (the emulated devmem TX path): the completion bookkeeping on its own, and on
// real loopback sockets the buffer-reuse rule: a send is done only once the kernel reported
// its MSG_ZEROCOPY completions. The kernel completes a zero-copy send once no skb references
// its pages any more; on loopback it copies the pages when a packet is looped to the receiving
// socket (Documentation/networking/msg_zerocopy.rst, "Loopback": a deferred copy, reported as
// SO_EE_CODE_ZEROCOPY_COPIED). Bytes the receiver's closed window keeps in the sender's write
// queue are neither sent nor copied, which lets this test hold completions back at will.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <thread>
#include <vector>

#include "plugin/transport/comm.h"
#include "plugin/transport/request.h"
#include "plugin/transport/zerocopy.h"
#include "tests/common/comm_pair.h"

namespace devmem {
namespace {

TEST(ZeroCopyTrackerTest, CompletesCoalescedOutOfOrderAndWrappingRanges) {
  ZeroCopyTracker tracker;
  Request a, b;
  for (int i = 0; i < 3; ++i) tracker.WillSend(&a);  // ids 0, 1, 2
  for (int i = 0; i < 2; ++i) tracker.WillSend(&b);  // ids 3, 4
  EXPECT_EQ(a.zerocopy_pending.load(), 3);
  EXPECT_EQ(b.zerocopy_pending.load(), 2);
  tracker.Complete(3, 4, /*copied=*/false);  // b's, before a's
  EXPECT_EQ(b.zerocopy_pending.load(), 0);
  EXPECT_EQ(a.zerocopy_pending.load(), 3);
  EXPECT_EQ(tracker.in_flight(), 5u);  // a's still hold the ring's head
  tracker.Complete(1, 1, true);
  tracker.Complete(0, 2, true);  // coalesced, overlapping an id already done
  EXPECT_EQ(a.zerocopy_pending.load(), 0);
  EXPECT_EQ(tracker.in_flight(), 0u);
  EXPECT_EQ(tracker.completed(), 5u);
  EXPECT_EQ(tracker.copied(), 3u);
  tracker.Complete(7, 9, false);  // never sent: ignored
  EXPECT_EQ(tracker.completed(), 5u);
}

// The ids are the kernel's u32 counter: a reported range [lo, hi] may wrap past 2^32
// (hi < lo), and must still cover the ids between, modulo 2^32.
TEST(ZeroCopyTrackerTest, ARangeThatWrapsCoversItsIdsModuloTwoToTheThirtyTwo) {
  ZeroCopyTracker tracker;
  Request r;
  for (int i = 0; i < 3; ++i) tracker.WillSend(&r);  // ids 0, 1, 2
  tracker.Complete(0xfffffff0u, 1, false);           // 0xfffffff0 .. 0xffffffff, 0, 1
  EXPECT_EQ(r.zerocopy_pending.load(), 1);
  tracker.Complete(2, 2, false);
  EXPECT_EQ(r.zerocopy_pending.load(), 0);
  EXPECT_TRUE(tracker.HasRoom());
  // A full ring has no room until completions come.
  Request many;
  for (size_t i = 0; i < ZeroCopyTracker::kMaxInFlight; ++i) tracker.WillSend(&many);
  EXPECT_FALSE(tracker.HasRoom());
  tracker.Complete(3, 3, false);
  EXPECT_TRUE(tracker.HasRoom());
}

// The id of a send is recorded before sendmsg: a completion drained by another thread (NCCL's
// proxy in test()) while a worker is still inside sendmsg must find it, not be dropped.
TEST(ZeroCopyTrackerTest, ACompletionThatArrivesBeforeSendmsgReturnsIsNotLost) {
  ZeroCopyTracker tracker;
  Request r;
  tracker.WillSend(&r);          // id 0, the worker is about to call sendmsg
  tracker.Complete(0, 0, true);  // the proxy thread drains its completion meanwhile
  EXPECT_EQ(r.zerocopy_pending.load(), 0);
  EXPECT_EQ(tracker.in_flight(), 0u);
  EXPECT_EQ(tracker.completed(), 1u);
}

// A failed sendmsg used no id (the kernel gives it back: net/core/skbuff.c
// msg_zerocopy_put_abort decrements sk_zckey): the next send reuses it.
TEST(ZeroCopyTrackerTest, AFailedSendGivesItsIdBack) {
  ZeroCopyTracker tracker;
  Request a, b;
  tracker.WillSend(&a);  // id 0
  tracker.WillSend(&b);  // id 1: EAGAIN
  tracker.SendFailed();
  EXPECT_EQ(b.zerocopy_pending.load(), 0);
  EXPECT_EQ(tracker.sends(), 1u);
  tracker.WillSend(&b);  // id 1 again
  tracker.Complete(0, 1, false);
  EXPECT_EQ(a.zerocopy_pending.load(), 0);
  EXPECT_EQ(b.zerocopy_pending.load(), 0);
  EXPECT_EQ(tracker.in_flight(), 0u);
  tracker.SendFailed();  // nothing recorded: no effect
  EXPECT_EQ(tracker.sends(), 2u);
}

// One data socket with SO_ZEROCOPY, like the connector makes them under NCCL_DEVMEM_EMULATE_TX.
// `receiver_buffer`: SO_RCVBUF of the receiving data socket (0: default).
testing::CommPair MakePair(int receiver_buffer = 0) {
  ConnectionParams params = testing::TestParams(1, 1, 512 << 10);
  params.proxy_bytes = 1 << 30;  // the calling thread sends
  ConnectionParams send_params = params;
  send_params.zerocopy_tx = true;
  Result<testing::CommPair> pair =
      testing::CreateZeroCopyCommPair(params, send_params, receiver_buffer);
  EXPECT_TRUE(pair.ok()) << pair.status().message();
  return pair.ok() ? std::move(pair).value() : testing::CommPair();
}

TEST(ZeroCopySendTest, ASendIsNotDoneBeforeTheKernelReportsItsCompletion) {
  // A tiny receive buffer closes the window after a few KiB: the rest of the message waits,
  // unsent, in the sender's write queue, with its pages referenced.
  testing::CommPair pair = MakePair(/*receiver_buffer=*/4096);
  ASSERT_NE(pair.send, nullptr);
  ASSERT_NE(pair.recv, nullptr);
  std::vector<char> out(48 << 10), in(48 << 10, 0);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<char>(i * 131 + 7);
  Result<Request*> sent = pair.send->PostSend(out.data(), out.size(), 5, nullptr);
  ASSERT_TRUE(sent.ok() && sent.value() != nullptr) << sent.status().message();
  Request* request = sent.value();
  bool done = false;
  int size = 0;
  // Every byte reaches the kernel (the send buffer takes 48 KiB)...
  const auto written_by = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (request->pending_tasks.load() != 0 && std::chrono::steady_clock::now() < written_by) {
    ASSERT_TRUE(pair.send->Test(request, &done, &size).ok());
    ASSERT_FALSE(done);
  }
  ASSERT_EQ(request->pending_tasks.load(), 0) << "the send buffer did not take the message";
  // ...yet while the kernel holds pages of it, the send is not done: NCCL would reuse them.
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_TRUE(pair.send->Test(request, &done, &size).ok());
    ASSERT_FALSE(done) << "a zero-copy send completed while the kernel still held its pages";
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_GT(request->zerocopy_pending.load(), 0);
  // The receiver reads: the skbs are freed, the completion arrives, the send is done.
  void* data = in.data();
  size_t capacity = in.size();
  int tag = 5;
  MemoryRegion* no_region = nullptr;
  Result<Request*> posted = pair.recv->PostRecv(1, &data, &capacity, &tag, &no_region, false);
  ASSERT_TRUE(posted.ok() && posted.value() != nullptr) << posted.status().message();
  bool recv_done = false;
  int sizes[1] = {0};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((!recv_done || !done) && std::chrono::steady_clock::now() < deadline) {
    if (!recv_done) {
      ASSERT_TRUE(pair.recv->Test(posted.value(), &recv_done, sizes).ok());
    }
    if (!done) {
      ASSERT_TRUE(pair.send->Test(sent.value(), &done, &size).ok());
    }
  }
  ASSERT_TRUE(recv_done);
  ASSERT_TRUE(done) << "no zero-copy completion within 10 s of the receiver reading";
  EXPECT_EQ(size, static_cast<int>(out.size()));
  EXPECT_EQ(memcmp(in.data(), out.data(), out.size()), 0);
}

// Four workers send with MSG_ZEROCOPY while the calling thread drains completions in Test():
// the shape of the default on hosts with 8 or more CPUs. Completions recorded after sendmsg
// returned were once dropped by the concurrent drain, and a 64 MiB stream hung for good.
TEST(ZeroCopySendTest, WorkersSendingWhileTheCallerDrainsLoseNoCompletion) {
  ConnectionParams params = testing::TestParams(4, 4, 64 << 10);
  params.proxy_bytes = 0;  // every message through the workers
  ConnectionParams send_params = params;
  send_params.zerocopy_tx = true;
  Result<testing::CommPair> pair = testing::CreateZeroCopyCommPair(params, send_params);
  ASSERT_TRUE(pair.ok()) << pair.status().message();
  SendComm* send = pair->send.get();
  RecvComm* recv = pair->recv.get();

  constexpr size_t kBytes = 8 << 20;
  constexpr int kMessages = 24;
  constexpr int kWindow = 4;
  std::vector<std::vector<char>> out(kWindow, std::vector<char>(kBytes));
  std::vector<std::vector<char>> in(kWindow, std::vector<char>(kBytes));
  // Sends and receives progress independently, each oldest first, as NCCL's proxy progresses
  // a send and a receive connection (src/transport/net.cc sendProxyProgress /
  // recvProxyProgress). Not one loop over both: the kernel may report message N's last
  // zero-copy send only with message N+1's first (consecutive sends share one notification,
  // net/core/skbuff.c msg_zerocopy_realloc), so N's send can complete only once N+1 is read.
  std::deque<std::pair<int, Request*>> sends, recvs;  // message number, request; oldest first
  int sends_posted = 0, recvs_posted = 0, received = 0, sent = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while ((received < kMessages || sent < kMessages) &&
         std::chrono::steady_clock::now() < deadline) {
    // Message m reuses buffer m % kWindow once message m - kWindow is done both ways.
    if (recvs_posted < kMessages && recvs_posted < sent + kWindow &&
        recvs_posted < received + kWindow) {
      void* data = in[recvs_posted % kWindow].data();
      size_t capacity = kBytes;
      int tag = recvs_posted;
      MemoryRegion* no_region = nullptr;
      Result<Request*> r = recv->PostRecv(1, &data, &capacity, &tag, &no_region, false);
      ASSERT_TRUE(r.ok()) << r.status().message();
      if (r.value() != nullptr) recvs.push_back({recvs_posted++, r.value()});
    }
    if (sends_posted < kMessages && sends_posted < sent + kWindow &&
        sends_posted < received + kWindow) {
      std::vector<char>& buffer = out[sends_posted % kWindow];
      for (size_t i = 0; i < kBytes; i += 4096) buffer[i] = static_cast<char>(sends_posted * 7 + i);
      Result<Request*> s = send->PostSend(buffer.data(), kBytes, sends_posted, nullptr);
      ASSERT_TRUE(s.ok()) << s.status().message();
      if (s.value() != nullptr) sends.push_back({sends_posted++, s.value()});
    }
    if (!sends.empty()) {
      bool done = false;
      int size = 0;
      ASSERT_TRUE(send->Test(sends.front().second, &done, &size).ok());
      if (done) {
        sends.pop_front();
        ++sent;
      }
    }
    if (!recvs.empty()) {
      bool done = false;
      int sizes[1] = {0};
      ASSERT_TRUE(recv->Test(recvs.front().second, &done, sizes).ok());
      if (done) {
        const int number = recvs.front().first;
        const int k = number % kWindow;
        // The sender has not refilled buffer k: message number + kWindow waits for this one.
        ASSERT_EQ(memcmp(in[k].data(), out[k].data(), kBytes), 0) << "message " << number;
        recvs.pop_front();
        ++received;
      }
    }
  }
  EXPECT_EQ(sent, kMessages) << "sends not done within 60 s, oldest "
                             << (sends.empty() ? -1 : sends.front().first);
  EXPECT_EQ(received, kMessages) << "receives not done within 60 s, oldest "
                                 << (recvs.empty() ? -1 : recvs.front().first);
}

}  // namespace
}  // namespace devmem
