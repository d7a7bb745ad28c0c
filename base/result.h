// Errors as values: Error carries a category and a message a user can act on; Result<T> is a value or one.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace chrys::base {

// Categories line up with gRPC status codes so the CRI front can map them one to one.
enum class ErrorCode {
  kInternal,
  kInvalidArgument,
  kNotFound,
  kAlreadyExists,
  kFailedPrecondition,
  kUnavailable,
  kDeadlineExceeded,
  kResourceExhausted,
  kUnimplemented,
  kPermissionDenied,
  kAborted,
  kCancelled,
};

const char* ErrorCodeName(ErrorCode code);

class Error {
 public:
  Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // Returns the same error with "context: " in front, so callers add where it happened.
  Error Wrap(const std::string& context) const { return Error(code_, context + ": " + message_); }

 private:
  ErrorCode code_;
  std::string message_;
};

inline Error MakeError(ErrorCode code, std::string message) { return Error(code, std::move(message)); }
inline Error InvalidArgument(std::string message) { return Error(ErrorCode::kInvalidArgument, std::move(message)); }
inline Error NotFound(std::string message) { return Error(ErrorCode::kNotFound, std::move(message)); }
inline Error Internal(std::string message) { return Error(ErrorCode::kInternal, std::move(message)); }
inline Error FailedPrecondition(std::string message) {
  return Error(ErrorCode::kFailedPrecondition, std::move(message));
}
inline Error Unavailable(std::string message) { return Error(ErrorCode::kUnavailable, std::move(message)); }
inline Error DeadlineExceeded(std::string message) {
  return Error(ErrorCode::kDeadlineExceeded, std::move(message));
}

// "what: strerror(err)" for a failed system call; ENOENT maps to kNotFound, EACCES/EPERM to kPermissionDenied.
Error SystemError(const std::string& what, int err = errno);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : data_(std::move(value)) {}  // NOLINT(google-explicit-constructor): natural `return value;`
  Result(Error error) : data_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return std::holds_alternative<T>(data_); }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<T>(data_); }
  const T& value() const& { return std::get<T>(data_); }
  T&& value() && { return std::get<T>(std::move(data_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { return std::get<Error>(data_); }

 private:
  std::variant<T, Error> data_;
};

// Success, or an Error.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)

  static Status Ok() { return {}; }
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_{ErrorCode::kInternal, ""};
  bool ok_ = true;
};

}  // namespace chrys::base

// Propagates an error out of the current function, optionally wrapped with context.
#define CHRYS_RETURN_IF_ERROR(expr)          \
  do {                                       \
    auto chrys_status_ = (expr);             \
    if (!chrys_status_.ok()) {               \
      return chrys_status_.error();          \
    }                                        \
  } while (false)

#define CHRYS_CONCAT_INNER(a, b) a##b
#define CHRYS_CONCAT(a, b) CHRYS_CONCAT_INNER(a, b)
#define CHRYS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) {                                  \
    return tmp.error();                             \
  }                                                 \
  lhs = std::move(tmp).value()
// `CHRYS_ASSIGN_OR_RETURN(auto x, Compute());` binds the value or returns the error.
#define CHRYS_ASSIGN_OR_RETURN(lhs, expr) CHRYS_ASSIGN_OR_RETURN_IMPL(CHRYS_CONCAT(chrys_result_, __LINE__), lhs, expr)
