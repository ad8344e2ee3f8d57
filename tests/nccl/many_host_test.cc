// Eight hosts of one rank each, in network namespaces on one bridge (many_host_cluster.h). Each
// rank is its own process (many_host_rank.cc) that loads the plugin with dlopen and opens a
// send and a receive comm to every other rank through the v11 ABI, as NCCL's proxy would;
// some ranks run emulated devmem RX, some emulated devmem TX, one both, and some move large
// messages on worker threads. The ranks report in text lines (many_host_protocol.h); every
// assertion is made here, naming rank and peer.
//
// AllToAll: every comm carries 9 byte-checked messages of 4 KiB, 256 KiB and 4 MiB.
// Vanishing host: mid-stream, one host's switch port goes down and its rank is SIGKILLed (its
// peers see neither FIN nor RST, as when a machine loses power): with
// NCCL_DEVMEM_TCP_USER_TIMEOUT_MS every comm touching it must fail, with a WARN, within the
// timeout plus a margin, while the comms between survivors keep going and finish byte-exact.
// In both, every rank's fd and thread counts return to their baseline once its comms are
// closed (the baseline is taken after a warm-up comm pair: threads the plugin keeps for the
// life of the process, as NCCL keeps its own, count in it).
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/nccl/many_host_cluster.h"
#include "tests/nccl/many_host_protocol.h"

extern char** environ;

namespace devmem::testing::many_host {
namespace {

constexpr int kHosts = 8;
constexpr int kVictim = 3;
constexpr int64_t kUserTimeoutMs = 3000;
// Keepalive probes run once a second under a 3 s user timeout (plugin/transport/socket_setup.cc
// SetLiveness), and a 2-core machine runs 8 ranks: a comm must have failed this long after the
// kill at the latest.
constexpr int64_t kDetectionMarginMs = 3000;
constexpr uint64_t kAllToAllBytesPerComm =
    kAllToAllMessages / kSizes * (kAllToAllSizes[0] + kAllToAllSizes[1] + kAllToAllSizes[2]);

// What runs where: plain TCP, emulated devmem RX, emulated devmem TX (MSG_ZEROCOPY), or both;
// `workers`: messages above 64 KiB moved by two worker threads (the path of hosts with 8 CPUs
// or more) instead of by the thread calling isend/irecv/test (the default on fewer).
struct HostMode {
  bool rx, tx, workers;
};
constexpr HostMode kModes[kHosts] = {
    {false, false, false}, {true, false, false}, {false, true, true},  {true, true, false},
    {true, false, false},  {false, true, false}, {false, false, true}, {true, false, true}};

std::string ModeName(int rank) {
  const HostMode m = kModes[rank];
  return std::string(m.rx && m.tx ? "emulated RX+TX"
                     : m.rx       ? "emulated RX"
                     : m.tx       ? "emulated TX"
                                  : "plain") +
         (m.workers ? ", workers" : "");
}

struct CommOutcome {
  std::string state;  // ok, failed or hung; empty: never reported
  std::string call;   // the ABI call that failed, or that a hang waited on
  int result = 0;     // the ncclResult_t it returned
  int64_t at_ms = 0;  // when it failed
  int64_t waited_ms = 0;
  uint64_t messages = 0, bytes = 0, window_messages = 0;
  std::string text;  // the plugin's WARN for a failure
};

// Everything one rank said, parsed.
struct RankRecord {
  int baseline_fds = -1, baseline_threads = -1, after_fds = -1, after_threads = -1;
  std::map<int, std::string> handles;  // peer -> the handle that peer connects to
  int64_t connect_ms = -1;
  bool streaming = false, done = false, eof = false;
  std::map<std::pair<std::string, int>, CommOutcome> comms;  // (send|recv, peer)
  std::vector<std::string> corrupt, warnings, errors, lines;

