#include "cri/grpc_status.h"

namespace chrys::cri {

grpc::Status ToGrpcStatus(const base::Error& error) {
  using base::ErrorCode;
  grpc::StatusCode code = grpc::StatusCode::INTERNAL;
  switch (error.code()) {
    case ErrorCode::kInternal: code = grpc::StatusCode::INTERNAL; break;
    case ErrorCode::kInvalidArgument: code = grpc::StatusCode::INVALID_ARGUMENT; break;
    case ErrorCode::kNotFound: code = grpc::StatusCode::NOT_FOUND; break;
    case ErrorCode::kAlreadyExists: code = grpc::StatusCode::ALREADY_EXISTS; break;
    case ErrorCode::kFailedPrecondition: code = grpc::StatusCode::FAILED_PRECONDITION; break;
    case ErrorCode::kUnavailable: code = grpc::StatusCode::UNAVAILABLE; break;
    case ErrorCode::kDeadlineExceeded: code = grpc::StatusCode::DEADLINE_EXCEEDED; break;
    case ErrorCode::kResourceExhausted: code = grpc::StatusCode::RESOURCE_EXHAUSTED; break;
    case ErrorCode::kUnimplemented: code = grpc::StatusCode::UNIMPLEMENTED; break;
    case ErrorCode::kPermissionDenied: code = grpc::StatusCode::PERMISSION_DENIED; break;
    case ErrorCode::kAborted: code = grpc::StatusCode::ABORTED; break;
    case ErrorCode::kCancelled: code = grpc::StatusCode::CANCELLED; break;
  }
  return {code, error.message()};
}

}  // namespace chrys::cri
