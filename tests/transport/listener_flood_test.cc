// The listener against what anyone who can reach its port can do (issue 11): garbage connections
// around a real peer, idle connections on a process with RLIMIT_NOFILE=1024 (and one with almost
// no descriptors left), and a connect/close churn that must not flood the log. Loopback only,
// bounded in count and time. The pure rules: listener_rules_test.cc.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "plugin/abi/net_abi.h"
#include "plugin/core/unique_fd.h"
#include "plugin/transport/listener_admission.h"
#include "plugin/transport/wire.h"
#include "tests/common/plugin_loader.h"
#include "tests/common/captured_log.h"

namespace devmem {
namespace {

using namespace std::chrono_literals;
using testing::CapturedLog;

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// ---------------------------------------------------------------------------------------------
// Against the real kernel.

// What a stray client does; together they cover every way of not identifying oneself.
enum class Garbage { kCloseAtOnce, kJunkThenClose, kJunkAndStay, kIdle, kHelloPrefixAndStay };
constexpr int kGarbageKinds = 5;

// Opens garbage connections to a listener, on its own thread or inline. Staying connections are
// kept up to `keep` (the oldest closed first), so the test's own descriptors stay bounded.
class Flood {
 public:
  Flood(const SocketAddress& target, int count, size_t keep)
      : target_(target), count_(count), keep_(keep) {}
  ~Flood() { Join(); }
  void Start() {
    thread_ = std::thread([this] { Run(); });
  }
  void Run() {
    wire::Hello hello;  // everything but the nonce, which a stranger cannot know
    hello.data_sockets = 1;
    hello.chunk_bytes = 512 << 10;
    hello.Encode(prefix_);
    for (int i = 0; i < count_; ++i) {
      Connect(static_cast<Garbage>(i % kGarbageKinds));
      made_.store(i + 1, std::memory_order_release);
    }
    done_.store(true, std::memory_order_release);
  }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }
  int made() const { return made_.load(std::memory_order_acquire); }
  bool done() const { return done_.load(std::memory_order_acquire); }
  int connected() const { return connected_.load(); }

 private:
  void Connect(Garbage kind) {
    UniqueFd fd(socket(target_.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid() || connect(fd.get(), target_.get(), target_.length()) != 0) return;
    ++connected_;
    static const char kJunk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    switch (kind) {
      case Garbage::kCloseAtOnce:
        return;
      case Garbage::kJunkThenClose:
      case Garbage::kJunkAndStay:
        if (send(fd.get(), kJunk, sizeof(kJunk), MSG_NOSIGNAL) < 0) return;
        if (kind == Garbage::kJunkThenClose) return;
        break;
      case Garbage::kIdle:
        break;
      case Garbage::kHelloPrefixAndStay:
        if (send(fd.get(), prefix_, wire::Hello::kNonceOffset, MSG_NOSIGNAL) < 0) return;
        break;
    }
    kept_.push_back(std::move(fd));
    if (kept_.size() > keep_) kept_.pop_front();
  }

  const SocketAddress target_;
  const int count_;
  const size_t keep_;
  uint8_t prefix_[wire::Hello::kSize] = {};
  std::deque<UniqueFd> kept_;
  std::atomic<int> made_{0};
  std::atomic<int> connected_{0};
  std::atomic<bool> done_{false};
  std::thread thread_;
};

class ListenerFloodTest : public ::testing::Test {
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
  }
  void TearDown() override {
    if (listen_comm_ != nullptr) {
      EXPECT_EQ(net_->closeListen(listen_comm_), abi::kSuccess);
    }
    EXPECT_EQ(net_->finalize(ctx_), abi::kSuccess);
  }

  // One accept poll, as NCCL's proxy makes while it waits for its peer: nothing here may
  // become a comm.
  void PollAcceptExpectingNothing() {
    void* comm = nullptr;
    abi::DeviceHandleV7* dev = nullptr;
    ASSERT_EQ(net_->accept(listen_comm_, &comm, &dev), abi::kSuccess);
    ASSERT_EQ(comm, nullptr) << "a stray connection became a comm";
  }

