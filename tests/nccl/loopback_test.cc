// Conformance suite: real sockets on loopback, driven through the exported v11 table the way
// NCCL's proxy drives a plugin (one thread, non-blocking connect/accept, windows of requests
// polled with test()). Payloads are checked byte for byte.
#include <dirent.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <vector>

#include "plugin/abi/net_abi.h"
#include "tests/common/plugin_fixture.h"
#include "tests/common/proc_counts.h"

namespace devmem {
namespace {

using Clock = std::chrono::steady_clock;
using testing::RandomBytes;
using testing::StderrLogger;

constexpr auto kDeadline = std::chrono::seconds(120);

using testing::OpenFdCount;
using testing::ThreadCount;

class LoopbackTest : public testing::PluginSuite {
 protected:
  void SetUp() override {
    ASSERT_EQ(net_->init(&ctx_, 1, nullptr, StderrLogger, nullptr), abi::kSuccess);
    // The process's progress engine starts its worker threads (each with an epoll fd and an
    // eventfd) with the first comm and keeps them, as NCCL keeps its proxy threads: the
    // baseline is taken once a warm-up pair has started them and closed again.
    Connect(&send_comm_, &recv_comm_);
    ASSERT_EQ(net_->closeSend(send_comm_), abi::kSuccess);
    ASSERT_EQ(net_->closeRecv(recv_comm_), abi::kSuccess);
    send_comm_ = recv_comm_ = nullptr;
    fds_before_ = OpenFdCount();
    Connect(&send_comm_, &recv_comm_);
  }

  void TearDown() override {
    for (auto& [comm, mh] : registrations_) EXPECT_EQ(net_->deregMr(comm, mh), abi::kSuccess);
    if (send_comm_ != nullptr) {
      EXPECT_EQ(net_->closeSend(send_comm_), abi::kSuccess);
    }
    if (recv_comm_ != nullptr) {
      EXPECT_EQ(net_->closeRecv(recv_comm_), abi::kSuccess);
    }
    EXPECT_EQ(net_->finalize(ctx_), abi::kSuccess);
    // Every socket, eventfd and thread-owned fd of the comms is gone.
    EXPECT_EQ(OpenFdCount(), fds_before_);
  }

  // listen + interleaved connect/accept, as NCCL's proxy thread does for a 1-GPU job.
  void Connect(void** send_comm, void** recv_comm) {
    uint8_t handle[abi::kNetHandleMaxSize];
    void* listen_comm = nullptr;
    ASSERT_EQ(net_->listen(ctx_, 0, handle, &listen_comm), abi::kSuccess);
    abi::DeviceHandleV7* no_device = nullptr;
    const auto deadline = Clock::now() + kDeadline;
    while (*send_comm == nullptr || *recv_comm == nullptr) {
      if (*send_comm == nullptr) {
        ASSERT_EQ(net_->connect(ctx_, 0, handle, send_comm, &no_device), abi::kSuccess);
      }
      if (*recv_comm == nullptr) {
        ASSERT_EQ(net_->accept(listen_comm, recv_comm, &no_device), abi::kSuccess);
      }
      ASSERT_LT(Clock::now(), deadline) << "connection setup did not finish";
    }
    ASSERT_EQ(net_->closeListen(listen_comm), abi::kSuccess);
  }

  void* Register(void* comm, void* data, size_t size) {
    void* mh = nullptr;
    EXPECT_EQ(net_->regMr(comm, data, size, abi::kPtrHost, &mh), abi::kSuccess);
    registrations_.push_back({comm, mh});
    return mh;
  }

  void* PostSend(void* data, size_t size, int tag, void* mh) {
    void* request = nullptr;
    const auto deadline = Clock::now() + kDeadline;
    while (request == nullptr && Clock::now() < deadline) {
      EXPECT_EQ(net_->isend(send_comm_, data, size, tag, mh, nullptr, &request), abi::kSuccess);
    }
    EXPECT_NE(request, nullptr);
    return request;
  }

