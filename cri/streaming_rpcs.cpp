// The Exec/Attach/PortForward RPC family: each checks its target and mints a single-use streaming URL.
#include "cri/grpc_status.h"
#include "cri/runtime_service.h"
#include "cri/streaming/server.h"

namespace chrys::cri {

namespace {

grpc::Status NoStreamingServer() {
  return {grpc::StatusCode::UNAVAILABLE, "the streaming server is not running"};
}

}  // namespace

grpc::Status RuntimeServiceImpl::Exec(grpc::ServerContext* /*context*/, const v1::ExecRequest* request,
                                      v1::ExecResponse* response) {
  if (streaming_ == nullptr) {
    return NoStreamingServer();
  }
  if (request->cmd().empty()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "cmd is required"};
  }
  if (!request->stdin() && !request->stdout() && !request->stderr()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "one of stdin, stdout and stderr must be set"};
  }
  if (request->tty() && request->stderr()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "tty and stderr cannot both be set (a tty merges stderr)"};
  }
  auto record = backends_.pods.FindContainer(request->container_id());
  if (!record.ok()) {
    return ToGrpcStatus(record.error());
  }
  if (record->state != ContainerState::kRunning) {
    return ToGrpcStatus(base::FailedPrecondition("container " + record->id + " is not running"));
  }
  streaming::ExecRequest exec;
  exec.container_id = record->id;
  exec.sandbox_id = record->sandbox_id;
  exec.cmd.assign(request->cmd().begin(), request->cmd().end());
  exec.tty = request->tty();
  exec.stdin = request->stdin();
  exec.stdout = request->stdout();
  exec.stderr = request->stderr();
  auto url = streaming_->ExecUrl(exec);
  if (!url.ok()) {
    return ToGrpcStatus(url.error());
  }
  response->set_url(*url);
  return grpc::Status::OK;
}

grpc::Status RuntimeServiceImpl::Attach(grpc::ServerContext* /*context*/, const v1::AttachRequest* request,
                                        v1::AttachResponse* response) {
  if (streaming_ == nullptr) {
    return NoStreamingServer();
  }
  if (!request->stdin() && !request->stdout() && !request->stderr()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "one of stdin, stdout and stderr must be set"};
  }
  auto record = backends_.pods.FindContainer(request->container_id());
  if (!record.ok()) {
    return ToGrpcStatus(record.error());
  }
  if (record->state != ContainerState::kRunning) {
    return ToGrpcStatus(base::FailedPrecondition("container " + record->id + " is not running"));
  }
  streaming::AttachRequest attach;
  attach.container_id = record->id;
  attach.sandbox_id = record->sandbox_id;
  attach.tty = request->tty();
  attach.stdin = request->stdin();
  attach.stdout = request->stdout();
  attach.stderr = request->stderr();
  auto url = streaming_->AttachUrl(attach);
  if (!url.ok()) {
    return ToGrpcStatus(url.error());
  }
  response->set_url(*url);
  return grpc::Status::OK;
}

grpc::Status RuntimeServiceImpl::PortForward(grpc::ServerContext* /*context*/, const v1::PortForwardRequest* request,
                                             v1::PortForwardResponse* response) {
  if (streaming_ == nullptr) {
    return NoStreamingServer();
  }
  for (int32_t port : request->port()) {
    if (port < 1 || port > 65535) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "port: " + std::to_string(port) + " is not in 1..65535"};
    }
  }
  auto pod = backends_.pods.FindPod(request->pod_sandbox_id());
  if (!pod.ok()) {
    return ToGrpcStatus(pod.error());
  }
  streaming::PortForwardRequest forward;
  forward.sandbox_id = pod->id;
  forward.ports.assign(request->port().begin(), request->port().end());
  auto url = streaming_->PortForwardUrl(forward);
  if (!url.ok()) {
    return ToGrpcStatus(url.error());
  }
  response->set_url(*url);
  return grpc::Status::OK;
}

}  // namespace chrys::cri
