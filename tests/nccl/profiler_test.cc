// NCCL's profiler through the ABI (dlopen, loopback sockets): init gets a recording callback with
// NCCL's signature, isend/irecv get profiler handles as NCCL's proxy passes them, and the events
// the plugin reports are checked against NCCL v2.28.9's contract, written from its sources:
//   - callback(&eHandle, type, pHandle, pluginId, extData), type 0 start, 1 stop, 3 update and
//     stop (src/include/nccl_common.h:49-56); a start leaves eHandle untouched when the profiler
//     takes no network events (src/plugin/profiler.cc:689-700), and stop hands *eHandle to the
//     profiler as it is (:701-702), so only a started event may be stopped;
//   - the socket transport's events: pluginId NCCL_PROFILER_NET_TYPE_SOCK | 1 = (2 << 16) | 1
//     (src/include/plugin/nccl_profiler.h:80-86, src/transport/net_socket.cc:257), descriptor
//     ncclProfilerNetSockDescr_v1_t {uint8_t type = ncclProfileSocket (1); union {struct {int fd;
//     int op; size_t length;} sock;}} (src/include/plugin/profiler/net_socket_v1.h:12-30): fd at
//     byte 8, op at 12 (NCCL_SOCKET_SEND 0, NCCL_SOCKET_RECV 1: src/include/socket.h:97-98),
//     length at 16, stopped with type 1 (net_socket.cc:263, :273);
//   - NCCL's bootstrap passes NULL handles (src/bootstrap.cc:156, :171): no events then.
// The plugin's own events follow docs/profiler.md (pluginId 0x444d0001, a 48-byte descriptor).
// Run with NCCL_DEVMEM_EMULATE=1 as well: the emulated path's frags and tokens.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "plugin/abi/net_abi.h"
#include "plugin/core/config.h"
#include "tests/common/plugin_fixture.h"

namespace devmem {
namespace {

using Clock = std::chrono::steady_clock;
using testing::RandomBytes;
using testing::StderrLogger;

constexpr auto kDeadline = std::chrono::seconds(120);

// From NCCL (see the header comment).
constexpr int kEventStart = 0;
constexpr int kEventStop = 1;
constexpr int kEventUpdateAndStop = 3;
constexpr int64_t kSocketPluginId = (int64_t{2} << 16) | 1;
constexpr int kSocketOpSend = 0;
constexpr int kSocketOpRecv = 1;
// docs/profiler.md.
constexpr int64_t kDevmemPluginId = 0x444d0001;
constexpr size_t kDevmemDescrBytes = 48;

struct SocketDescr {
  uint8_t type = 0;
  int fd = -1;
  int op = -1;
  uint64_t length = 0;
};
SocketDescr ReadSocketDescr(const uint8_t* p) {
  SocketDescr d;
  d.type = p[0];
  memcpy(&d.fd, p + 8, sizeof(int));
  memcpy(&d.op, p + 12, sizeof(int));
  memcpy(&d.length, p + 16, sizeof(uint64_t));
  return d;
}

struct DevmemDescr {
  uint8_t type = 0, path = 0, failed = 0;
  uint64_t bytes = 0, frags = 0, linear_bytes = 0, consumer_ns = 0, tokens_returned = 0;
};
DevmemDescr ReadDevmemDescr(const uint8_t* p) {
  DevmemDescr d;
  d.type = p[0];
  d.path = p[1];
  d.failed = p[2];
  memcpy(&d.bytes, p + 8, 8);
  memcpy(&d.frags, p + 16, 8);
  memcpy(&d.linear_bytes, p + 24, 8);
  memcpy(&d.consumer_ns, p + 32, 8);
  memcpy(&d.tokens_returned, p + 40, 8);
  return d;
}

struct Call {
  int type;
  void* phandle;
  int64_t plugin_id;
  void* handle;  // start: what the profiler handed out (nullptr: declined)
  std::vector<uint8_t> descr;
};

// The recording profiler: called from NCCL's proxy thread and the plugin's workers alike.
std::mutex g_mutex;
std::vector<Call> g_calls;
uintptr_t g_next_handle = 0x10000;
bool g_decline = false;

abi::Result RecordingCallback(void** event, int type, void* phandle, int64_t plugin_id, void* ext) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Call call{type, phandle, plugin_id, nullptr, {}};
  if (type == kEventStart) {
    const size_t bytes = plugin_id == kSocketPluginId ? 24 : kDevmemDescrBytes;
    const auto* p = static_cast<const uint8_t*>(ext);
    call.descr.assign(p, p + bytes);  // valid only during the call, as NCCL's profiler sees it
    if (!g_decline) *event = reinterpret_cast<void*>(g_next_handle += 16);
    call.handle = *event;
  } else {
    call.handle = *event;
    if (type == kEventUpdateAndStop) {
      const auto* p = static_cast<const uint8_t*>(ext);
      call.descr.assign(p, p + kDevmemDescrBytes);
    }
  }
  g_calls.push_back(call);
  return abi::kSuccess;
}

std::vector<Call> Calls() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_calls;
}

