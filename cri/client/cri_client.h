// CriClient is our own small CRI v1 client (chrysctl, the quick start, e2e tests) over chrysd's unix socket.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "base/result.h"
#include "cri/proto/admin.grpc.pb.h"
#include "cri/proto/api.grpc.pb.h"

namespace chrys::cri {

class CriClient {
 public:
  // Fails with a one-line error naming the socket when nothing listens there.
  static base::Result<CriClient> Connect(const std::string& socket,
                                         std::chrono::milliseconds timeout = std::chrono::seconds(5));

  runtime::v1::RuntimeService::Stub& runtime() { return *runtime_; }
  runtime::v1::ImageService::Stub& images() { return *images_; }
  chrys::admin::v1::Admin::Stub& admin() { return *admin_; }
  const std::string& socket() const { return socket_; }

  // A client context with a deadline, for one call.
  static std::unique_ptr<grpc::ClientContext> Context(std::chrono::milliseconds timeout = std::chrono::minutes(2));

  // Turns a failed gRPC status into an Error that names the RPC.
  static base::Error CallError(const std::string& rpc, const grpc::Status& status);

 private:
  CriClient(std::string socket, std::shared_ptr<grpc::Channel> channel);

  std::string socket_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<runtime::v1::RuntimeService::Stub> runtime_;
  std::unique_ptr<runtime::v1::ImageService::Stub> images_;
  std::unique_ptr<chrys::admin::v1::Admin::Stub> admin_;
};

}  // namespace chrys::cri