  void Parse(const std::string& line) {
    const std::vector<std::string> w = SplitWords(line);
    if (w.empty()) return;
    if (w[0] != "warn") lines.push_back(line);
    if (w[0] == "baseline" && w.size() == 3) {
      baseline_fds = std::stoi(w[1]);
      baseline_threads = std::stoi(w[2]);
    } else if (w[0] == "after" && w.size() == 3) {
      after_fds = std::stoi(w[1]);
      after_threads = std::stoi(w[2]);
    } else if (w[0] == "handle" && w.size() == 3) {
      handles[std::stoi(w[1])] = w[2];
    } else if (w[0] == "connected" && w.size() == 2) {
      connect_ms = std::stoll(w[1]);
    } else if (w[0] == "streaming") {
      streaming = true;
    } else if (w[0] == "done") {
      done = true;
    } else if (w[0] == "comm" && w.size() >= 7) {
      CommOutcome& c = comms[{w[1], std::stoi(w[2])}];
      c.state = w[3];
      if (c.state == "ok" && w.size() == 7) {
        c.messages = std::stoull(w[4]);
        c.bytes = std::stoull(w[5]);
        c.window_messages = std::stoull(w[6]);
      } else if (c.state == "failed" && w.size() >= 8) {
        c.call = w[4];
        c.result = std::stoi(w[5]);
        c.at_ms = std::stoll(w[6]);
        c.messages = std::stoull(w[7]);
        c.text = TextFrom(line, 8);
      } else if (c.state == "hung") {
        c.call = w[4];
        c.waited_ms = std::stoll(w[5]);
        c.messages = std::stoull(w[6]);
      }
    } else if (w[0] == "corrupt") {
      corrupt.push_back(line);
    } else if (w[0] == "warn") {
      warnings.push_back(TextFrom(line, 1));
    } else if (w[0] == "error") {
      errors.push_back(TextFrom(line, 1));
    }
  }
  // The rank's last few lines, for a failure message.
  std::string Tail() const {
    std::string text;
    for (size_t i = lines.size() > 6 ? lines.size() - 6 : 0; i < lines.size(); ++i) {
      text += "\n    " + lines[i];
    }
    return text.empty() ? " (nothing)" : text;
  }
};

// The eight ranks of one scenario: started, fed their peers' handles, read until told.
class ManyHostRun {
 public:
  ManyHostRun(ManyHostNetwork* network, std::string scenario)
      : network_(network), scenario_(std::move(scenario)) {}

  bool Start(std::string* error) {
    for (int r = 0; r < kHosts; ++r) {
      std::vector<std::string> argv = {DEVMEM_MANY_HOST_RANK_PATH,
                                       "--rank",
                                       std::to_string(r),
                                       "--ranks",
                                       std::to_string(kHosts),
                                       "--plugin",
                                       DEVMEM_PLUGIN_PATH,
                                       "--scenario",
                                       scenario_};
      // The test's environment without NCCL settings of its own, then this host's.
      std::vector<std::string> env;
      for (char** e = environ; *e != nullptr; ++e) {
        if (strncmp(*e, "NCCL_", 5) != 0) env.emplace_back(*e);
      }
      env.push_back(std::string("NCCL_SOCKET_IFNAME=") + ManyHostNetwork::kInterface);
      if (kModes[r].rx) {
        env.push_back("NCCL_DEVMEM_EMULATE=1");
        env.push_back("NCCL_DEVMEM_RX_REGION_BYTES=16M");  // 7 receive comms per rank
      }
      if (kModes[r].tx) env.push_back("NCCL_DEVMEM_EMULATE_TX=1");
      if (kModes[r].workers) {
        env.push_back("NCCL_DEVMEM_NTHREADS=2");
        env.push_back("NCCL_DEVMEM_PROXY_BYTES=64K");
      }
      if (scenario_ == "kill") {
        argv.insert(argv.end(), {"--victim", std::to_string(kVictim), "--user-timeout-ms",
                                 std::to_string(kUserTimeoutMs)});
        env.push_back("NCCL_DEVMEM_TCP_USER_TIMEOUT_MS=" + std::to_string(kUserTimeoutMs));
      }
      if (!ranks_[r].Start(network_->host_netns(r), argv, env, error)) return false;
    }
    return true;
  }