bool Emulated() {
  const char* value = getenv("NCCL_DEVMEM_EMULATE");  // NOLINT(concurrency-mt-unsafe)
  return value != nullptr && strcmp(value, "1") == 0;
}

class ProfilerTest : public testing::PluginSuite {
 protected:
  void SetUp() override {
    {
      std::lock_guard<std::mutex> lock(g_mutex);
      g_calls.clear();
      g_decline = false;
    }
    ASSERT_EQ(net_->init(&ctx_, 1, nullptr, StderrLogger, RecordingCallback), abi::kSuccess);
    uint8_t handle[abi::kNetHandleMaxSize];
    void* listen_comm = nullptr;
    ASSERT_EQ(net_->listen(ctx_, 0, handle, &listen_comm), abi::kSuccess);
    abi::DeviceHandleV7* no_device = nullptr;
    const auto deadline = Clock::now() + kDeadline;
    while (send_comm_ == nullptr || recv_comm_ == nullptr) {
      if (send_comm_ == nullptr) {
        ASSERT_EQ(net_->connect(ctx_, 0, handle, &send_comm_, &no_device), abi::kSuccess);
      }
      if (recv_comm_ == nullptr) {
        ASSERT_EQ(net_->accept(listen_comm, &recv_comm_, &no_device), abi::kSuccess);
      }
      ASSERT_LT(Clock::now(), deadline) << "connection setup did not finish";
    }
    ASSERT_EQ(net_->closeListen(listen_comm), abi::kSuccess);
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
  }

  void* Register(void* comm, void* data, size_t size) {
    void* mh = nullptr;
    EXPECT_EQ(net_->regMr(comm, data, size, abi::kPtrHost, &mh), abi::kSuccess);
    registrations_.push_back({comm, mh});
    return mh;
  }

  void* Isend(void* data, size_t size, int tag, void* mh, void* phandle) {
    void* request = nullptr;
    const auto deadline = Clock::now() + kDeadline;
    while (request == nullptr && Clock::now() < deadline) {
      EXPECT_EQ(net_->isend(send_comm_, data, size, tag, mh, phandle, &request), abi::kSuccess);
    }
    EXPECT_NE(request, nullptr);
    return request;
  }

  void* Irecv(void* data, size_t size, int tag, void* mh, void* phandle) {
    void* request = nullptr;
    size_t capacity = size;
    void* phandles[1] = {phandle};
    EXPECT_EQ(net_->irecv(recv_comm_, 1, &data, &capacity, &tag, &mh, phandles, &request),
              abi::kSuccess);
    EXPECT_NE(request, nullptr);
    return request;
  }

  void WaitAll(std::vector<void*> requests) {
    const auto deadline = Clock::now() + kDeadline;
    while (!requests.empty()) {
      for (size_t i = 0; i < requests.size();) {
        int done = 0;
        ASSERT_EQ(net_->test(requests[i], &done, nullptr), abi::kSuccess);
        if (done) {
          requests.erase(requests.begin() + static_cast<long>(i));
        } else {
          ++i;
        }
      }
      ASSERT_LT(Clock::now(), deadline) << requests.size() << " requests did not complete";
    }
  }

  // Sends `size` bytes with profiler handles `send_ph` / `recv_ph` and checks the payload.
  void Transfer(size_t size, void* send_ph, void* recv_ph) {
    std::vector<char> source = RandomBytes(size, size + 1);
    std::vector<char> sink(size, 0);
    void* smh = Register(send_comm_, source.data(), source.size());
    void* rmh = Register(recv_comm_, sink.data(), sink.size());
    void* recv = Irecv(sink.data(), size, 5, rmh, recv_ph);
    void* send = Isend(source.data(), size, 5, smh, send_ph);
    WaitAll({send, recv});
    ASSERT_EQ(sink, source);
  }