  // Drives connect() and accept() like the two proxies until both return a comm (or `limit`
  // passes); returns how long that took and closes both comms. `handle` may hold a connect in
  // progress.
  Clock::duration ConnectAndAccept(uint8_t* handle, void* send_comm = nullptr) {
    void* recv_comm = nullptr;
    abi::DeviceHandleV7* dev = nullptr;
    const Clock::time_point start = Clock::now();
    while ((send_comm == nullptr || recv_comm == nullptr) && Clock::now() - start < 10s) {
      if (send_comm == nullptr) {
        EXPECT_EQ(net_->connect(ctx_, 0, handle, &send_comm, &dev), abi::kSuccess);
        if (::testing::Test::HasFailure()) break;
      }
      if (recv_comm == nullptr) {
        EXPECT_EQ(net_->accept(listen_comm_, &recv_comm, &dev), abi::kSuccess);
        if (::testing::Test::HasFailure()) break;
      }
    }
    const Clock::duration took = Clock::now() - start;
    EXPECT_NE(send_comm, nullptr) << "the real peer's connect never completed";
    EXPECT_NE(recv_comm, nullptr) << "the real peer was never accepted";
    if (send_comm != nullptr) {
      EXPECT_EQ(net_->closeSend(send_comm), abi::kSuccess);
    }
    if (recv_comm != nullptr) {
      EXPECT_EQ(net_->closeRecv(recv_comm), abi::kSuccess);
    }
    return took;
  }

