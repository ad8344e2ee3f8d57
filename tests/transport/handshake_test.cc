// Handshake hardening against the real kernel: strays, garbage, wrong nonces, early
// disconnects and silent sockets are rejected with a WARN that says why (junk and wrong nonces
// as soon as their bytes arrive, not after a full hello or the timeout), never matched to a
// comm, and a legitimate connection on the same listener still succeeds afterwards. Floods and
// descriptor limits: listener_flood_test.cc.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <string>

#include "plugin/abi/net_abi.h"
#include "plugin/core/unique_fd.h"
#include "plugin/transport/wire.h"
#include "tests/common/plugin_loader.h"
#include "tests/common/proc_counts.h"
#include "tests/common/captured_log.h"

namespace devmem {
namespace {

using Clock = std::chrono::steady_clock;
using testing::CapturedLog;

class HandshakeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(plugin_.Open(DEVMEM_PLUGIN_PATH)) << plugin_.error();
    net_ = plugin_.v11();
    CapturedLog::Clear();
    ASSERT_EQ(net_->init(&ctx_, 1, nullptr, CapturedLog::Logger, nullptr), abi::kSuccess);
    ASSERT_EQ(net_->listen(ctx_, 0, handle_, &listen_comm_), abi::kSuccess);
    Result<wire::ListenHandle> decoded = wire::ListenHandle::Decode(handle_);
    ASSERT_TRUE(decoded.ok());
    listen_address_ = decoded->address;
    nonce_ = decoded->nonce;
  }
  void TearDown() override {
    if (listen_comm_ != nullptr) {
      EXPECT_EQ(net_->closeListen(listen_comm_), abi::kSuccess);
    }
    EXPECT_EQ(net_->finalize(ctx_), abi::kSuccess);
  }

