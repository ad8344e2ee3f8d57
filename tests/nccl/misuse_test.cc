// The ABI used wrongly, through dlopen like NCCL loads the plugin: handles used after their
// close, closed twice, of another kind, or never handed out (stack memory, a freed malloc
// block, forged values). Each is ncclInvalidArgument with one WARN naming the call, and never a
// read of the memory the handle points to (ASan would report it in a sanitizer build).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "plugin/abi/net_abi.h"
#include "tests/common/plugin_fixture.h"

namespace devmem {
namespace {

using Clock = std::chrono::steady_clock;

// Every WARN the plugin logs, kept for the test to count.
std::mutex g_warn_mutex;
std::vector<std::string> g_warns;

void RecordingLogger(abi::LogLevel level, unsigned long /*flags*/, const char* /*file*/,
                     int /*line*/, const char* fmt, ...) {
  if (level != abi::kLogWarn) return;
  char text[1024];
  va_list args;
  va_start(args, fmt);
  (void)vsnprintf(text, sizeof(text), fmt, args);
  va_end(args);
  (void)fprintf(stderr, "WARN %s\n", text);
  std::lock_guard<std::mutex> lock(g_warn_mutex);
  g_warns.emplace_back(text);
}

// WARN lines so far that report a failure of `call` ("closeSend failed: ...").
size_t WarnsFor(const std::string& call) {
  std::lock_guard<std::mutex> lock(g_warn_mutex);
  size_t n = 0;
  for (const std::string& line : g_warns) n += line.rfind(call + " failed:", 0) == 0 ? 1 : 0;
  return n;
}

class MisuseTest : public testing::PluginSuite {
 protected:
  void SetUp() override {
    ASSERT_EQ(net_->init(&ctx_, 1, nullptr, RecordingLogger, nullptr), abi::kSuccess);
  }
  void TearDown() override {
    if (send_comm_ != nullptr) {
      EXPECT_EQ(net_->closeSend(send_comm_), abi::kSuccess);
    }
    if (recv_comm_ != nullptr) {
      EXPECT_EQ(net_->closeRecv(recv_comm_), abi::kSuccess);
    }
    if (ctx_ != nullptr) {
      EXPECT_EQ(net_->finalize(ctx_), abi::kSuccess);
    }
  }

  // listen + interleaved connect/accept, like NCCL's proxy; the listen comm stays open.
  void Connect() {
    uint8_t handle[abi::kNetHandleMaxSize];
    ASSERT_EQ(net_->listen(ctx_, 0, handle, &listen_comm_), abi::kSuccess);
    abi::DeviceHandleV7* no_device = nullptr;
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (send_comm_ == nullptr || recv_comm_ == nullptr) {
      if (send_comm_ == nullptr) {
        ASSERT_EQ(net_->connect(ctx_, 0, handle, &send_comm_, &no_device), abi::kSuccess);
      }
      if (recv_comm_ == nullptr) {
        ASSERT_EQ(net_->accept(listen_comm_, &recv_comm_, &no_device), abi::kSuccess);
      }
      ASSERT_LT(Clock::now(), deadline) << "connection setup did not finish";
    }
  }

  void CloseListen() { ASSERT_EQ(net_->closeListen(listen_comm_), abi::kSuccess); }

  // `result` is ncclInvalidArgument and `call` logged exactly one WARN for it.
  void ExpectRejected(const char* call, abi::Result result, size_t warns_before) {
    EXPECT_EQ(result, abi::kInvalidArgument) << call;
    EXPECT_EQ(WarnsFor(call), warns_before + 1) << call << ": one WARN naming the call";
  }

