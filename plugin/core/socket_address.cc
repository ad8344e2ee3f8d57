#include "plugin/core/socket_address.h"

#include <arpa/inet.h>

#include <cstring>

namespace devmem {

Result<SocketAddress> SocketAddress::FromSockaddr(const sockaddr* addr, socklen_t len) {
  SocketAddress out;
  if (addr->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
    out.length_ = sizeof(sockaddr_in);
  } else if (addr->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
    out.length_ = sizeof(sockaddr_in6);
  } else {
    return Status::Error(ErrorKind::kInvalidArgument, "unsupported address family %d",
                         addr->sa_family);
  }
  memcpy(&out.storage_, addr, out.length_);
  return out;
}

Result<SocketAddress> SocketAddress::FromString(const std::string& text, uint16_t port) {
  SocketAddress out;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out.storage_);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.storage_);
  if (inet_pton(AF_INET, text.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    out.length_ = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, text.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    out.length_ = sizeof(sockaddr_in6);
  } else {
    return Status::Error(ErrorKind::kInvalidArgument, "\"%s\" is not an IP address", text.c_str());
  }
  out.set_port(port);
  return out;
}

uint16_t SocketAddress::port() const {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  if (family() == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  }
  return 0;
}

void SocketAddress::set_port(uint16_t port) {
  if (family() == AF_INET) reinterpret_cast<sockaddr_in*>(&storage_)->sin_port = htons(port);
  if (family() == AF_INET6) reinterpret_cast<sockaddr_in6*>(&storage_)->sin6_port = htons(port);
}

bool SocketAddress::is_link_local() const {
  if (family() != AF_INET6) return false;
  return IN6_IS_ADDR_LINKLOCAL(&reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr);
}

std::string SocketAddress::ToString() const {
  char text[INET6_ADDRSTRLEN] = "?";
  if (family() == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, text,
              sizeof(text));
    return Format("%s:%u", text, port());
  }
  if (family() == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, text,
              sizeof(text));
    return Format("[%s]:%u", text, port());
  }
  return "<no address>";
}

void SocketAddress::Encode(uint8_t* out) const {
  memset(out, 0, kEncodedSize);
  const uint16_t fam = static_cast<uint16_t>(family());
  const uint16_t prt = port();
  out[0] = static_cast<uint8_t>(fam);
  out[1] = static_cast<uint8_t>(fam >> 8);
  out[2] = static_cast<uint8_t>(prt);
  out[3] = static_cast<uint8_t>(prt >> 8);
  if (family() == AF_INET) {
    memcpy(out + 4, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, 4);
  } else if (family() == AF_INET6) {
    memcpy(out + 4, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, 16);
  }
}

Result<SocketAddress> SocketAddress::Decode(const uint8_t* in) {
  const int fam = in[0] | (in[1] << 8);
  const uint16_t prt = static_cast<uint16_t>(in[2] | (in[3] << 8));
  SocketAddress out;
  if (fam == AF_INET) {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&out.storage_);
    v4->sin_family = AF_INET;
    memcpy(&v4->sin_addr, in + 4, 4);
    out.length_ = sizeof(sockaddr_in);
  } else if (fam == AF_INET6) {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.storage_);
    v6->sin6_family = AF_INET6;
    memcpy(&v6->sin6_addr, in + 4, 16);
    out.length_ = sizeof(sockaddr_in6);
  } else {
    return Status::Error(ErrorKind::kInvalidArgument, "handle holds unknown address family %d",
                         fam);
  }
  if (prt == 0) return Status::Error(ErrorKind::kInvalidArgument, "handle holds port 0");
  out.set_port(prt);
  return out;
}

}  // namespace devmem
