// The machinery of many_host_test.cc: hosts in network namespaces on one bridge, and rank
// processes started inside them that talk to the test over a socket pair (their stdin/stdout).
// Nothing here is created outside the namespaces it makes: the veth pairs are born inside them
// and the bridge lives in a namespace of its own, so the root namespace never sees a link.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "tests/common/shell.h"
#include "tests/nccl/many_host_protocol.h"

namespace devmem::testing::many_host {

// `hosts` namespaces, each with one interface kInterface at 198.18.8.(h+1)/24 (RFC 2544
// benchmarking range: these addresses exist only inside these namespaces), plugged into one
// bridge that lives in a switch namespace. The destructor deletes every namespace, and with
// them every link.
class ManyHostNetwork {
 public:
  static constexpr const char* kInterface = "dmh";

  explicit ManyHostNetwork(int hosts) {
    const std::string id = std::to_string(getpid() % 100000);
    switch_ = "dmMS" + id;
    std::vector<std::string> steps = {"ip netns add " + switch_,
                                      "ip -n " + switch_ + " link add br0 type bridge",
                                      "ip -n " + switch_ + " link set br0 up"};
    for (int h = 0; h < hosts; ++h) {
      const std::string ns = "dmMH" + id + "h" + std::to_string(h);
      const std::string port = Port(h);
      hosts_.push_back(ns);
      steps.push_back("ip netns add " + ns);
      steps.push_back("ip link add name " + std::string(kInterface) + " netns " + ns +
                      " type veth peer name " + port + " netns " + switch_);
      steps.push_back("ip -n " + switch_ + " link set " + port + " master br0");
      steps.push_back("ip -n " + switch_ + " link set " + port + " up");
      steps.push_back("ip -n " + ns + " addr add " + Address(h) + "/24 dev " + kInterface);
      steps.push_back("ip -n " + ns + " link set " + kInterface + " up");
      steps.push_back("ip -n " + ns + " link set lo up");
    }
    for (const std::string& step : steps) {
      std::string output;
      if (RunCommand(step, &output) != 0) {
        error_ = step + ": " + output;
        return;
      }
    }
  }
  ~ManyHostNetwork() {
    for (const std::string& ns : hosts_) RunCommand("ip netns del " + ns);
    RunCommand("ip netns del " + switch_);
  }
  ManyHostNetwork(const ManyHostNetwork&) = delete;
  ManyHostNetwork& operator=(const ManyHostNetwork&) = delete;

  const std::string& error() const { return error_; }
  const std::string& host_netns(int h) const { return hosts_[static_cast<size_t>(h)]; }
  // Formatted with snprintf: "literal" + std::to_string() trips GCC 12's -Wrestrict false
  // positive at -O3 (the Release stage builds with warnings as errors).
  static std::string Address(int h) { return Formatted("198.18.8.%d", h + 1); }

  // The host drops off the network: its switch port goes down, so nothing it sends (not even
  // the FIN or RST of its dying sockets) reaches anyone, and nothing reaches it.
  bool CutLink(int h, std::string* output) {
    return RunCommand("ip -n " + switch_ + " link set " + Port(h) + " down", output) == 0;
  }

 private:
  static std::string Port(int h) { return Formatted("p%d", h); }
  static std::string Formatted(const char* format, int value) {
    char text[32];
    snprintf(text, sizeof(text), format, value);
    return text;
  }

  std::string switch_;
  std::vector<std::string> hosts_;
  std::string error_;
};

// A child process that runs `argv` with environment `env` inside network namespace `netns`
// (fork, setns, execve). Its stdin and stdout are one end of a socket pair whose other end the
// test reads lines from and writes lines to. The destructor SIGKILLs and reaps it.
class RankProcess {
 public:
  RankProcess() = default;
  RankProcess(const RankProcess&) = delete;
  RankProcess& operator=(const RankProcess&) = delete;
  ~RankProcess() {
    Kill();
    if (fd_ >= 0) close(fd_);
  }

  bool Start(const std::string& netns, const std::vector<std::string>& argv,
             const std::vector<std::string>& env, std::string* error) {
    const std::string path = "/run/netns/" + netns;
    const int ns_fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns_fd < 0) {
      *error = "open " + path + ": " + strerror(errno);
      return false;
    }
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
      *error = std::string("socketpair: ") + strerror(errno);
      close(ns_fd);
      return false;
    }
    // Everything the child needs is built before fork: it only calls async-signal-safe code.
    std::vector<char*> args, envp;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    for (const std::string& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
      *error = std::string("fork: ") + strerror(errno);
      close(ns_fd);
      close(pair[0]);
      close(pair[1]);
      return false;
    }
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // a test killed by ctest takes its ranks along
      if (getppid() != parent) _exit(126);
      if (setns(ns_fd, CLONE_NEWNET) != 0) _exit(125);
      if (dup2(pair[1], STDIN_FILENO) < 0 || dup2(pair[1], STDOUT_FILENO) < 0) _exit(124);
      execve(args[0], args.data(), envp.data());
      _exit(127);
    }
    close(ns_fd);
    close(pair[1]);
    pid_ = pid;
    fd_ = pair[0];
    return true;
  }

  pid_t pid() const { return pid_; }
  int fd() const { return fd_; }
  bool eof() const { return eof_; }

  bool Send(const std::string& line) {
    const std::string text = line + "\n";
    return send(fd_, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size());
  }

  // Appends the complete lines that arrived to *lines (call when fd() is readable).
  void Read(std::vector<std::string>* lines) {
    char chunk[8192];
    const ssize_t n = recv(fd_, chunk, sizeof(chunk), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      eof_ = true;
      return;
    }
    if (n < 0) return;
    buffer_.append(chunk, static_cast<size_t>(n));
    for (size_t eol; (eol = buffer_.find('\n')) != std::string::npos;) {
      lines->push_back(buffer_.substr(0, eol));
      buffer_.erase(0, eol + 1);
    }
  }

  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, &status_, 0);
    pid_ = -1;
  }

  // The exit code, 128 + signal for a killed process, or -1 while it still runs at `deadline_ms`.
  int WaitExit(int64_t deadline_ms) {
    while (pid_ > 0) {
      const pid_t got = waitpid(pid_, &status_, WNOHANG);
      if (got == pid_) {
        pid_ = -1;
        break;
      }
      if (NowMs() > deadline_ms) return -1;
      usleep(10000);
    }
    if (WIFEXITED(status_)) return WEXITSTATUS(status_);
    return WIFSIGNALED(status_) ? 128 + WTERMSIG(status_) : -1;
  }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  int status_ = 0;
  bool eof_ = false;
  std::string buffer_;
};

}  // namespace devmem::testing::many_host