  UniqueFd RawConnect() {
    UniqueFd fd(socket(listen_address_.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
    EXPECT_EQ(connect(fd.get(), listen_address_.get(), listen_address_.length()), 0);
    return fd;
  }

  // Drives accept() until `fd` is closed by the plugin; asserts no comm comes out meanwhile.
  // Returns the bytes the plugin sent before closing.
  std::vector<uint8_t> AcceptUntilClosed(int fd) {
    std::vector<uint8_t> received;
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    while (Clock::now() < deadline) {
      void* comm = nullptr;
      abi::DeviceHandleV7* dev = nullptr;
      EXPECT_EQ(net_->accept(listen_comm_, &comm, &dev), abi::kSuccess);
      EXPECT_EQ(comm, nullptr) << "a stray socket became a comm";
      uint8_t buffer[64];
      ssize_t n = recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
      if (n > 0) received.insert(received.end(), buffer, buffer + n);
      if (n == 0 || (n < 0 && errno == ECONNRESET)) return received;
    }
    ADD_FAILURE() << "the plugin never closed the rejected socket";
    return received;
  }

  // A real connect() + accept() on the same listener still works.
  void ExpectLegitimateConnectionWorks() {
    void* send_comm = nullptr;
    void* recv_comm = nullptr;
    abi::DeviceHandleV7* dev = nullptr;
    uint8_t handle_copy[abi::kNetHandleMaxSize];
    memcpy(handle_copy, handle_, sizeof(handle_copy));
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    while ((send_comm == nullptr || recv_comm == nullptr) && Clock::now() < deadline) {
      if (send_comm == nullptr) {
        ASSERT_EQ(net_->connect(ctx_, 0, handle_copy, &send_comm, &dev), abi::kSuccess);
      }
      if (recv_comm == nullptr) {
        ASSERT_EQ(net_->accept(listen_comm_, &recv_comm, &dev), abi::kSuccess);
      }
    }
    ASSERT_NE(send_comm, nullptr);
    ASSERT_NE(recv_comm, nullptr);
    EXPECT_EQ(net_->closeSend(send_comm), abi::kSuccess);
    EXPECT_EQ(net_->closeRecv(recv_comm), abi::kSuccess);
  }

  // The one WARN about a dropped connection, which must say `why`.
  void ExpectDroppedBecause(const std::string& why) {
    std::vector<std::string> drops = CapturedLog::WarningsWith("dropped a connection from");
    ASSERT_EQ(drops.size(), 1u);
    EXPECT_NE(drops[0].find(why), std::string::npos) << drops[0];
  }

  wire::Hello ValidHello() const {
    wire::Hello hello;
    hello.role = wire::SocketRole::kControl;
    hello.data_sockets = 1;
    hello.chunk_bytes = 512 << 10;
    hello.inline_bytes = 0;
    hello.nonce = nonce_;
    hello.connection_id = 77;
    return hello;
  }

  testing::LoadedPlugin plugin_;
  const abi::NetV11* net_ = nullptr;
  void* ctx_ = nullptr;
  void* listen_comm_ = nullptr;
  uint8_t handle_[abi::kNetHandleMaxSize] = {};
  SocketAddress listen_address_;
  uint64_t nonce_ = 0;
};

TEST_F(HandshakeTest, GarbageBytesAreRejected) {
  UniqueFd fd = RawConnect();
  const char garbage[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n0123456789abcdef";
  ASSERT_GT(send(fd.get(), garbage, sizeof(garbage), 0), 0);
  AcceptUntilClosed(fd.get());
  ExpectDroppedBecause("first bytes 47 45 54 20 do not start a hello");
  ExpectLegitimateConnectionWorks();
}

TEST_F(HandshakeTest, JunkIsDroppedOnItsFirstBytesWithoutWaitingForAFullHello) {
  UniqueFd fd = RawConnect();
  ASSERT_EQ(send(fd.get(), "SSH-", 4, 0), 4);  // and then nothing: the socket stays open
  AcceptUntilClosed(fd.get());
  ExpectDroppedBecause("first bytes 53 53 48 2d do not start a hello");
  ExpectLegitimateConnectionWorks();
}

TEST_F(HandshakeTest, WrongNonceIsRejectedAsSoonAsTheNonceArrives) {
  UniqueFd fd = RawConnect();
  wire::Hello hello = ValidHello();
  hello.nonce ^= 1;
  uint8_t bytes[wire::Hello::kSize];
  hello.Encode(bytes);
  const size_t through_nonce = wire::Hello::kNonceOffset + sizeof(uint64_t);
  ASSERT_EQ(send(fd.get(), bytes, through_nonce, 0), static_cast<ssize_t>(through_nonce));
  std::vector<uint8_t> reply = AcceptUntilClosed(fd.get());
  ASSERT_EQ(reply.size(), wire::HelloReply::kSize);
  Result<wire::HelloReply> decoded = wire::HelloReply::Decode(reply.data());
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->code, wire::HelloReply::kRejected);
  ExpectDroppedBecause("hello for another listener");
  ExpectLegitimateConnectionWorks();
}

TEST_F(HandshakeTest, HelloArrivingInPiecesIsStillIdentified) {
  // A peer whose hellos trickle in (a slow network) is read piece by piece and becomes a comm.
  UniqueFd control = RawConnect();
  UniqueFd data = RawConnect();
  uint8_t control_hello[wire::Hello::kSize];
  uint8_t data_hello[wire::Hello::kSize];
  wire::Hello hello = ValidHello();
  hello.Encode(control_hello);
  hello.role = wire::SocketRole::kData;
  hello.Encode(data_hello);
  void* comm = nullptr;
  abi::DeviceHandleV7* dev = nullptr;
  for (size_t sent = 0; sent < wire::Hello::kSize; sent += 8) {
    ASSERT_EQ(send(control.get(), control_hello + sent, 8, 0), 8);
    ASSERT_EQ(send(data.get(), data_hello + sent, 8, 0), 8);
    for (int i = 0; i < 5 && comm == nullptr; ++i) {
      ASSERT_EQ(net_->accept(listen_comm_, &comm, &dev), abi::kSuccess);
      if (sent + 8 < wire::Hello::kSize) {
        ASSERT_EQ(comm, nullptr) << "a comm before its hellos";
      }
    }
  }
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (comm == nullptr && Clock::now() < deadline) {
    ASSERT_EQ(net_->accept(listen_comm_, &comm, &dev), abi::kSuccess);
  }
  ASSERT_NE(comm, nullptr);
  uint8_t reply[wire::HelloReply::kSize];
  ASSERT_EQ(recv(control.get(), reply, sizeof(reply), MSG_WAITALL),
            static_cast<ssize_t>(sizeof(reply)));
  Result<wire::HelloReply> decoded = wire::HelloReply::Decode(reply);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->code, wire::HelloReply::kAccepted);
  EXPECT_EQ(net_->closeRecv(comm), abi::kSuccess);
  EXPECT_TRUE(CapturedLog::Warnings().empty());
}

TEST_F(HandshakeTest, WrongNonceIsRejectedWithAReply) {
  UniqueFd fd = RawConnect();
  wire::Hello hello = ValidHello();
  hello.nonce ^= 1;
  uint8_t bytes[wire::Hello::kSize];
  hello.Encode(bytes);
  ASSERT_EQ(send(fd.get(), bytes, sizeof(bytes), 0), static_cast<ssize_t>(sizeof(bytes)));
  std::vector<uint8_t> reply = AcceptUntilClosed(fd.get());
  ASSERT_EQ(reply.size(), wire::HelloReply::kSize);
  Result<wire::HelloReply> decoded = wire::HelloReply::Decode(reply.data());
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->code, wire::HelloReply::kRejected);
  ExpectLegitimateConnectionWorks();
}

