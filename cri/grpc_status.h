// Maps our Error values onto gRPC status codes at the CRI boundary.
#pragma once

#include <grpcpp/support/status.h>

#include "base/result.h"

namespace chrys::cri {

grpc::Status ToGrpcStatus(const base::Error& error);
inline grpc::Status ToGrpcStatus(const base::Status& status) {
  return status.ok() ? grpc::Status::OK : ToGrpcStatus(status.error());
}
inline grpc::Status InvalidArgument(const std::string& message) {
  return {grpc::StatusCode::INVALID_ARGUMENT, message};
}
inline grpc::Status NotFound(const std::string& message) { return {grpc::StatusCode::NOT_FOUND, message}; }

}  // namespace chrys::cri
