#include "base/result.h"

namespace chrys::base {

const char* ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInternal: return "internal";
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kNotFound: return "not found";
    case ErrorCode::kAlreadyExists: return "already exists";
    case ErrorCode::kFailedPrecondition: return "failed precondition";
    case ErrorCode::kUnavailable: return "unavailable";
    case ErrorCode::kDeadlineExceeded: return "deadline exceeded";
    case ErrorCode::kResourceExhausted: return "resource exhausted";
    case ErrorCode::kUnimplemented: return "unimplemented";
    case ErrorCode::kPermissionDenied: return "permission denied";
    case ErrorCode::kAborted: return "aborted";
    case ErrorCode::kCancelled: return "cancelled";
  }
  return "unknown";
}

Error SystemError(const std::string& what, int err) {
  ErrorCode code = ErrorCode::kInternal;
  if (err == ENOENT) {
    code = ErrorCode::kNotFound;
  } else if (err == EACCES || err == EPERM) {
    code = ErrorCode::kPermissionDenied;
  } else if (err == EEXIST) {
    code = ErrorCode::kAlreadyExists;
  } else if (err == EINVAL) {
    code = ErrorCode::kInvalidArgument;
  }
  return Error(code, what + ": " + std::strerror(err));
}

}  // namespace chrys::base
