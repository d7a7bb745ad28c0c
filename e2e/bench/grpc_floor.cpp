#include "e2e/bench/grpc_floor.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>

#include "base/file_util.h"
#include "cri/server_options.h"

namespace chrys::e2e {
namespace {

constexpr auto kStartTimeout = std::chrono::seconds(10);

std::string SocketOf(const std::string& dir) {
  return dir + "/floor.sock";
}

// Each RPC is a raw callback method, as chrysd's list RPCs are: the request is not even parsed.
using RawFloorBase =
    v1::RuntimeService::WithRawCallbackMethod_ListContainers<v1::RuntimeService::WithRawCallbackMethod_ContainerStatus<
        v1::RuntimeService::WithRawCallbackMethod_ListPodSandbox<v1::RuntimeService::Service>>>;

class FloorService final : public RawFloorBase {
 public:
  explicit FloorService(FloorAnswers answers) : answers_(std::move(answers)) {}

  grpc::ServerUnaryReactor* ListContainers(grpc::CallbackServerContext* context, const grpc::ByteBuffer* /*request*/,
                                           grpc::ByteBuffer* response) override {
    return Answer(context, answers_.list_containers, response);
  }
  grpc::ServerUnaryReactor* ContainerStatus(grpc::CallbackServerContext* context, const grpc::ByteBuffer* /*request*/,
                                            grpc::ByteBuffer* response) override {
    return Answer(context, answers_.container_status, response);
  }
  grpc::ServerUnaryReactor* ListPodSandbox(grpc::CallbackServerContext* context, const grpc::ByteBuffer* /*request*/,
                                           grpc::ByteBuffer* response) override {
    return Answer(context, answers_.list_pod_sandbox, response);
  }

 private:
  static grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context, const std::string& bytes,
                                          grpc::ByteBuffer* response) {
    grpc::Slice slice(bytes);  // one copy, as chrysd makes of its cached answer
    *response = grpc::ByteBuffer(&slice, 1);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  FloorAnswers answers_;
};

}  // namespace

base::Result<std::unique_ptr<GrpcFloor>> GrpcFloor::Start(const std::string& self_exe, const std::string& dir,
                                                          const FloorAnswers& answers) {
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(dir));
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(dir + "/list_containers.bin", answers.list_containers));
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(dir + "/container_status.bin", answers.container_status));
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(dir + "/list_pod_sandbox.bin", answers.list_pod_sandbox));
  std::unique_ptr<GrpcFloor> floor(new GrpcFloor());
  CHRYS_ASSIGN_OR_RETURN(floor->server_, ChildProcess::Start({self_exe, "--grpc-floor", dir}, dir + "/floor.log"));
  auto channel = grpc::CreateChannel("unix:" + SocketOf(dir), grpc::InsecureChannelCredentials());
  // Up once a call gets through (the socket appears only when the server listens).
  auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  for (;;) {
    if (!floor->server_.running()) {
      auto log = base::ReadFile(dir + "/floor.log", 4096);
      return base::Internal("the gRPC floor server exited: " + (log.ok() ? *log : std::string("(no log)")));
    }
    if (channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::milliseconds(200))) {
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return base::Unavailable("the gRPC floor server did not listen on " + SocketOf(dir) + " within 10 s");
    }
  }
  floor->runtime_ = v1::RuntimeService::NewStub(channel);
  return floor;
}

int ServeGrpcFloor(const std::string& dir) {
  FloorAnswers answers;
  for (auto [file, field] : {std::pair{"list_containers.bin", &FloorAnswers::list_containers},
                             std::pair{"container_status.bin", &FloorAnswers::container_status},
                             std::pair{"list_pod_sandbox.bin", &FloorAnswers::list_pod_sandbox}}) {
    auto bytes = base::ReadFile(dir + "/" + file);
    if (!bytes.ok()) {
      std::fprintf(stderr, "grpc floor: %s\n", bytes.error().message().c_str());
      return 1;
    }
    answers.*field = std::move(*bytes);
  }
  FloorService service(std::move(answers));
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + SocketOf(dir), grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  cri::ApplyCriServerOptions(builder);  // as chrysd serves
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    std::fprintf(stderr, "grpc floor: cannot listen on %s\n", SocketOf(dir).c_str());
    return 1;
  }
  server->Wait();  // until the bench kills it
  return 0;
}

}  // namespace chrys::e2e
