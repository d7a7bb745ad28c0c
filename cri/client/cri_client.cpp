#include "cri/client/cri_client.h"

#include <sys/stat.h>

#include <grpcpp/create_channel.h>

namespace chrys::cri {

CriClient::CriClient(std::string socket, std::shared_ptr<grpc::Channel> channel)
    : socket_(std::move(socket)),
      channel_(std::move(channel)),
      runtime_(runtime::v1::RuntimeService::NewStub(channel_)),
      images_(runtime::v1::ImageService::NewStub(channel_)),
      admin_(chrys::admin::v1::Admin::NewStub(channel_)) {}

base::Result<CriClient> CriClient::Connect(const std::string& socket, std::chrono::milliseconds timeout) {
  struct stat st {};
  if (::stat(socket.c_str(), &st) != 0) {
    return base::Unavailable("cannot reach chrysd: no socket at " + socket + " (is chrysd running? --socket PATH)");
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 * 1024 * 1024);
  auto channel = grpc::CreateCustomChannel("unix:" + socket, grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + timeout)) {
    return base::Unavailable("cannot reach chrysd: nothing answers on " + socket + " (is chrysd running?)");
  }
  return CriClient(socket, std::move(channel));
}

std::unique_ptr<grpc::ClientContext> CriClient::Context(std::chrono::milliseconds timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  return ctx;
}

base::Error CriClient::CallError(const std::string& rpc, const grpc::Status& status) {
  using base::ErrorCode;
  ErrorCode code = ErrorCode::kInternal;
  switch (status.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT: code = ErrorCode::kInvalidArgument; break;
    case grpc::StatusCode::NOT_FOUND: code = ErrorCode::kNotFound; break;
    case grpc::StatusCode::ALREADY_EXISTS: code = ErrorCode::kAlreadyExists; break;
    case grpc::StatusCode::FAILED_PRECONDITION: code = ErrorCode::kFailedPrecondition; break;
    case grpc::StatusCode::UNAVAILABLE: code = ErrorCode::kUnavailable; break;
    case grpc::StatusCode::DEADLINE_EXCEEDED: code = ErrorCode::kDeadlineExceeded; break;
    case grpc::StatusCode::UNIMPLEMENTED: code = ErrorCode::kUnimplemented; break;
    default: break;
  }
  return base::Error(code, rpc + ": " + status.error_message());
}

}  // namespace chrys::cri