  // Reads every rank's lines until `ready` holds for each rank in `who`; false at `deadline_ms`.
  bool PumpUntil(int64_t deadline_ms, const std::vector<int>& who,
                 const std::function<bool(const RankRecord&)>& ready) {
    for (;;) {
      bool all = true;
      for (int r : who) all = all && ready(records_[r]);
      if (all) return true;
      const int64_t left = deadline_ms - NowMs();
      if (left <= 0) return false;
      std::vector<pollfd> fds;
      std::vector<int> owners;
      for (int r = 0; r < kHosts; ++r) {
        if (ranks_[r].eof()) continue;
        fds.push_back({ranks_[r].fd(), POLLIN, 0});
        owners.push_back(r);
      }
      if (fds.empty()) return false;
      poll(fds.data(), fds.size(), static_cast<int>(std::min<int64_t>(left, 100)));
      for (size_t i = 0; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        const int r = owners[i];
        std::vector<std::string> lines;
        ranks_[r].Read(&lines);
        for (const std::string& line : lines) records_[r].Parse(line);
        records_[r].eof = ranks_[r].eof();
      }
    }
  }

  // Each rank gets, for every peer, the handle that peer opened for it.
  void SendHandles() {
    for (int r = 0; r < kHosts; ++r) {
      for (int p = 0; p < kHosts; ++p) {
        if (p != r) ranks_[r].Send("peer " + std::to_string(p) + " " + records_[p].handles[r]);
      }
    }
  }

  // Which of `who` are not `ready`, each with its last lines.
  std::string NotReady(const std::vector<int>& who,
                       const std::function<bool(const RankRecord&)>& ready) const {
    std::string text;
    for (int r : who) {
      if (!ready(records_[r])) text += "\n  rank " + std::to_string(r) + ":" + records_[r].Tail();
    }
    return text;
  }

  RankProcess& rank(int r) { return ranks_[r]; }
  const RankRecord& record(int r) const { return records_[r]; }

 private:
  ManyHostNetwork* network_;
  std::string scenario_;
  RankProcess ranks_[kHosts];
  RankRecord records_[kHosts];
};

bool HasAllHandles(const RankRecord& r) { return r.handles.size() == kHosts - 1 || r.eof; }
bool Finished(const RankRecord& r) { return r.done || r.eof; }

std::vector<int> Ranks(int except = -1) {
  std::vector<int> ranks;
  for (int r = 0; r < kHosts; ++r) {
    if (r != except) ranks.push_back(r);
  }
  return ranks;
}

class ManyHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to create network namespaces";
    if (RunCommand("ip -V") != 0) GTEST_SKIP() << "iproute2 (ip) is not installed";
    network_ = std::make_unique<ManyHostNetwork>(kHosts);
    ASSERT_TRUE(network_->error().empty()) << network_->error();
  }

  // Starts the ranks, exchanges the listen handles (every rank listens once per peer) and,
  // once every rank has all its comms, starts the traffic.
  void StartAndConnect(ManyHostRun* run) {
    std::string error;
    ASSERT_TRUE(run->Start(&error)) << error;
    const std::vector<int> all = Ranks();
    ASSERT_TRUE(run->PumpUntil(NowMs() + 40000, all, HasAllHandles))
        << "ranks without their listen handles after 40 s:" << run->NotReady(all, HasAllHandles);
    for (int r : all) {
      if (run->record(r).handles.size() == kHosts - 1u) continue;
      FAIL() << "rank " << r << " exited (status " << run->rank(r).WaitExit(NowMs() + 5000)
             << "; 125: setns, 127: exec) before listening:" << run->record(r).Tail();
    }
    run->SendHandles();
    auto connected = [](const RankRecord& r) { return r.connect_ms >= 0 || r.eof; };
    ASSERT_TRUE(run->PumpUntil(NowMs() + 40000, all, connected))
        << "ranks without all their comms after 40 s:" << run->NotReady(all, connected);
    for (int r : all) {
      ASSERT_GE(run->record(r).connect_ms, 0) << "rank " << r << run->record(r).Tail();
      run->rank(r).Send("go");
    }
  }

  // A rank that ran to the end: exit 0, no error, nothing corrupt, fds and threads back at
  // the baseline.
  void ExpectCleanEnd(ManyHostRun* run, int r) {
    const RankRecord& rec = run->record(r);
    EXPECT_EQ(run->rank(r).WaitExit(NowMs() + 10000), 0)
        << "rank " << r << " did not exit 0 within 10 s of its last line:" << rec.Tail();
    EXPECT_TRUE(rec.done) << "rank " << r << " never finished:" << rec.Tail();
    for (const std::string& e : rec.errors) ADD_FAILURE() << "rank " << r << ": " << e;
    for (const std::string& c : rec.corrupt) ADD_FAILURE() << "rank " << r << ": " << c;
    EXPECT_GT(rec.baseline_fds, 0) << "rank " << r;
    EXPECT_EQ(rec.after_fds, rec.baseline_fds)
        << "rank " << r << " (" << ModeName(r) << "): open fds after closing every comm";
    EXPECT_EQ(rec.after_threads, rec.baseline_threads)
        << "rank " << r << " (" << ModeName(r) << "): threads after closing every comm";
  }