  void* ctx_ = nullptr;
  void* listen_comm_ = nullptr;
  void* send_comm_ = nullptr;
  void* recv_comm_ = nullptr;
};

#define EXPECT_REJECTED(call, expr)       \
  do {                                    \
    const size_t warns_ = WarnsFor(call); \
    ExpectRejected(call, (expr), warns_); \
  } while (0)

TEST_F(MisuseTest, DoubleCloseOfEveryCommIsAnError) {
  Connect();
  CloseListen();
  EXPECT_REJECTED("closeListen", net_->closeListen(listen_comm_));
  EXPECT_EQ(net_->closeSend(send_comm_), abi::kSuccess);
  EXPECT_REJECTED("closeSend", net_->closeSend(send_comm_));
  EXPECT_EQ(net_->closeRecv(recv_comm_), abi::kSuccess);
  EXPECT_REJECTED("closeRecv", net_->closeRecv(recv_comm_));
  // Used after close, the handles reach nothing either.
  void* request = nullptr;
  char byte = 0;
  EXPECT_REJECTED("isend", net_->isend(send_comm_, &byte, 1, 0, nullptr, nullptr, &request));
  EXPECT_EQ(request, nullptr);
  void* data = &byte;
  size_t size = 1;
  int tag = 0;
  EXPECT_REJECTED("irecv",
                  net_->irecv(recv_comm_, 1, &data, &size, &tag, nullptr, nullptr, &request));
  void* recv = nullptr;
  EXPECT_REJECTED("accept", net_->accept(listen_comm_, &recv, nullptr));
  send_comm_ = recv_comm_ = nullptr;
}

TEST_F(MisuseTest, DoubleFinalizeIsAnError) {
  void* ctx = nullptr;
  ASSERT_EQ(net_->init(&ctx, 2, nullptr, RecordingLogger, nullptr), abi::kSuccess);
  EXPECT_EQ(net_->finalize(ctx), abi::kSuccess);
  EXPECT_REJECTED("finalize", net_->finalize(ctx));
  abi::NetAttrV11 attr{};
  EXPECT_REJECTED("setNetAttr", net_->setNetAttr(ctx, &attr));
}

TEST_F(MisuseTest, DeregMrTwiceOnAnotherCommOrAfterCloseIsAnError) {
  Connect();
  CloseListen();
  std::vector<char> buffer(4096);
  void* mh = nullptr;
  ASSERT_EQ(net_->regMr(send_comm_, buffer.data(), buffer.size(), abi::kPtrHost, &mh),
            abi::kSuccess);
  EXPECT_REJECTED("deregMr", net_->deregMr(recv_comm_, mh));  // not the recv comm's
  EXPECT_EQ(net_->deregMr(send_comm_, mh), abi::kSuccess);
  EXPECT_REJECTED("deregMr", net_->deregMr(send_comm_, mh));
  // A stale mhandle is no registration for isend either.
  void* request = nullptr;
  EXPECT_REJECTED("isend", net_->isend(send_comm_, buffer.data(), 8, 0, mh, nullptr, &request));
  // NCCL's deregister path forwards a failed registration's NULL handle: nothing to do.
  EXPECT_EQ(net_->deregMr(send_comm_, nullptr), abi::kSuccess);

  // Registrations go with their comm; deregMr after closeSend finds neither.
  ASSERT_EQ(net_->regMr(send_comm_, buffer.data(), buffer.size(), abi::kPtrHost, &mh),
            abi::kSuccess);
  ASSERT_EQ(net_->closeSend(send_comm_), abi::kSuccess);
  EXPECT_REJECTED("deregMr", net_->deregMr(send_comm_, mh));
  send_comm_ = nullptr;
  void* data = buffer.data();
  size_t size = buffer.size();
  int tag = 0;
  EXPECT_REJECTED("irecv", net_->irecv(recv_comm_, 1, &data, &size, &tag, &mh, nullptr, &request));
}

TEST_F(MisuseTest, TestAfterCloseSendWithRequestsInFlightIsAnError) {
  Connect();
  CloseListen();
  // Nothing receives: 4 MiB sends stay in flight.
  const size_t size = 4u << 20;
  std::vector<char> source(size, 'x');
  std::vector<void*> requests;
  for (int i = 0; i < 4; ++i) {
    void* request = nullptr;
    ASSERT_EQ(net_->isend(send_comm_, source.data(), size, 1, nullptr, nullptr, &request),
              abi::kSuccess);
    ASSERT_NE(request, nullptr);
    requests.push_back(request);
  }
  int done = 0;
  ASSERT_EQ(net_->test(requests[0], &done, nullptr), abi::kSuccess);
  ASSERT_EQ(net_->closeSend(send_comm_), abi::kSuccess);
  send_comm_ = nullptr;
  for (void* request : requests) {
    done = -1;
    int sent = -1;
    EXPECT_REJECTED("test", net_->test(request, &done, &sent));
    EXPECT_EQ(done, -1) << "nothing written on failure";
  }
}

TEST_F(MisuseTest, TestAfterCloseRecvWithRequestsInFlightIsAnErrorAndReadsNoSocket) {
  Connect();
  CloseListen();
  std::vector<char> sink(1 << 20);
  void* data = sink.data();
  size_t capacity = sink.size();
  int tag = 9;
  void* request = nullptr;
  ASSERT_EQ(net_->irecv(recv_comm_, 1, &data, &capacity, &tag, nullptr, nullptr, &request),
            abi::kSuccess);
  ASSERT_NE(request, nullptr);
  ASSERT_EQ(net_->closeRecv(recv_comm_), abi::kSuccess);
  // The comm's fd numbers are free again: new sockets take them. A test() that still reached the
  // comm would recv() on them and eat these bytes.
  std::vector<int> fds;
  for (int i = 0; i < 8; ++i) {
    int pair[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
    ASSERT_EQ(write(pair[0], "canary", 6), 6);
    fds.insert(fds.end(), {pair[0], pair[1]});
  }
  int done = -1;
  EXPECT_REJECTED("test", net_->test(request, &done, nullptr));
  EXPECT_EQ(done, -1);
  EXPECT_REJECTED("irecvConsumed", net_->irecvConsumed(recv_comm_, 1, request));
  for (size_t i = 0; i < fds.size(); i += 2) {
    char got[8] = {};
    EXPECT_EQ(recv(fds[i + 1], got, sizeof(got), MSG_DONTWAIT), 6) << "socket " << i / 2;
    EXPECT_EQ(std::string(got, 6), "canary");
    close(fds[i]);
    close(fds[i + 1]);
  }
  recv_comm_ = nullptr;
}

TEST_F(MisuseTest, ForeignPointersAreErrorsNotReads) {
  Connect();
  uint64_t stack[16] = {};
  // A freed block (ASan poisons it: any read through the plugin would be reported). Its address
  // is kept as a number (volatile: the compiler rightly warns about a freed pointer's use), which
  // is all the plugin gets.
  void* block = malloc(256);
  volatile uintptr_t freed_address = reinterpret_cast<uintptr_t>(block);
  free(block);
  void* freed = reinterpret_cast<void*>(static_cast<uintptr_t>(freed_address));
  void* request = nullptr;
  int done = 0;
  for (void* foreign :
       {static_cast<void*>(stack), freed, reinterpret_cast<void*>(abi::kOptionalRecvCompletion)}) {
    SCOPED_TRACE(foreign);
    EXPECT_REJECTED("test", net_->test(foreign, &done, nullptr));
    EXPECT_REJECTED("closeSend", net_->closeSend(foreign));
    EXPECT_REJECTED("closeRecv", net_->closeRecv(foreign));
    EXPECT_REJECTED("closeListen", net_->closeListen(foreign));
    EXPECT_REJECTED("finalize", net_->finalize(foreign));
    EXPECT_REJECTED("deregMr", net_->deregMr(send_comm_, foreign));
    EXPECT_REJECTED("deregMr", net_->deregMr(foreign, nullptr));
    EXPECT_REJECTED("isend", net_->isend(foreign, stack, 8, 0, nullptr, nullptr, &request));
    EXPECT_REJECTED("isend", net_->isend(send_comm_, stack, 8, 0, foreign, nullptr, &request));
    void* mh = nullptr;
    EXPECT_REJECTED("regMr", net_->regMr(foreign, stack, sizeof(stack), abi::kPtrHost, &mh));
    EXPECT_REJECTED("irecvConsumed", net_->irecvConsumed(recv_comm_, 1, foreign));
    void* dptr = nullptr;
    EXPECT_REJECTED("getDeviceMr", net_->getDeviceMr(foreign, nullptr, &dptr));
  }
  // Handles of one kind are never taken for another.
  EXPECT_REJECTED("closeSend", net_->closeSend(recv_comm_));
  EXPECT_REJECTED("closeRecv", net_->closeRecv(send_comm_));
  EXPECT_REJECTED("closeSend", net_->closeSend(listen_comm_));
  EXPECT_REJECTED("closeListen", net_->closeListen(send_comm_));
  EXPECT_REJECTED("finalize", net_->finalize(recv_comm_));
  EXPECT_REJECTED("closeRecv", net_->closeRecv(ctx_));
  EXPECT_REJECTED("test", net_->test(send_comm_, &done, nullptr));
  char byte = 0;
  EXPECT_REJECTED("isend", net_->isend(recv_comm_, &byte, 1, 0, nullptr, nullptr, &request));
  void* data = &byte;
  size_t size = 1;
  int tag = 0;
  EXPECT_REJECTED("irecv",
                  net_->irecv(send_comm_, 1, &data, &size, &tag, nullptr, nullptr, &request));
  void* recv = nullptr;
  EXPECT_REJECTED("accept", net_->accept(recv_comm_, &recv, nullptr));
  // A request is not a comm, a comm's mhandle not a comm, and a send's request no receive.
  ASSERT_EQ(net_->isend(send_comm_, &byte, 1, 0, nullptr, nullptr, &request), abi::kSuccess);
  ASSERT_NE(request, nullptr);
  EXPECT_REJECTED("closeSend", net_->closeSend(request));
  EXPECT_REJECTED("irecvConsumed", net_->irecvConsumed(recv_comm_, 1, request));
  void* mh = nullptr;
  ASSERT_EQ(net_->regMr(send_comm_, &byte, 1, abi::kPtrHost, &mh), abi::kSuccess);
  EXPECT_REJECTED("closeSend", net_->closeSend(mh));
  EXPECT_REJECTED("test", net_->test(mh, &done, nullptr));
  EXPECT_EQ(net_->deregMr(send_comm_, mh), abi::kSuccess);
  // Forged values that look like handles (bit 63 set) name no live slot.
  for (uint64_t forged : {uint64_t{1} << 63, ~uint64_t{0}, (uint64_t{1} << 63) | 0x3,
                          (uint64_t{1} << 63) | (uint64_t{12345} << 32) | (5u << 10) | 0x3}) {
    auto* handle = reinterpret_cast<void*>(static_cast<uintptr_t>(forged));
    EXPECT_REJECTED("closeSend", net_->closeSend(handle));
    EXPECT_REJECTED("test", net_->test(handle, &done, nullptr));
  }
  // The real comms still work afterwards.
  CloseListen();
  void* recv_request = nullptr;
  std::vector<char> sink(16);
  data = sink.data();
  size = sink.size();
  ASSERT_EQ(net_->irecv(recv_comm_, 1, &data, &size, &tag, nullptr, nullptr, &recv_request),
            abi::kSuccess);
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  int send_done = 0, recv_done = 0;
  while ((!send_done || !recv_done) && Clock::now() < deadline) {
    if (!send_done) {
      ASSERT_EQ(net_->test(request, &send_done, nullptr), abi::kSuccess);
    }
    int got[8] = {};
    if (!recv_done) {
      ASSERT_EQ(net_->test(recv_request, &recv_done, got), abi::kSuccess);
    }
  }
  EXPECT_TRUE(send_done && recv_done);
}

TEST_F(MisuseTest, StaleHandleStaysStaleWhenItsSlotAndMemoryAreReused) {
  Connect();
  void* old_send = send_comm_;
  void* old_recv = recv_comm_;
  ASSERT_EQ(net_->closeSend(send_comm_), abi::kSuccess);
  ASSERT_EQ(net_->closeRecv(recv_comm_), abi::kSuccess);
  send_comm_ = recv_comm_ = nullptr;
  // The next comms most likely take the freed slots (and malloc the same addresses).
  CloseListen();
  Connect();
  CloseListen();
  EXPECT_NE(send_comm_, old_send);
  EXPECT_REJECTED("closeSend", net_->closeSend(old_send));
  EXPECT_REJECTED("closeRecv", net_->closeRecv(old_recv));
  // The new ones are untouched by that.
  char byte = 7;
  void* request = nullptr;
  EXPECT_EQ(net_->isend(send_comm_, &byte, 1, 0, nullptr, nullptr, &request), abi::kSuccess);
  EXPECT_NE(request, nullptr);
}

TEST_F(MisuseTest, IrecvRewritesNcclsReceiveHintAndNeverTakesItForAHandle) {
  Connect();
  CloseListen();
  std::vector<char> sink(64);
  void* data = sink.data();
  size_t size = sink.size();
  int tag = 0;
  void* request = reinterpret_cast<void*>(abi::kOptionalRecvCompletion);
  ASSERT_EQ(net_->irecv(recv_comm_, 1, &data, &size, &tag, nullptr, nullptr, &request),
            abi::kSuccess);
  EXPECT_NE(request, reinterpret_cast<void*>(abi::kOptionalRecvCompletion));
  EXPECT_NE(request, nullptr);
  int done = 0;
  EXPECT_EQ(net_->test(request, &done, nullptr), abi::kSuccess);
  EXPECT_EQ(done, 0);
}

}  // namespace
}  // namespace devmem