  void* PostRecv(int n, void** data, size_t* sizes, int* tags, void** mhs) {
    void* request = reinterpret_cast<void*>(abi::kOptionalRecvCompletion);  // NCCL's LL hint
    EXPECT_EQ(net_->irecv(recv_comm_, n, data, sizes, tags, mhs, nullptr, &request), abi::kSuccess);
    EXPECT_NE(request, reinterpret_cast<void*>(abi::kOptionalRecvCompletion));
    return request;
  }

  // Polls every request until all are done; returns each one's first size.
  std::vector<int> WaitAll(const std::vector<void*>& requests,
                           std::vector<std::vector<int>>* all_sizes = nullptr) {
    std::vector<int> sizes(requests.size(), -1);
    std::vector<bool> done(requests.size(), false);
    if (all_sizes != nullptr) all_sizes->assign(requests.size(), std::vector<int>(8, -1));
    size_t remaining = requests.size();
    const auto deadline = Clock::now() + kDeadline;
    while (remaining > 0) {
      for (size_t i = 0; i < requests.size(); ++i) {
        if (done[i]) continue;
        int finished = 0;
        int got[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
        EXPECT_EQ(net_->test(requests[i], &finished, got), abi::kSuccess);
        if (finished) {
          done[i] = true;
          --remaining;
          sizes[i] = got[0];
          if (all_sizes != nullptr) (*all_sizes)[i].assign(got, got + 8);
        }
      }
      if (Clock::now() > deadline) {
        ADD_FAILURE() << remaining << " requests did not complete";
        break;
      }
    }
    return sizes;
  }

  // One message each way checked byte for byte.
  void TransferAndCheck(size_t size, uint64_t seed) {
    std::vector<char> source = RandomBytes(size, seed);
    std::vector<char> sink(size + 64, '\x5a');
    void* smh = Register(send_comm_, source.data(), source.size());
    void* rmh = Register(recv_comm_, sink.data(), sink.size());
    void* dst = sink.data();
    size_t capacity = size;
    int tag = 3;
    void* recv = PostRecv(1, &dst, &capacity, &tag, &rmh);
    void* send = PostSend(source.data(), size, tag, smh);
    std::vector<int> sizes = WaitAll({send, recv});
    EXPECT_EQ(sizes[0], static_cast<int>(size));
    EXPECT_EQ(sizes[1], static_cast<int>(size));
    ASSERT_TRUE(std::equal(source.begin(), source.end(), sink.begin()))
        << "payload differs, size " << size;
    for (size_t i = size; i < sink.size(); ++i) {
      ASSERT_EQ(sink[i], '\x5a') << "wrote past the message at " << i;
    }
  }

  void* ctx_ = nullptr;
  void* send_comm_ = nullptr;
  void* recv_comm_ = nullptr;
  int fds_before_ = 0;
  std::vector<std::pair<void*, void*>> registrations_;
};

TEST_F(LoopbackTest, ZeroAndTinyMessagesArriveExactly) {
  for (size_t size : {0, 1, 2, 3, 7, 8, 15, 16, 17}) TransferAndCheck(size, size);
}

TEST_F(LoopbackTest, PowersOfTwoUpTo256MiBArriveExactly) {
  for (size_t size = 32; size <= (256u << 20); size *= 2) TransferAndCheck(size, size);
}

TEST_F(LoopbackTest, OddSizesAroundChunkAndInlineBoundariesArriveExactly) {
  for (size_t size : {1023u, 1024u, 1025u, 4095u, 65535u, 65537u, 524287u, 524289u, 1000003u,
                      (3u << 20) + 5u, 33554431u}) {
    TransferAndCheck(size, size * 7);
  }
}

TEST_F(LoopbackTest, ThirtyTwoOutstandingRequestsEachWayCompleteInOrder) {
  constexpr int kCount = abi::kNetMaxRequests;
  std::vector<std::vector<char>> sources, sinks;
  std::vector<void*> recvs, sends;
  for (int i = 0; i < kCount; ++i) {
    size_t size = (i % 4 == 0) ? 100 : (static_cast<size_t>(i) * 37111) % (2 << 20) + 1;
    sources.push_back(RandomBytes(size, static_cast<uint64_t>(i)));
    sinks.emplace_back(size);
  }
  for (int i = 0; i < kCount; ++i) {
    void* dst = sinks[i].data();
    size_t capacity = sinks[i].size();
    int tag = 9;
    void* mh = Register(recv_comm_, dst, capacity);
    recvs.push_back(PostRecv(1, &dst, &capacity, &tag, &mh));
  }
  for (int i = 0; i < kCount; ++i) {
    void* mh = Register(send_comm_, sources[i].data(), sources[i].size());
    sends.push_back(PostSend(sources[i].data(), sources[i].size(), 9, mh));
  }
  std::vector<void*> all = recvs;
  all.insert(all.end(), sends.begin(), sends.end());
  std::vector<int> sizes = WaitAll(all);
  for (int i = 0; i < kCount; ++i) {
    EXPECT_EQ(sizes[i], static_cast<int>(sources[i].size()));
    EXPECT_EQ(sinks[i], sources[i]) << "message " << i;
  }
}

TEST_F(LoopbackTest, PoolExhaustionReturnsNullRequestThenRecovers) {
  // 32 large sends with no receive posted fill the pool; the 33rd is refused, not queued.
  const size_t size = 4u << 20;
  std::vector<char> source = RandomBytes(size, 1);
  void* smh = Register(send_comm_, source.data(), size);
  std::vector<void*> sends;
  for (int i = 0; i < abi::kNetMaxRequests; ++i) {
    void* request = nullptr;
    ASSERT_EQ(net_->isend(send_comm_, source.data(), size, 1, smh, nullptr, &request),
              abi::kSuccess);
    ASSERT_NE(request, nullptr) << "send " << i;
    sends.push_back(request);
  }
  void* refused = reinterpret_cast<void*>(0x1);
  ASSERT_EQ(net_->isend(send_comm_, source.data(), size, 1, smh, nullptr, &refused), abi::kSuccess);
  EXPECT_EQ(refused, nullptr);
  std::vector<char> sink(size);
  void* rmh = Register(recv_comm_, sink.data(), size);
  // Sends progress in test(), as NCCL's proxy drives them (messages up to
  // NCCL_DEVMEM_PROXY_BYTES are moved by the testing thread itself): each receive is waited for
  // together with the sends still in flight.
  for (int i = 0; i < abi::kNetMaxRequests; ++i) {
    void* dst = sink.data();
    size_t capacity = size;
    int tag = 1;
    void* recv = PostRecv(1, &dst, &capacity, &tag, &rmh);
    int recv_done = 0;
    int received = -1;
    const auto deadline = Clock::now() + kDeadline;
    while (!recv_done) {
      ASSERT_EQ(net_->test(recv, &recv_done, &received), abi::kSuccess);
      for (void*& send : sends) {
        if (send == nullptr) continue;
        int send_done = 0;
        ASSERT_EQ(net_->test(send, &send_done, nullptr), abi::kSuccess);
        if (send_done) send = nullptr;  // released: never tested again
      }
      ASSERT_LT(Clock::now(), deadline) << "receive " << i << " did not complete";
    }
    ASSERT_EQ(received, static_cast<int>(size));
    ASSERT_EQ(sink, source);
  }
  std::vector<void*> left;
  for (void* send : sends) {
    if (send != nullptr) left.push_back(send);
  }
  WaitAll(left);
}

TEST_F(LoopbackTest, MultiRecvMatchesMessagesByTag) {
  const std::vector<size_t> sizes = {5000, 3, 700000};
  std::vector<std::vector<char>> sources, sinks;
  void* data[3];
  size_t capacities[3];
  int tags[3] = {10, 11, 12};
  void* mhs[3];
  for (int i = 0; i < 3; ++i) {
    sources.push_back(RandomBytes(sizes[i], 100 + static_cast<uint64_t>(i)));
    sinks.emplace_back(1 << 20, '\0');
    data[i] = sinks[i].data();
    capacities[i] = sinks[i].size();
    mhs[i] = Register(recv_comm_, data[i], capacities[i]);
  }
  void* recv = PostRecv(3, data, capacities, tags, mhs);
  // Sent in a different order than posted: matching is by tag, not by position.
  std::vector<void*> sends;
  for (int i : {2, 0, 1}) {
    void* mh = Register(send_comm_, sources[i].data(), sources[i].size());
    sends.push_back(PostSend(sources[i].data(), sources[i].size(), tags[i], mh));
  }
  std::vector<std::vector<int>> all_sizes;
  std::vector<void*> all = {recv};
  all.insert(all.end(), sends.begin(), sends.end());
  WaitAll(all, &all_sizes);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(all_sizes[0][i], static_cast<int>(sizes[i])) << "sub " << i;
    EXPECT_EQ(memcmp(sinks[i].data(), sources[i].data(), sizes[i]), 0) << "sub " << i;
  }
}

TEST_F(LoopbackTest, TruncationFailsThatRequestAndTheCommStaysUsable) {
  // Sends are tested alongside the receive, as NCCL's proxy does: a zero-copy send
  // (NCCL_DEVMEM_EMULATE_TX) is done only once the receiver has taken its bytes.
  std::vector<std::vector<char>> sources;
  std::vector<void*> sends;
  std::vector<size_t> sent_sizes;
  for (size_t sent : {size_t{500}, size_t{3} << 20}) {
    sources.push_back(RandomBytes(sent, sent));
    std::vector<char>& source = sources.back();
    std::vector<char> sink(sent / 2 + 64, '\x77');
    void* smh = Register(send_comm_, source.data(), sent);
    void* rmh = Register(recv_comm_, sink.data(), sink.size());
    void* dst = sink.data();
    size_t capacity = sent / 2;
    int tag = 4;
    void* recv = PostRecv(1, &dst, &capacity, &tag, &rmh);
    void* send = PostSend(source.data(), sent, tag, smh);
    int done = 0, send_done = 0, send_size = -1;
    abi::Result result = abi::kSuccess;
    const auto deadline = Clock::now() + kDeadline;
    while (!done && result == abi::kSuccess && Clock::now() < deadline) {
      if (!send_done) {
        EXPECT_EQ(net_->test(send, &send_done, &send_size), abi::kSuccess);
      }
      int got[1];
      result = net_->test(recv, &done, got);
    }
    EXPECT_EQ(result, abi::kInvalidUsage) << "truncation of " << sent << " bytes";
    // Never a write past the posted capacity.
    for (size_t i = 0; i < sink.size(); ++i) ASSERT_EQ(sink[i], '\x77') << i;
    if (send_done) {
      EXPECT_EQ(send_size, static_cast<int>(sent));
    } else {
      sends.push_back(send);  // its last bytes are drained by the transfers below
      sent_sizes.push_back(sent);
    }
  }
  TransferAndCheck(4096, 5);  // the connection is still in step
  TransferAndCheck(5u << 20, 6);
  std::vector<int> sizes = WaitAll(sends);
  for (size_t i = 0; i < sends.size(); ++i) EXPECT_EQ(sizes[i], static_cast<int>(sent_sizes[i]));
}

TEST_F(LoopbackTest, IsendOutsideItsRegistrationIsRejected) {
  std::vector<char> buffer(4096);
  void* mh = Register(send_comm_, buffer.data(), 1024);
  void* request = nullptr;
  EXPECT_EQ(net_->isend(send_comm_, buffer.data() + 512, 1024, 0, mh, nullptr, &request),
            abi::kInvalidArgument);
  EXPECT_EQ(request, nullptr);
}

TEST_F(LoopbackTest, IflushHasNothingToFlushOnTheHostPath) {
  void* request = reinterpret_cast<void*>(0x1);
  char byte;
  void* data = &byte;
  int size = 1;
  void* mh = nullptr;
  EXPECT_EQ(net_->iflush(recv_comm_, 1, &data, &size, &mh, &request), abi::kSuccess);
  EXPECT_EQ(request, nullptr);
}

TEST_F(LoopbackTest, CudaRegistrationWithoutADriverIsAClearError) {
  if (dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD) != nullptr) GTEST_SKIP() << "driver present";
  void* h = dlopen("libcuda.so.1", RTLD_NOW);
  if (h != nullptr) {
    dlclose(h);
    GTEST_SKIP() << "a CUDA driver is installed; the gpu tests cover this path";
  }
  char buffer[64];
  void* mh = nullptr;
  EXPECT_EQ(net_->regMr(send_comm_, buffer, sizeof(buffer), abi::kPtrCuda, &mh), abi::kSystemError);
  EXPECT_EQ(net_->regMr(send_comm_, buffer, sizeof(buffer), 0x40, &mh), abi::kInvalidArgument);
}

TEST_F(LoopbackTest, CloseWithRequestsInFlightReturnsPromptly) {
  // A second pair of comms with work stuck in both directions, closed without completion.
  void* send_comm = nullptr;
  void* recv_comm = nullptr;
  Connect(&send_comm, &recv_comm);
  const size_t size = 8u << 20;
  std::vector<char> source(size, 'x');
  std::vector<char> sink(size);
  void* smh = nullptr;
  void* rmh = nullptr;
  ASSERT_EQ(net_->regMr(send_comm, source.data(), size, abi::kPtrHost, &smh), abi::kSuccess);
  ASSERT_EQ(net_->regMr(recv_comm, sink.data(), size, abi::kPtrHost, &rmh), abi::kSuccess);
  for (int i = 0; i < 8; ++i) {
    void* request = nullptr;
    ASSERT_EQ(net_->isend(send_comm, source.data(), size, 1, smh, nullptr, &request),
              abi::kSuccess);
  }
  void* dst = sink.data();
  size_t capacity = size;
  int tag = 2;  // never sent: stays posted
  void* request = nullptr;
  ASSERT_EQ(net_->irecv(recv_comm, 1, &dst, &capacity, &tag, &rmh, nullptr, &request),
            abi::kSuccess);
  const auto start = Clock::now();
  EXPECT_EQ(net_->deregMr(send_comm, smh), abi::kSuccess);
  EXPECT_EQ(net_->deregMr(recv_comm, rmh), abi::kSuccess);
  EXPECT_EQ(net_->closeSend(send_comm), abi::kSuccess);
  EXPECT_EQ(net_->closeRecv(recv_comm), abi::kSuccess);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(10));
}

