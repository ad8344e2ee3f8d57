// Descriptors kept out of forked children (plugin/core/forked_child_release.h), against the
// real kernel's rule that a socket lives until its last reference closes: the same rule that
// keeps a devmem binding alive while any process holds its netlink socket
// (net/core/netdev-genl.c netdev_nl_sock_priv_destroy runs when the socket is released).
// A listening TCP socket stands in for the binding socket: whether it still accepts shows
// whether any process still holds it.
#include "plugin/core/forked_child_release.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "plugin/core/unique_fd.h"

namespace devmem {
namespace {

struct Listener {
  UniqueFd fd;
  sockaddr_in address{};
};

Listener ListenOnLoopback() {
  Listener listener;
  listener.fd.reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  listener.address.sin_family = AF_INET;
  listener.address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(listener.fd.get(), reinterpret_cast<sockaddr*>(&listener.address),
                 sizeof(listener.address)),
            0);
  EXPECT_EQ(listen(listener.fd.get(), 4), 0);
  socklen_t length = sizeof(listener.address);
  getsockname(listener.fd.get(), reinterpret_cast<sockaddr*>(&listener.address), &length);
  return listener;
}

// Whether a connect to `address` is accepted by the kernel (someone still holds the listener).
bool Connects(const sockaddr_in& address) {
  UniqueFd client(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  return connect(client.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0;
}

// Forks a child that reports what its copy of `fd` is ('p': a placeholder character device
// with close-on-exec, 's': still the socket, 'x': anything else) and then stays alive until
// told to exit, so the parent can check what the child holds while it lives.
class ForkedChild {
 public:
  explicit ForkedChild(int fd) {
    EXPECT_EQ(pipe2(report_, O_CLOEXEC), 0);
    EXPECT_EQ(pipe2(release_, O_CLOEXEC), 0);
    pid_ = fork();
    if (pid_ == 0) {
      struct stat st {};
      char what = 'x';
      if (fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0)
        what = 'p';
      else if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode))
        what = 's';
      (void)!write(report_[1], &what, 1);
      char done;
      (void)!read(release_[0], &done, 1);
      _exit(0);
    }
  }
  char Report() {
    char what = '?';
    EXPECT_EQ(read(report_[0], &what, 1), 1);
    return what;
  }
  ~ForkedChild() {
    if (pid_ > 0) {
      (void)!write(release_[1], "x", 1);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
    for (int fd : {report_[0], report_[1], release_[0], release_[1]}) close(fd);
  }

 private:
  int report_[2] = {-1, -1};
  int release_[2] = {-1, -1};
  pid_t pid_ = -1;
};

TEST(ForkedChildReleaseTest, AKeptSocketGoesWithTheParentsCloseThoughAChildLives) {
  Listener listener = ListenOnLoopback();
  KeepOutOfForkedChildren(listener.fd.get());
  ForkedChild child(listener.fd.get());
  EXPECT_EQ(child.Report(), 'p');
  EXPECT_TRUE(Connects(listener.address));  // the parent's reference still listens
  StopKeepingOutOfForkedChildren(listener.fd.get());
  listener.fd.reset();
  errno = 0;
  EXPECT_FALSE(Connects(listener.address));  // the last reference went with the parent's close
  EXPECT_EQ(errno, ECONNREFUSED);
}

// The kernel's behaviour the registry exists for: without it a forked child's copy keeps the
// socket (and so a binding) alive after the parent closed its own.
TEST(ForkedChildReleaseTest, AnUnkeptSocketOutlivesTheParentsCloseInAForkedChild) {
  Listener listener = ListenOnLoopback();
  KeepOutOfForkedChildren(listener.fd.get());
  StopKeepingOutOfForkedChildren(listener.fd.get());  // registered and released again
  ForkedChild child(listener.fd.get());
  EXPECT_EQ(child.Report(), 's');
  listener.fd.reset();
  EXPECT_TRUE(Connects(listener.address));
}

}  // namespace
}  // namespace devmem
