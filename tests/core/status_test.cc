// Status::PeerErrno: which errno values of a connection are the peer's failure. NCCL's socket
// transport reports send/recv failures of a connected socket as ncclRemoteError: NCCL
// v2.28.9-1 src/misc/socket.cc:41-48 (socketProgressOpt: EPIPE on send and ECONNRESET on recv
// count as "closed", any other error but EINTR/EAGAIN returns ncclRemoteError) and :73
// (socketProgress: a closed connection is ncclRemoteError); connect's ETIMEDOUT, EHOSTUNREACH
// and ECONNREFUSED end in ncclRemoteError too (:577-584). We keep errors that are this host's
// own (EBADF, ENOMEM, EFAULT, ...) as ncclSystemError.
#include <gtest/gtest.h>

#include <cerrno>

#include "plugin/core/status.h"

namespace devmem {
namespace {

TEST(StatusTest, ResetsTimeoutsAndUnreachablePeersAreRemoteErrors) {
  for (int err : {ECONNRESET, ECONNABORTED, ECONNREFUSED, ETIMEDOUT, EPIPE, EHOSTUNREACH,
                  EHOSTDOWN, ENETUNREACH, ENETDOWN, ENETRESET}) {
    Status status = Status::PeerErrno(err, "recv on a data connection");
    EXPECT_EQ(status.kind(), ErrorKind::kRemote) << status.message();
    EXPECT_NE(status.message().find("recv on a data connection: "), std::string::npos);
    EXPECT_NE(status.message().find("(errno " + std::to_string(err) + ")"), std::string::npos);
  }
}

TEST(StatusTest, LocalFailuresOnAConnectionStaySystemErrors) {
  for (int err : {EBADF, ENOMEM, EFAULT, EINVAL, ENOBUFS}) {
    Status status = Status::PeerErrno(err, "send on the control connection");
    EXPECT_EQ(status.kind(), ErrorKind::kSystem) << status.message();
  }
  EXPECT_EQ(Status::Errno(ECONNRESET, "x").kind(), ErrorKind::kSystem);
}

}  // namespace
}  // namespace devmem