  void* ctx_ = nullptr;
  void* send_comm_ = nullptr;
  void* recv_comm_ = nullptr;
  std::vector<std::pair<void*, void*>> registrations_;
};

// Every started event is stopped exactly once, with the stop type its kind needs; nothing that
// was not started is stopped. Returns the stop call of each started handle.
std::map<void*, Call> CheckPairing(const std::vector<Call>& calls) {
  std::map<void*, Call> started, stopped;
  for (const Call& c : calls) {
    if (c.type == kEventStart) {
      EXPECT_NE(c.phandle, nullptr) << "a start without NCCL's handle";
      if (c.handle != nullptr) started[c.handle] = c;
      continue;
    }
    EXPECT_TRUE(started.count(c.handle) == 1) << "stop of an event never started " << c.handle;
    EXPECT_EQ(stopped.count(c.handle), 0u) << "event stopped twice " << c.handle;
    if (started.count(c.handle) == 1) {
      const int64_t id = started[c.handle].plugin_id;
      EXPECT_EQ(c.type, id == kSocketPluginId ? kEventStop : kEventUpdateAndStop);
    }
    stopped[c.handle] = c;
  }
  for (const auto& [handle, start] : started) {
    EXPECT_EQ(stopped.count(handle), 1u) << "event " << handle << " (plugin id 0x" << std::hex
                                         << start.plugin_id << ") never stopped";
  }
  return stopped;
}

TEST_F(ProfilerTest, EveryTransferAndMessageIsOneStartedAndStoppedEvent) {
  char send_handles[2], recv_handles[2];  // NCCL's handles are addresses in its proxy state
  constexpr size_t kInline = 1000;        // rides the control socket: no data-socket transfer
  // Above every default inline limit (a message alone on its comm rides the control socket up
  // to kMaxDefaultInlineBytes): the data sockets carry it.
  constexpr size_t kLarge = 2 * size_t{devmem::kMaxDefaultInlineBytes};
  Transfer(kInline, &send_handles[0], &recv_handles[0]);
  Transfer(kLarge, &send_handles[1], &recv_handles[1]);
  const std::vector<Call> calls = Calls();
  const std::map<void*, Call> stops = CheckPairing(calls);

  const uint8_t recv_path = Emulated() ? 2 : 0;  // docs/profiler.md: 0 plain, 2 emulated
  std::map<void*, uint64_t> socket_bytes[2];     // per op: phandle -> bytes of its transfers
  int messages = 0;
  for (const Call& c : calls) {
    if (c.type != kEventStart) continue;
    if (c.plugin_id == kSocketPluginId) {
      const SocketDescr d = ReadSocketDescr(c.descr.data());
      EXPECT_EQ(d.type, 1);  // ncclProfileSocket
      EXPECT_GT(d.fd, 0);
      ASSERT_TRUE(d.op == kSocketOpSend || d.op == kSocketOpRecv) << d.op;
      EXPECT_EQ(c.phandle, d.op == kSocketOpSend ? &send_handles[1] : &recv_handles[1])
          << "only the large message moves on the data sockets";
      socket_bytes[d.op][c.phandle] += d.length;
      continue;
    }
    ASSERT_EQ(c.plugin_id, kDevmemPluginId);
    ++messages;
    const DevmemDescr start = ReadDevmemDescr(c.descr.data());
    const bool send = c.phandle == &send_handles[0] || c.phandle == &send_handles[1];
    const size_t size =
        c.phandle == &send_handles[0] || c.phandle == &recv_handles[0] ? kInline : kLarge;
    EXPECT_EQ(start.type, send ? 2 : 1);
    EXPECT_EQ(start.path, send ? 0 : recv_path);
    EXPECT_EQ(start.bytes, size);
    ASSERT_EQ(stops.count(c.handle), 1u);
    const DevmemDescr stop = ReadDevmemDescr(stops.at(c.handle).descr.data());
    EXPECT_EQ(stop.type, start.type);
    EXPECT_EQ(stop.path, start.path);
    EXPECT_EQ(stop.failed, 0);
    EXPECT_EQ(stop.bytes, size);
    if (!send && recv_path == 2 && size == kLarge) {
      // Emulated devmem: the frags of the data sockets, every token back once test() is done.
      EXPECT_GT(stop.frags, 0u);
      EXPECT_EQ(stop.tokens_returned, stop.frags);
      EXPECT_LT(stop.linear_bytes, size);
    } else {
      EXPECT_EQ(stop.frags, 0u);
      EXPECT_EQ(stop.tokens_returned, 0u);
    }
  }
  EXPECT_EQ(messages, 4);
  EXPECT_EQ(socket_bytes[kSocketOpSend][&send_handles[1]], kLarge);
  EXPECT_EQ(socket_bytes[kSocketOpRecv][&recv_handles[1]], kLarge);
}

