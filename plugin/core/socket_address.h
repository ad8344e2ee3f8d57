// An IPv4/IPv6 socket address and its fixed 20-byte encoding inside the listen handle.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "plugin/core/status.h"

namespace devmem {

class SocketAddress {
 public:
  SocketAddress() = default;
  static Result<SocketAddress> FromSockaddr(const sockaddr* addr, socklen_t len);
  // Parses "1.2.3.4" or "::1" (no port).
  static Result<SocketAddress> FromString(const std::string& text, uint16_t port);

  int family() const { return storage_.ss_family; }
  uint16_t port() const;
  void set_port(uint16_t port);
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage_); }
  socklen_t length() const { return length_; }
  bool is_link_local() const;
  std::string ToString() const;  // "1.2.3.4:5" or "[::1]:5"

  // Wire form: family (u16), port (u16), 16 address bytes; all little-endian integers.
  static constexpr size_t kEncodedSize = 20;
  void Encode(uint8_t* out) const;
  static Result<SocketAddress> Decode(const uint8_t* in);

 private:
  sockaddr_storage storage_{};
  socklen_t length_ = 0;
};

}  // namespace devmem