TEST_F(HandshakeTest, EarlyDisconnectIsDropped) {
  {
    UniqueFd fd = RawConnect();
    uint8_t bytes[wire::Hello::kSize];
    ValidHello().Encode(bytes);
    ASSERT_EQ(send(fd.get(), bytes, 10, 0), 10);
  }  // closed after 10 of 40 bytes
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (CapturedLog::Warnings().empty() && Clock::now() < deadline) {
    void* comm = nullptr;
    abi::DeviceHandleV7* dev = nullptr;
    ASSERT_EQ(net_->accept(listen_comm_, &comm, &dev), abi::kSuccess);
    ASSERT_EQ(comm, nullptr);
  }
  ExpectDroppedBecause("closed after 10 of 40 hello bytes");
  ExpectLegitimateConnectionWorks();
}

TEST_F(HandshakeTest, SilentSocketTimesOut) {
  // NCCL_DEVMEM_HANDSHAKE_TIMEOUT_MS=300 in this test's environment.
  UniqueFd fd = RawConnect();
  AcceptUntilClosed(fd.get());
  ExpectDroppedBecause("sent 0 of 40 hello bytes within 300 ms");
  ExpectLegitimateConnectionWorks();
}

TEST_F(HandshakeTest, PartialHelloWaitsUntilTheTimeout) {
  UniqueFd fd = RawConnect();
  uint8_t bytes[wire::Hello::kSize];
  ValidHello().Encode(bytes);
  ASSERT_EQ(send(fd.get(), bytes, 10, 0), 10);  // a valid start, then silence
  AcceptUntilClosed(fd.get());
  ExpectDroppedBecause("sent 10 of 40 hello bytes within 300 ms");
  ExpectLegitimateConnectionWorks();
}

TEST_F(HandshakeTest, IncompleteConnectionGroupExpires) {
  // A valid control socket whose data sockets never come is dropped after the timeout.
  UniqueFd fd = RawConnect();
  uint8_t bytes[wire::Hello::kSize];
  ValidHello().Encode(bytes);
  ASSERT_EQ(send(fd.get(), bytes, sizeof(bytes), 0), static_cast<ssize_t>(sizeof(bytes)));
  AcceptUntilClosed(fd.get());
  ExpectLegitimateConnectionWorks();
}

TEST_F(HandshakeTest, ConnectToARejectingListenerFailsCleanly) {
  uint8_t stale[abi::kNetHandleMaxSize];
  memcpy(stale, handle_, sizeof(stale));
  stale[28] ^= 0xff;  // the nonce of another listener
  void* send_comm = nullptr;
  abi::DeviceHandleV7* dev = nullptr;
  abi::Result result = abi::kSuccess;
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while (result == abi::kSuccess && send_comm == nullptr && Clock::now() < deadline) {
    result = net_->connect(ctx_, 0, stale, &send_comm, &dev);
    void* recv_comm = nullptr;
    EXPECT_EQ(net_->accept(listen_comm_, &recv_comm, &dev), abi::kSuccess);
    EXPECT_EQ(recv_comm, nullptr);
  }
  EXPECT_EQ(result, abi::kRemoteError);
  EXPECT_EQ(send_comm, nullptr);
  ExpectLegitimateConnectionWorks();
}