TEST_F(ProfilerTest, MessagesWithoutAHandleReportNothing) {
  Transfer(4 << 20, nullptr, nullptr);  // NCCL's bootstrap passes NULL
  Transfer(100, nullptr, nullptr);
  EXPECT_TRUE(Calls().empty());
}

TEST_F(ProfilerTest, AProfilerThatStartsNothingIsNeverAskedToStop) {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_decline = true;  // as NCCL when the profiler's mask lacks ncclProfileNetPlugin
  }
  char send_handle, recv_handle;
  Transfer(4 << 20, &send_handle, &recv_handle);
  const std::vector<Call> calls = Calls();
  EXPECT_FALSE(calls.empty());
  for (const Call& c : calls) EXPECT_EQ(c.type, kEventStart);
}

TEST_F(ProfilerTest, ClosingTheCommStopsTheEventsOfUnfinishedReceives) {
  char recv_handle;
  std::vector<char> sink(1 << 20);
  void* rmh = Register(recv_comm_, sink.data(), sink.size());
  void* request = Irecv(sink.data(), sink.size(), 8, rmh, &recv_handle);
  int done = 1;
  ASSERT_EQ(net_->test(request, &done, nullptr), abi::kSuccess);
  EXPECT_EQ(done, 0);  // nothing was sent
  ASSERT_EQ(net_->deregMr(recv_comm_, rmh), abi::kSuccess);
  registrations_.clear();
  ASSERT_EQ(net_->closeRecv(recv_comm_), abi::kSuccess);
  recv_comm_ = nullptr;
  const std::vector<Call> calls = Calls();
  const std::map<void*, Call> stops = CheckPairing(calls);
  ASSERT_EQ(stops.size(), 1u);
  const DevmemDescr stop = ReadDevmemDescr(stops.begin()->second.descr.data());
  EXPECT_EQ(stop.failed, 1);
  EXPECT_EQ(stop.bytes, 0u);
}

TEST_F(ProfilerTest, AReceiveThatFailsStopsItsEventWhenTestReportsTheError) {
  char recv_handle;
  std::vector<char> sink(1 << 20);
  void* rmh = Register(recv_comm_, sink.data(), sink.size());
  void* request = Irecv(sink.data(), sink.size(), 8, rmh, &recv_handle);
  // The sender goes away while the receive is posted: the receiver's test() fails.
  ASSERT_EQ(net_->closeSend(send_comm_), abi::kSuccess);
  send_comm_ = nullptr;
  abi::Result result = abi::kSuccess;
  int done = 0;
  const auto deadline = Clock::now() + kDeadline;
  while (result == abi::kSuccess) {
    result = net_->test(request, &done, nullptr);
    ASSERT_EQ(done, 0);
    ASSERT_LT(Clock::now(), deadline) << "the receive did not fail";
  }
  // Stopped now, not at close: NCCL may tear its profiler down before it closes the comm.
  const std::vector<Call> calls = Calls();
  void* event = nullptr;
  for (const Call& c : calls) {
    if (c.type == kEventStart && c.plugin_id == kDevmemPluginId && c.phandle == &recv_handle) {
      event = c.handle;
    }
  }
  ASSERT_NE(event, nullptr);
  int stops = 0;
  for (const Call& c : calls) {
    if (c.type == kEventStart || c.handle != event) continue;
    ++stops;
    EXPECT_EQ(c.type, kEventUpdateAndStop);
    EXPECT_EQ(ReadDevmemDescr(c.descr.data()).failed, 1);
  }
  EXPECT_EQ(stops, 1);
}

}  // namespace
}  // namespace devmem
