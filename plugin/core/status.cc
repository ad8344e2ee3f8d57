#include "plugin/core/status.h"

#include <cstdio>
#include <cerrno>
#include <cstring>

namespace devmem {

std::string FormatV(const char* fmt, va_list args) {
  char stack_buffer[512];
  va_list copy;
  va_copy(copy, args);
  int needed = vsnprintf(stack_buffer, sizeof(stack_buffer), fmt, copy);
  va_end(copy);
  if (needed < 0) return fmt;
  if (static_cast<size_t>(needed) < sizeof(stack_buffer)) return std::string(stack_buffer, needed);
  std::string out(static_cast<size_t>(needed) + 1, '\0');
  vsnprintf(out.data(), out.size(), fmt, args);
  out.resize(static_cast<size_t>(needed));
  return out;
}

std::string Format(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::string out = FormatV(fmt, args);
  va_end(args);
  return out;
}

Status Status::Error(ErrorKind kind, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::string message = FormatV(fmt, args);
  va_end(args);
  return Status(kind, std::move(message));
}

namespace {

// "<message>: <strerror> (errno N)" of a printf-style format.
std::string ErrnoMessage(int err, const char* fmt, va_list args) {
  std::string message = FormatV(fmt, args);
  char buffer[128];
  const char* text = strerror_r(err, buffer, sizeof(buffer));
  message += Format(": %s (errno %d)", text, err);
  return message;
}

bool IsPeerErrno(int err) {
  switch (err) {
    case ECONNRESET:
    case ECONNABORTED:
    case ECONNREFUSED:
    case ETIMEDOUT:
    case EPIPE:
    case EHOSTUNREACH:
    case EHOSTDOWN:
    case ENETUNREACH:
    case ENETDOWN:
    case ENETRESET:
      return true;
    default:
      return false;
  }
}

}  // namespace

Status Status::Errno(int err, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::string message = ErrnoMessage(err, fmt, args);
  va_end(args);
  return Status(ErrorKind::kSystem, std::move(message));
}

Status Status::PeerErrno(int err, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::string message = ErrnoMessage(err, fmt, args);
  va_end(args);
  return Status(IsPeerErrno(err) ? ErrorKind::kRemote : ErrorKind::kSystem, std::move(message));
}

Status Status::WithContext(const std::string& context) const& {
  if (ok()) return *this;
  return Status(kind_, context + ": " + message_);
}

}  // namespace devmem