TEST_F(HandshakeTest, ConnectToAClosedPortFails) {
  uint8_t handle[abi::kNetHandleMaxSize];
  memcpy(handle, handle_, sizeof(handle));
  ASSERT_EQ(net_->closeListen(listen_comm_), abi::kSuccess);
  listen_comm_ = nullptr;
  void* send_comm = nullptr;
  abi::DeviceHandleV7* dev = nullptr;
  abi::Result result = abi::kSuccess;
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while (result == abi::kSuccess && Clock::now() < deadline) {
    result = net_->connect(ctx_, 0, handle, &send_comm, &dev);
  }
  EXPECT_EQ(result, abi::kSystemError);
  EXPECT_EQ(send_comm, nullptr);
}

// Issue 19 defect (b): a virtual NIC's handle names several remote members; the one that
// refused is named, not the handle's first address.
TEST_F(HandshakeTest, AVirtualNicMemberThatRefusesIsNamedInTheError) {
  wire::ListenHandle handle;
  handle.address = listen_address_;  // 127.0.0.1:P, listening
  handle.nonce = nonce_;
  Result<SocketAddress> refusing = SocketAddress::FromString("127.0.0.2", listen_address_.port());
  ASSERT_TRUE(refusing.ok());
  handle.extra_members.push_back(refusing.value());  // nothing listens on 127.0.0.2:P
  uint8_t bytes[abi::kNetHandleMaxSize] = {};
  handle.Encode(bytes);
  void* send_comm = nullptr;
  abi::DeviceHandleV7* dev = nullptr;
  abi::Result result = abi::kSuccess;
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while (result == abi::kSuccess && send_comm == nullptr && Clock::now() < deadline) {
    result = net_->connect(ctx_, 0, bytes, &send_comm, &dev);
    void* recv_comm = nullptr;
    EXPECT_EQ(net_->accept(listen_comm_, &recv_comm, &dev), abi::kSuccess);
    EXPECT_EQ(recv_comm, nullptr);
  }
  EXPECT_EQ(result, abi::kSystemError);
  EXPECT_EQ(send_comm, nullptr);
  const std::string member = refusing->ToString();
  std::vector<std::string> warnings = CapturedLog::WarningsWith("connect to ");
  ASSERT_FALSE(warnings.empty());
  EXPECT_NE(warnings.back().find("connect to " + member), std::string::npos) << warnings.back();
  EXPECT_NE(warnings.back().find("Connection refused"), std::string::npos) << warnings.back();
}

// Threads of this process named like the progress engine's workers.
int EngineThreads() {
  int count = 0;
  DIR* dir = opendir("/proc/self/task");
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    std::ifstream comm(std::string("/proc/self/task/") + entry->d_name + "/comm");
    std::string name;
    std::getline(comm, name);
    count += name.rfind("devmem-eng", 0) == 0 ? 1 : 0;
  }
  closedir(dir);
  return count;
}

using testing::OpenFdCount;

// The highest open fd number (not counting the directory read to find it).
int HighestFd() {
  int highest = -1;
  DIR* dir = opendir("/proc/self/fd");
  const int own = dirfd(dir);
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    const int fd = atoi(entry->d_name);
    if (fd != own) highest = std::max(highest, fd);
  }
  closedir(dir);
  return highest;
}

