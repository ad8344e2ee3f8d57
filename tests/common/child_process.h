// Temporary directories and child processes for tests that need a second process: a forked
// child (Child), a one-byte pipe between them (Pipe), and an exec'd helper whose stdout lines the
// test reads (Helper). Children still running when a test ends are SIGKILLed and reaped.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "plugin/core/unique_fd.h"

namespace devmem::testing {

class TempDir {
 public:
  TempDir() {
    char name[] = "/tmp/devmem-steer-XXXXXX";
    if (mkdtemp(name) != nullptr) path_ = name;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// One byte at a time between parent and child, with a deadline on every read.
class Pipe {
 public:
  Pipe() {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) == 0) {
      read_.reset(fds[0]);
      write_.reset(fds[1]);
    }
  }
  bool valid() const { return read_.valid() && write_.valid(); }
  bool Send(char c) { return write(write_.get(), &c, 1) == 1; }
  // The next byte, or 0 when none came within `timeout` (or the other end closed).
  char Receive(std::chrono::milliseconds timeout) {
    pollfd pfd{read_.get(), POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(timeout.count())) != 1) return 0;
    char c = 0;
    return read(read_.get(), &c, 1) == 1 ? c : 0;
  }

 private:
  UniqueFd read_;
  UniqueFd write_;
};

// A child process that is killed and reaped if the test ends before it exits.
class Child {
 public:
  explicit Child(pid_t pid = -1) : pid_(pid) {}
  ~Child() { Kill(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  pid_t pid() const { return pid_; }
  // SIGKILL and reap: afterwards the kernel has closed every descriptor the child held.
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  // The child's exit code, -1 if it did not exit normally.
  int Wait() {
    int status = 0;
    const pid_t waited = waitpid(pid_, &status, 0);
    pid_ = -1;
    return waited > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 protected:
  pid_t pid_;
};

// An exec'd program (a fresh process image: nothing of the test's statics) whose stdout is read
// line by line.
class Helper final : public Child {
 public:
  explicit Helper(const std::vector<std::string>& argv) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return;
    UniqueFd read_end(fds[0]);
    UniqueFd write_end(fds[1]);
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
      dup2(write_end.get(), STDOUT_FILENO);
      execv(args[0], args.data());
      _exit(127);
    }
    pid_ = pid;
    out_ = std::move(read_end);
  }
  // The next line the helper printed (without '\n'); "" when it exited or said nothing for 30 s
  // (a guard against a hung helper, not a timing assertion).
  std::string ReadLine() {
    std::string line;
    while (true) {
      pollfd pfd{out_.get(), POLLIN, 0};
      if (poll(&pfd, 1, 30000) != 1) return "";
      char c = 0;
      if (read(out_.get(), &c, 1) != 1) return "";
      if (c == '\n') return line;
      line += c;
    }
  }

 private:
  UniqueFd out_;
};

}  // namespace devmem::testing