  testing::LoadedPlugin plugin_;
  const abi::NetV11* net_ = nullptr;
  void* ctx_ = nullptr;
  void* listen_comm_ = nullptr;
  uint8_t handle_[abi::kNetHandleMaxSize] = {};
  SocketAddress listen_address_;
};

double Millis(Clock::duration duration) {
  return std::chrono::duration<double, std::milli>(duration).count();
}

TEST_F(ListenerFloodTest, PeerConnectsWithinOneSecondWhile3000GarbageConnectionsArrive) {
  Flood flood(listen_address_, 3000, /*keep=*/300);
  flood.Start();
  const Clock::time_point give_up = Clock::now() + 10s;
  while (flood.made() < 1000 && !flood.done() && Clock::now() < give_up) {
    PollAcceptExpectingNothing();
    if (HasFatalFailure()) return;
  }
  const int made_before = flood.made();
  const Clock::duration took = ConnectAndAccept(handle_);
  const int made_after = flood.made();
  EXPECT_LT(took, 1s) << "the real peer needed " << Millis(took) << " ms";
  while (!flood.done() && Clock::now() < give_up) {
    PollAcceptExpectingNothing();
    if (HasFatalFailure()) return;
  }
  flood.Join();
  for (int i = 0; i < 100; ++i) PollAcceptExpectingNothing();
  printf("real peer: %.1f ms, during garbage connections %d to %d of %d made\n", Millis(took),
         made_before, made_after, flood.made());
  EXPECT_GT(flood.connected(), 2000) << "the flood itself did not happen";
  EXPECT_LE(CapturedLog::Warnings().size(), 6u) << "one WARN per stray socket again?";
}

TEST_F(ListenerFloodTest, GarbageQueuedBetweenConnectAndAcceptDoesNotPushOutThePeer) {
  // The peer connects and sends its hellos...
  void* send_comm = nullptr;
  abi::DeviceHandleV7* dev = nullptr;
  for (int i = 0; i < 5 && send_comm == nullptr; ++i) {
    ASSERT_EQ(net_->connect(ctx_, 0, handle_, &send_comm, &dev), abi::kSuccess);
    std::this_thread::sleep_for(5ms);  // lets loopback finish the TCP handshakes
  }
  ASSERT_EQ(send_comm, nullptr) << "connected before the listener accepted anything?";
  // ...then 3000 garbage connections queue up behind it before the proxy's next accept poll.
  Flood flood(listen_address_, 3000, /*keep=*/300);
  flood.Run();
  ASSERT_GT(flood.connected(), 2000) << "the flood itself did not happen";
  const Clock::duration took = ConnectAndAccept(handle_, send_comm);
  EXPECT_LT(took, 1s) << "the real peer needed " << Millis(took) << " ms";
  printf("real peer accepted %.1f ms after the flood\n", Millis(took));
}

TEST_F(ListenerFloodTest, ConnectCloseChurnLogsAFewWarningsAndASummary) {
  // 2.5 s of a port scanner's connect/close (at most 4000 connections, so the test's ports stay
  // far from exhaustion) while the proxy polls accept.
  std::atomic<bool> stop{false};
  std::atomic<int> made{0};
  std::thread churn([&] {
    while (!stop.load() && made.load() < 4000) {
      UniqueFd fd(socket(listen_address_.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (connect(fd.get(), listen_address_.get(), listen_address_.length()) == 0) ++made;
      std::this_thread::sleep_for(200us);
    }
  });
  const Clock::time_point end = Clock::now() + 2500ms;
  while (Clock::now() < end) {
    PollAcceptExpectingNothing();
    if (HasFatalFailure()) break;
  }
  stop = true;
  churn.join();
  // The listener takes the rest of the churn off its queue; closing it writes the summary.
  const Clock::time_point drain = Clock::now() + 300ms;
  while (Clock::now() < drain) PollAcceptExpectingNothing();
  ASSERT_EQ(net_->closeListen(listen_comm_), abi::kSuccess);
  listen_comm_ = nullptr;

  const std::vector<std::string> warnings = CapturedLog::Warnings();
  printf("%d connections, %zu WARN lines\n", made.load(), warnings.size());
  ASSERT_GT(made.load(), 100) << "the churn itself did not happen";
  EXPECT_LE(warnings.size(), 6u) << "5 detailed lines and one summary at most";
  const std::vector<std::string> summaries =
      CapturedLog::WarningsWith("unidentified connections in the last");
  ASSERT_EQ(summaries.size(), 1u);
  EXPECT_TRUE(Contains(summaries[0], " from 127.0.0.1 (")) << summaries[0];
  EXPECT_TRUE(Contains(summaries[0], "closed before a full hello")) << summaries[0];
  // The count it reports is the churn's: every connection was dropped, none twice.
  const size_t at = summaries[0].find("dropped ");
  ASSERT_NE(at, std::string::npos);
  std::string digits;
  for (size_t i = at + 8; i < summaries[0].size() && summaries[0][i] != ' '; ++i) {
    if (summaries[0][i] != ',') digits += summaries[0][i];
  }
  const int dropped = std::stoi(digits);
  EXPECT_LE(dropped, made.load());
  EXPECT_GE(dropped, made.load() * 9 / 10) << "connections left behind in the queue";
}

// ---------------------------------------------------------------------------------------------
// RLIMIT_NOFILE=1024, in forked children: nothing in the test process changes.

constexpr int kSkipExit = 77;
constexpr int kIdleConnections = 1100;
constexpr rlim_t kListenerFdLimit = 1024;

struct ListenerReport {
  int accepted_peer = 0;
  int warnings = 0;
  int summaries = 0;
  int out_of_descriptors = 0;  // lines about accept running out of descriptors
};

bool WriteAll(int fd, const void* data, size_t size) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  while (size > 0) {
    const ssize_t n = write(fd, bytes, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// False on EOF, error or timeout.
bool ReadAll(int fd, void* data, size_t size, Clock::duration timeout) {
  auto* bytes = static_cast<uint8_t*>(data);
  const Clock::time_point give_up = Clock::now() + timeout;
  while (size > 0) {
    pollfd wait = {fd, POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(give_up - Clock::now());
    if (left.count() <= 0 || poll(&wait, 1, static_cast<int>(left.count())) <= 0) return false;
    const ssize_t n = read(fd, bytes, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// A forked child, killed and reaped if the test leaves before waiting for it.
class Child {
 public:
  explicit Child(pid_t pid) : pid_(pid) {}
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { Kill(); }
  // The exit status, killing the child if it has not exited within `timeout` (then -1).
  int Wait(Clock::duration timeout) {
    const Clock::time_point give_up = Clock::now() + timeout;
    int status = 0;
    pid_t done = 0;
    while ((done = waitpid(pid_, &status, WNOHANG)) == 0 && Clock::now() < give_up) {
      std::this_thread::sleep_for(10ms);
    }
    if (done != pid_) return Kill();
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  int Kill() {
    if (pid_ > 0) {  // never kill(-1) or kill(0): those signal far more than our child
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
    return -1;
  }

 private:
  pid_t pid_;
};

// The listening process: soft RLIMIT_NOFILE=1024 (and, with `leave_few_descriptors`, all but 24
// of them taken, so accept runs out), sends its handle, polls accept until the real peer's comm
// arrives, closes the listener and reports what it logged.
[[noreturn]] void ListenerChild(int handle_out, int report_out, bool leave_few_descriptors) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_max < kListenerFdLimit) _exit(kSkipExit);
  limit.rlim_cur = kListenerFdLimit;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) _exit(kSkipExit);
  testing::LoadedPlugin plugin;
  if (!plugin.Open(DEVMEM_PLUGIN_PATH)) _exit(2);
  const abi::NetV11* net = plugin.v11();
  void* ctx = nullptr;
  void* listen_comm = nullptr;
  uint8_t handle[abi::kNetHandleMaxSize] = {};
  CapturedLog::Clear();
  if (net->init(&ctx, 1, nullptr, CapturedLog::Logger, nullptr) != abi::kSuccess) _exit(3);
  if (net->listen(ctx, 0, handle, &listen_comm) != abi::kSuccess) _exit(4);
  std::deque<UniqueFd> taken;
  if (leave_few_descriptors) {
    while (true) {
      UniqueFd fd(open("/dev/null", O_RDONLY | O_CLOEXEC));
      if (!fd.valid()) break;
      taken.push_back(std::move(fd));
    }
    for (int i = 0; i < 24 && !taken.empty(); ++i) taken.pop_back();
  }
  if (!WriteAll(handle_out, handle, sizeof(handle))) _exit(5);
  ListenerReport report;
  const Clock::time_point give_up = Clock::now() + 20s;
  while (report.accepted_peer == 0 && Clock::now() < give_up) {
    void* comm = nullptr;
    abi::DeviceHandleV7* dev = nullptr;
    if (net->accept(listen_comm, &comm, &dev) != abi::kSuccess) _exit(6);
    if (comm != nullptr) {
      report.accepted_peer = 1;
      net->closeRecv(comm);
    }
  }
  net->closeListen(listen_comm);
  net->finalize(ctx);
  for (const std::string& line : CapturedLog::Warnings()) {
    ++report.warnings;
    if (Contains(line, "unidentified connections in the last")) ++report.summaries;
    if (Contains(line, "Too many open files")) ++report.out_of_descriptors;
  }
  _exit(WriteAll(report_out, &report, sizeof(report)) ? 0 : 7);
}

struct FloodReport {
  int connected = 0;
  int closed_by_listener = 0;
};

// The strangers: idle connections from a process whose own soft limit is raised (within its
// hard limit) to hold them. Reports once the listener closed `closed_target` of them (it holds
// at most its cap), then keeps the rest open until `hold_in` closes.
[[noreturn]] void IdleFloodChild(const SocketAddress& target, int closed_target, int report_out,
                                 int hold_in) {
  rlimit limit{};
  const rlim_t needed = kIdleConnections + 64;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) _exit(kSkipExit);
  if (limit.rlim_cur < needed) {
    if (limit.rlim_max < needed) _exit(kSkipExit);
    limit.rlim_cur = needed;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) _exit(kSkipExit);
  }
  std::vector<UniqueFd> fds;
  std::vector<pollfd> waits;
  for (int i = 0; i < kIdleConnections; ++i) {
    UniqueFd fd(socket(target.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid() || connect(fd.get(), target.get(), target.length()) != 0) continue;
    waits.push_back({fd.get(), POLLIN | POLLRDHUP, 0});
    fds.push_back(std::move(fd));
  }
  FloodReport report;
  report.connected = static_cast<int>(fds.size());
  // The listener sees them after TCP_DEFER_ACCEPT (about 1 s), then evicts what it cannot hold.
  const Clock::time_point give_up = Clock::now() + 10s;
  while (report.closed_by_listener < closed_target && Clock::now() < give_up) {
    if (poll(waits.data(), waits.size(), 50) <= 0) continue;
    for (pollfd& wait : waits) {
      if (wait.fd >= 0 && wait.revents != 0) {
        ++report.closed_by_listener;
        wait.fd = -1;
      }
    }
  }
  if (!WriteAll(report_out, &report, sizeof(report))) _exit(2);
  char byte;
  while (read(hold_in, &byte, 1) != 0 && errno == EINTR) {
  }
  _exit(0);
}

// 1100 idle connections on a listener whose process has RLIMIT_NOFILE=1024; then a real peer.
void IdleConnectionsOnALimitedListener(bool leave_few_descriptors) {
  int handle_pipe[2], listener_report[2];
  ASSERT_EQ(pipe2(handle_pipe, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(listener_report, O_CLOEXEC), 0);
  const pid_t listener_pid = fork();
  ASSERT_GE(listener_pid, 0);
  if (listener_pid == 0) ListenerChild(handle_pipe[1], listener_report[1], leave_few_descriptors);
  Child listener(listener_pid);
  UniqueFd handle_in(handle_pipe[0]), report_in(listener_report[0]);
  close(handle_pipe[1]);
  close(listener_report[1]);
  uint8_t handle[abi::kNetHandleMaxSize] = {};
  if (!ReadAll(handle_in.get(), handle, sizeof(handle), 10s)) {
    const int status = listener.Wait(5s);
    if (status == kSkipExit) GTEST_SKIP() << "the hard RLIMIT_NOFILE is below 1024";
    FAIL() << "the listener child sent no handle (exit status " << status << ")";
  }
  Result<wire::ListenHandle> decoded = wire::ListenHandle::Decode(handle);
  ASSERT_TRUE(decoded.ok());

  int flood_report[2], hold[2];
  ASSERT_EQ(pipe2(flood_report, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(hold, O_CLOEXEC), 0);
  const size_t cap = Admission::MaxUnidentifiedFor(kListenerFdLimit);
  const pid_t flooder_pid = fork();
  ASSERT_GE(flooder_pid, 0);
  if (flooder_pid == 0) {
    close(hold[1]);
    IdleFloodChild(decoded->address, kIdleConnections - static_cast<int>(cap), flood_report[1],
                   hold[0]);
  }
  Child flooder(flooder_pid);
  UniqueFd flood_in(flood_report[0]), hold_out(hold[1]);
  close(flood_report[1]);
  close(hold[0]);
  FloodReport flood;
  if (!ReadAll(flood_in.get(), &flood, sizeof(flood), 30s)) {
    hold_out.reset();
    const int status = flooder.Wait(5s);
    listener.Kill();  // it would wait 20 s for a peer that will not come
    if (status == kSkipExit) GTEST_SKIP() << "the hard RLIMIT_NOFILE cannot hold 1100 sockets";
    FAIL() << "the flooding child did not report (exit status " << status << ")";
  }
  EXPECT_EQ(flood.connected, kIdleConnections);
  EXPECT_GE(flood.closed_by_listener, kIdleConnections - static_cast<int>(cap))
      << "the listener holds more than " << cap << " unidentified sockets";

  // The real peer, from this process, while the idle connections still sit there.
  testing::LoadedPlugin plugin;
  ASSERT_TRUE(plugin.Open(DEVMEM_PLUGIN_PATH)) << plugin.error();
  const abi::NetV11* net = plugin.v11();
  void* ctx = nullptr;
  ASSERT_EQ(net->init(&ctx, 1, nullptr, testing::StderrLogger, nullptr), abi::kSuccess);
  void* send_comm = nullptr;
  abi::DeviceHandleV7* dev = nullptr;
  const Clock::time_point start = Clock::now();
  abi::Result result = abi::kSuccess;
  while (result == abi::kSuccess && send_comm == nullptr && Clock::now() - start < 10s) {
    result = net->connect(ctx, 0, handle, &send_comm, &dev);
  }
  const Clock::duration took = Clock::now() - start;
  EXPECT_EQ(result, abi::kSuccess);
  ASSERT_NE(send_comm, nullptr);
  EXPECT_LT(took, 1s) << "the real peer needed " << Millis(took) << " ms";
  EXPECT_EQ(net->closeSend(send_comm), abi::kSuccess);
  EXPECT_EQ(net->finalize(ctx), abi::kSuccess);

  ListenerReport report;
  ASSERT_TRUE(ReadAll(report_in.get(), &report, sizeof(report), 25s)) << "no listener report";
  hold_out.reset();
  EXPECT_EQ(listener.Wait(10s), 0);
  EXPECT_EQ(flooder.Wait(10s), 0);
  printf("real peer: %.1f ms; listener closed %d of %d idle connections, wrote %d WARN lines\n",
         Millis(took), flood.closed_by_listener, flood.connected, report.warnings);
  EXPECT_EQ(report.accepted_peer, 1);
  EXPECT_LE(report.warnings, 6) << "5 detailed lines and one summary at most";
  EXPECT_EQ(report.summaries, 1);
  if (leave_few_descriptors) {
    EXPECT_GE(report.out_of_descriptors, 1) << "accept never ran out of descriptors";
  }
}

TEST(ListenerFdLimitTest, PeerConnectsWithinOneSecondPast1100IdleConnectionsAtNofile1024) {
  IdleConnectionsOnALimitedListener(/*leave_few_descriptors=*/false);
}

TEST(ListenerFdLimitTest, AcceptOutOfDescriptorsShedsIdleConnectionsInsteadOfSpinning) {
  IdleConnectionsOnALimitedListener(/*leave_few_descriptors=*/true);
}

}  // namespace
}  // namespace devmem
