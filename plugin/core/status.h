// Errors as values: every internal step returns a Status (or Result<T>) carrying the kind of
// failure and one operator-readable message. Only the ABI edge turns it into ncclResult_t and
// logs it, exactly once.
#pragma once

#include <cstdarg>
#include <optional>
#include <string>
#include <utility>

namespace devmem {

enum class ErrorKind {
  kOk,
  kSystem,           // a syscall or the kernel refused
  kInternal,         // our own invariant broke
  kInvalidArgument,  // the caller passed something we cannot take
  kInvalidUsage,     // the caller used the API out of contract (e.g. truncated message)
  kRemote,           // the peer sent something we cannot accept
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status Ok() { return {}; }
  static Status Error(ErrorKind kind, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
  // Like Error, with ": <strerror(err)>" appended.
  static Status Errno(int err, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
  // Errno on a connection to a peer: a reset, timeout or unreachable peer is the remote's
  // failure (kRemote, NCCL's "remote process exited or there was a network error", as NCCL's
  // socket transport reports it); anything else is kSystem.
  static Status PeerErrno(int err, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

  bool ok() const { return kind_ == ErrorKind::kOk; }
  ErrorKind kind() const { return kind_; }
  const std::string& message() const { return message_; }
  // Prefixes the message with the step that failed ("listen on eth0: ...").
  Status WithContext(const std::string& context) const&;

 private:
  Status(ErrorKind kind, std::string message) : kind_(kind), message_(std::move(message)) {}
  ErrorKind kind_ = ErrorKind::kOk;
  std::string message_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}          // NOLINT(google-explicit-constructor)
  Result(Status status) : status_(std::move(status)) {}  // NOLINT(google-explicit-constructor)
  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

std::string FormatV(const char* fmt, va_list args);
std::string Format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace devmem

#define DEVMEM_RETURN_IF_ERROR(expr)         \
  do {                                       \
    ::devmem::Status status_or_ = (expr);    \
    if (!status_or_.ok()) return status_or_; \
  } while (0)
