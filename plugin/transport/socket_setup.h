// Socket options both ends of a connection set (listen_comm.cc, connector.cc), and the nonces
// that identify a listener and a connection.
#pragma once

#include <cstdint>

#include "plugin/core/config.h"
#include "plugin/core/status.h"
#include "plugin/core/unique_fd.h"

namespace devmem {

// A random 64-bit value, never 0 (0 means "none" on the wire).
uint64_t RandomNonZero();
// Small messages leave at once (NCCL's control and small steps cannot wait for Nagle).
void SetNoDelay(int fd);
// NCCL_DEVMEM_SOCKET_BUFFER_BYTES, where the sysctl limits allow it (else autotuning stays).
void SetBuffers(int fd, const Config& config);
// Keepalive and NCCL_DEVMEM_TCP_USER_TIMEOUT_MS: a vanished peer fails the comm.
void SetLiveness(int fd, const Config& config);
// A non-blocking, close-on-exec TCP socket with TCP_NODELAY.
Result<UniqueFd> OpenStreamSocket(int family);

}  // namespace devmem