  // Comm (dir, peer) of rank r finished: `messages` messages (any when 0) and `bytes` (any
  // when 0).
  static void ExpectCommOk(const RankRecord& rec, int r, const std::string& dir, int peer,
                           uint64_t messages, uint64_t bytes) {
    auto it = rec.comms.find({dir, peer});
    if (it == rec.comms.end()) {
      ADD_FAILURE() << "rank " << r << ": no outcome for its " << dir << " comm with rank " << peer
                    << rec.Tail();
      return;
    }
    const CommOutcome& c = it->second;
    EXPECT_EQ(c.state, "ok") << "rank " << r << " (" << ModeName(r) << ") " << dir
                             << " comm with rank " << peer << " (" << ModeName(peer)
                             << "): " << c.call << " after " << c.messages << " messages"
                             << (c.state == "hung" ? ", hung " + std::to_string(c.waited_ms) +
                                                         " ms since its last progress"
                                                   : ": " + c.text);
    if (messages != 0) {
      EXPECT_EQ(c.messages, messages) << "rank " << r << " " << dir << " " << peer;
    }
    if (bytes != 0) {
      EXPECT_EQ(c.bytes, bytes) << "rank " << r << " " << dir << " " << peer;
    }
  }

  std::unique_ptr<ManyHostNetwork> network_;
};

TEST_F(ManyHostTest, EightHostsAllToAllIsByteExactWithEmulatedDevmemRxAndTx) {
  const int64_t start = NowMs();
  ManyHostRun run(network_.get(), "alltoall");
  StartAndConnect(&run);
  if (HasFatalFailure()) return;
  const std::vector<int> all = Ranks();
  ASSERT_TRUE(run.PumpUntil(NowMs() + 90000, all, Finished))
      << "ranks still running 90 s after the handles went out:" << run.NotReady(all, Finished);
  for (int r : all) {
    SCOPED_TRACE("rank " + std::to_string(r) + " (" + ModeName(r) + ")");
    const RankRecord& rec = run.record(r);
    ExpectCleanEnd(&run, r);
    for (int p : Ranks(r)) {
      ExpectCommOk(rec, r, "send", p, kAllToAllMessages, kAllToAllBytesPerComm);
      ExpectCommOk(rec, r, "recv", p, kAllToAllMessages, kAllToAllBytesPerComm);
    }
    for (const std::string& w : rec.warnings) ADD_FAILURE() << "rank " << r << " WARN: " << w;
  }
  std::cout << "[ many-host ] all-to-all of " << kHosts << " hosts: comms up in";
  for (int r : all) std::cout << " " << run.record(r).connect_ms;
  std::cout << " ms (rank 0..7), whole run " << NowMs() - start << " ms\n";
}