TEST_F(LoopbackTest, PeerCloseFailsPendingReceivesWithoutHanging) {
  std::vector<char> sink(1 << 20);
  void* rmh = Register(recv_comm_, sink.data(), sink.size());
  void* dst = sink.data();
  size_t capacity = sink.size();
  int tag = 1;
  void* recv = PostRecv(1, &dst, &capacity, &tag, &rmh);
  ASSERT_EQ(net_->closeSend(send_comm_), abi::kSuccess);
  send_comm_ = nullptr;
  int done = 0;
  abi::Result result = abi::kSuccess;
  const auto deadline = Clock::now() + kDeadline;
  while (result == abi::kSuccess && !done && Clock::now() < deadline) {
    result = net_->test(recv, &done, nullptr);
  }
  EXPECT_EQ(done, 0);
  EXPECT_EQ(result, abi::kRemoteError);
}

// Issue 19: comms share the process's progress engine. 64 more comm pairs start no thread, each
// costs exactly its sockets in fds (what one pair costs, 64 times), and all of them carry a
// message larger than the proxy thread moves itself (the engine's workers move it) at once,
// byte-exact.
TEST_F(LoopbackTest, SixtyFourMoreCommPairsShareTheEngineThreadsAndCarryTheirBytes) {
  constexpr int kPairs = 64;
  constexpr size_t kSize = (1 << 20) + 13;
  const int threads_before = ThreadCount();
  const int fds_one_pair_before = OpenFdCount();
  std::vector<void*> sends(kPairs, nullptr), recvs(kPairs, nullptr);
  Connect(&sends[0], &recvs[0]);
  const int fds_per_pair = OpenFdCount() - fds_one_pair_before;
  // A control socket and the data sockets per comm, nothing else (no eventfd, no epoll).
  EXPECT_EQ(fds_per_pair % 2, 0);
  EXPECT_GE(fds_per_pair, 4);
  for (int p = 1; p < kPairs; ++p) Connect(&sends[p], &recvs[p]);
  EXPECT_EQ(ThreadCount(), threads_before) << "a comm started a thread of its own";
  EXPECT_EQ(OpenFdCount() - fds_one_pair_before, kPairs * fds_per_pair);

  std::vector<std::vector<char>> sources, sinks;
  std::vector<void*> requests;
  std::vector<std::pair<void*, void*>> handles;  // (comm, mh) to deregister
  for (int p = 0; p < kPairs; ++p) {
    sources.push_back(RandomBytes(kSize, 500 + static_cast<uint64_t>(p)));
    sinks.emplace_back(kSize, 0);
  }
  for (int p = 0; p < kPairs; ++p) {
    void* send_mh = nullptr;
    void* recv_mh = nullptr;
    ASSERT_EQ(net_->regMr(sends[p], sources[p].data(), kSize, abi::kPtrHost, &send_mh),
              abi::kSuccess);
    ASSERT_EQ(net_->regMr(recvs[p], sinks[p].data(), kSize, abi::kPtrHost, &recv_mh),
              abi::kSuccess);
    handles.push_back({sends[p], send_mh});
    handles.push_back({recvs[p], recv_mh});
    void* recv_request = nullptr;
    void* data = sinks[p].data();
    size_t size = kSize;
    int tag = p;
    ASSERT_EQ(net_->irecv(recvs[p], 1, &data, &size, &tag, &recv_mh, nullptr, &recv_request),
              abi::kSuccess);
    ASSERT_NE(recv_request, nullptr);
    void* send_request = nullptr;
    const auto deadline = Clock::now() + kDeadline;
    while (send_request == nullptr && Clock::now() < deadline) {
      ASSERT_EQ(net_->isend(sends[p], sources[p].data(), kSize, p, send_mh, nullptr,
                            &send_request),
                abi::kSuccess);
    }
    ASSERT_NE(send_request, nullptr);
    requests.push_back(send_request);
    requests.push_back(recv_request);
  }
  std::vector<int> sizes = WaitAll(requests);
  for (int p = 0; p < kPairs; ++p) {
    EXPECT_EQ(sizes[2 * p + 1], static_cast<int>(kSize)) << "pair " << p;
    EXPECT_TRUE(sinks[p] == sources[p]) << "pair " << p << " received other bytes";
  }
  EXPECT_EQ(ThreadCount(), threads_before);
  for (auto& [comm, mh] : handles) EXPECT_EQ(net_->deregMr(comm, mh), abi::kSuccess);
  for (int p = 0; p < kPairs; ++p) {
    EXPECT_EQ(net_->closeSend(sends[p]), abi::kSuccess);
    EXPECT_EQ(net_->closeRecv(recvs[p]), abi::kSuccess);
  }
  EXPECT_EQ(OpenFdCount(), fds_one_pair_before);
}