// Issue 19 defect (a): the listener used to reply "accepted" before it had created the receive
// comm; when that failed (here: the progress engine cannot get the epoll fd for its first
// worker, the process being out of descriptors), the sender held a send comm nobody received
// from. Now the connection is closed unanswered: both ends fail, and a later connection works.
TEST_F(HandshakeTest, AConnectionTheListenerCannotTurnIntoACommFailsOnBothEnds) {
#if defined(__SANITIZE_ADDRESS__)
  // UBSan's vptr check probes memory through a pipe: in a process without a free descriptor
  // it reports every checked member access (seen in CI's ASan+UBSan stage). The normal and
  // Release builds run this test.
  GTEST_SKIP() << "needs a process out of descriptors, which the sanitizers' own checks cannot "
                  "run in";
#endif
  if (EngineThreads() > 0) {
    GTEST_SKIP() << "the progress engine already runs in this process (an earlier test started "
                    "it); ctest runs this test in a process of its own";
  }
  uint8_t handle[abi::kNetHandleMaxSize];
  memcpy(handle, handle_, sizeof(handle));
  void* send_comm = nullptr;
  abi::DeviceHandleV7* dev = nullptr;
  // The first connect opens every socket of the connection (1 control + the data sockets).
  const int before_connect = OpenFdCount();
  ASSERT_EQ(net_->connect(ctx_, 0, handle, &send_comm, &dev), abi::kSuccess);
  ASSERT_EQ(send_comm, nullptr);
  const int connection_sockets = OpenFdCount() - before_connect;
  ASSERT_GT(connection_sockets, 1);
  // Fill every gap below the highest open fd, so that the limit below leaves room for exactly
  // the listener's ends of those sockets (new fds take the lowest free number).
  std::vector<UniqueFd> fillers;
  const int top = HighestFd();
  do {
    fillers.emplace_back(open("/dev/null", O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fillers.back().valid());
  } while (fillers.back().get() < top);
  const int highest = fillers.back().get();
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlimit tight = saved;
  tight.rlim_cur = static_cast<rlim_t>(highest + 1 + connection_sockets);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &tight), 0);
  abi::Result connected = abi::kSuccess;
  abi::Result accepted = abi::kSuccess;
  void* recv_comm = nullptr;
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while (accepted == abi::kSuccess && recv_comm == nullptr && Clock::now() < deadline) {
    if (connected == abi::kSuccess && send_comm == nullptr) {
      connected = net_->connect(ctx_, 0, handle, &send_comm, &dev);
    }
    accepted = net_->accept(listen_comm_, &recv_comm, &dev);
  }
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &saved), 0);
  fillers.clear();
  EXPECT_EQ(recv_comm, nullptr);
  EXPECT_EQ(accepted, abi::kSystemError) << "the listener must report the comm it could not create";
  EXPECT_FALSE(CapturedLog::WarningsWith("refused: the sender's connect fails too").empty());
  // The sender must not end up with a comm: its connect fails once the listener closed it.
  while (connected == abi::kSuccess && send_comm == nullptr && Clock::now() < deadline) {
    connected = net_->connect(ctx_, 0, handle, &send_comm, &dev);
  }
  EXPECT_EQ(send_comm, nullptr) << "the sender got a comm the receiver never created";
  EXPECT_NE(connected, abi::kSuccess);
  ExpectLegitimateConnectionWorks();
}

TEST_F(HandshakeTest, PortScanStormLeavesTheListenerWorking) {
  for (int i = 0; i < 200; ++i) {
    UniqueFd fd = RawConnect();
    if (i % 2 == 0) {
      ASSERT_EQ(send(fd.get(), "x", 1, 0), 1);
    }
    void* comm = nullptr;
    abi::DeviceHandleV7* dev = nullptr;
    ASSERT_EQ(net_->accept(listen_comm_, &comm, &dev), abi::kSuccess);
    ASSERT_EQ(comm, nullptr);
  }
  ExpectLegitimateConnectionWorks();
  // 200 strays: a few detailed WARNs, then one summary when the listener closes.
  EXPECT_LE(CapturedLog::WarningsWith("dropped a connection from").size(), 5u);
  ASSERT_EQ(net_->closeListen(listen_comm_), abi::kSuccess);
  listen_comm_ = nullptr;
  std::vector<std::string> summary = CapturedLog::WarningsWith("unidentified connections in the");
  ASSERT_EQ(summary.size(), 1u);
  EXPECT_NE(summary[0].find("dropped 200 unidentified connections"), std::string::npos)
      << summary[0];
}

}  // namespace
}  // namespace devmem