TEST_F(ManyHostTest, AVanishedHostFailsEveryCommTouchingItWithinTheUserTimeoutAndNothingElse) {
  const int64_t start = NowMs();
  ManyHostRun run(network_.get(), "kill");
  StartAndConnect(&run);
  if (HasFatalFailure()) return;
  const std::vector<int> all = Ranks();
  auto streaming = [](const RankRecord& r) { return r.streaming || r.eof; };
  ASSERT_TRUE(run.PumpUntil(NowMs() + 60000, all, streaming))
      << "ranks not streaming on every comm after 60 s:" << run.NotReady(all, streaming);
  for (int r : all) ASSERT_TRUE(run.record(r).streaming) << "rank " << r << run.record(r).Tail();

  // The victim vanishes: link first, so that not even its kernel's FIN or RST gets out.
  std::string output;
  ASSERT_TRUE(network_->CutLink(kVictim, &output)) << output;
  const int64_t killed_at = NowMs();
  run.rank(kVictim).Kill();
  const std::vector<int> survivors = Ranks(kVictim);
  for (int r : survivors) run.rank(r).Send("killed");

  ASSERT_TRUE(run.PumpUntil(killed_at + kUserTimeoutMs + 45000, survivors, Finished))
      << "survivors still running " << kUserTimeoutMs + 45000
      << " ms after the kill:" << run.NotReady(survivors, Finished);
  const std::string victim_address = ManyHostNetwork::Address(kVictim);
  int64_t slowest = 0;
  for (int r : survivors) {
    SCOPED_TRACE("rank " + std::to_string(r) + " (" + ModeName(r) + ")");
    const RankRecord& rec = run.record(r);
    ExpectCleanEnd(&run, r);
    for (const std::string dir : {"send", "recv"}) {
      auto it = rec.comms.find({dir, kVictim});
      if (it == rec.comms.end()) {
        ADD_FAILURE() << "rank " << r << ": no outcome for its " << dir
                      << " comm with the vanished rank " << kVictim << rec.Tail();
        continue;
      }
      const CommOutcome& c = it->second;
      EXPECT_EQ(c.state, "failed")
          << "rank " << r << " " << dir << " comm with the vanished rank " << kVictim << ": "
          << c.state << " in " << c.call << " after " << c.messages << " messages"
          << (c.state == "hung" ? ", nothing done for " + std::to_string(c.waited_ms) + " ms" : "");
      if (c.state != "failed") continue;
      const int64_t after = c.at_ms - killed_at;
      slowest = std::max(slowest, after);
      EXPECT_LE(after, kUserTimeoutMs + kDetectionMarginMs)
          << "rank " << r << " " << dir << " comm with the vanished rank " << kVictim << " failed "
          << after << " ms after the kill, past the user timeout plus " << kDetectionMarginMs
          << " ms (" << c.call << "): " << c.text;
      EXPECT_FALSE(c.text.empty())
          << "rank " << r << " " << dir << ": " << c.call << " failed without a WARN saying why";
      std::cout << "[ many-host ] rank " << r << " (" << ModeName(r) << ") " << dir
                << " comm with the vanished rank failed " << after
                << " ms after the kill: " << c.call << " returned " << c.result << ", WARN \""
                << c.text << "\"\n";
    }
    for (int p : Ranks(r)) {
      if (p == kVictim) continue;
      ExpectCommOk(rec, r, "send", p, 0, 0);
      ExpectCommOk(rec, r, "recv", p, 0, 0);
      // What one side sent is what the other received, message for message.
      auto sent = run.record(p).comms.find({"send", r});
      auto received = rec.comms.find({"recv", p});
      if (sent != run.record(p).comms.end() && received != rec.comms.end()) {
        EXPECT_EQ(received->second.messages, sent->second.messages)
            << "rank " << r << " received from rank " << p;
        EXPECT_EQ(received->second.bytes, sent->second.bytes)
            << "rank " << r << " received from rank " << p;
      }
    }
    // WARNs: only the failures of the vanished host's comms (their own report, or a line that
    // names the host).
    for (const std::string& w : rec.warnings) {
      bool about_victim = w.find(victim_address) != std::string::npos;
      for (const std::string dir : {"send", "recv"}) {
        auto it = rec.comms.find({dir, kVictim});
        about_victim = about_victim || (it != rec.comms.end() && !it->second.text.empty() &&
                                        w.find(it->second.text) != std::string::npos);
      }
      EXPECT_TRUE(about_victim) << "rank " << r << " WARN not about the vanished host "
                                << victim_address << ": " << w;
    }
    // A peer that vanished stalls no other comm: while the victim's comms were timing out
    // (seconds), every comm between survivors kept completing messages.
    uint64_t window_min = UINT64_MAX, window_sum = 0;
    for (const auto& [key, c] : rec.comms) {
      if (key.second == kVictim) continue;
      EXPECT_GT(c.window_messages, 0u)
          << "rank " << r << " " << key.first << " comm with rank " << key.second
          << " completed nothing while the comms with the vanished rank were failing";
      window_min = std::min(window_min, c.window_messages);
      window_sum += c.window_messages;
    }
    std::cout << "[ many-host ] rank " << r << ": while its comms with the vanished rank were "
              << "failing, its other comms completed " << window_sum << " messages (at least "
              << window_min << " each)\n";
  }
  std::cout << "[ many-host ] kill: slowest failure " << slowest << " ms after the kill, whole run "
            << NowMs() - start << " ms\n";
}

}  // namespace
}  // namespace devmem::testing::many_host