TEST_F(LoopbackTest, ManyMessagesStressBothDirectionsOfTheWindow) {
  // 2000 messages of mixed sizes through a window of 8, like NCCL's steps.
  constexpr int kMessages = 2000;
  constexpr int kWindow = 8;
  std::vector<std::vector<char>> sources(kWindow), sinks(kWindow);
  std::vector<void*> smh(kWindow), rmh(kWindow);
  for (int s = 0; s < kWindow; ++s) {
    sources[s].resize(256 << 10);
    sinks[s].resize(256 << 10);
    smh[s] = Register(send_comm_, sources[s].data(), sources[s].size());
    rmh[s] = Register(recv_comm_, sinks[s].data(), sinks[s].size());
  }
  std::mt19937 rng(3);
  for (int base = 0; base < kMessages; base += kWindow) {
    std::vector<void*> requests;
    std::vector<size_t> sizes(kWindow);
    for (int s = 0; s < kWindow; ++s) {
      sizes[s] = rng() % (256 << 10);
      for (size_t i = 0; i < sizes[s]; i += 997) sources[s][i] = static_cast<char>(base + s + i);
      void* dst = sinks[s].data();
      size_t capacity = sinks[s].size();
      int tag = 0;
      requests.push_back(PostRecv(1, &dst, &capacity, &tag, &rmh[s]));
      requests.push_back(PostSend(sources[s].data(), sizes[s], 0, smh[s]));
    }
    std::vector<int> got = WaitAll(requests);
    for (int s = 0; s < kWindow; ++s) {
      ASSERT_EQ(got[2 * s], static_cast<int>(sizes[s]));
      ASSERT_EQ(memcmp(sinks[s].data(), sources[s].data(), sizes[s]), 0) << base + s;
    }
  }
}

}  // namespace
}  // namespace devmem
