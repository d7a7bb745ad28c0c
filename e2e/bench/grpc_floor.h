// GrpcFloor is the latency floor beside which the benchmarks put chrysd's list and status RPCs: a child process
// whose gRPC server (built as chrysd builds its own) answers them with fixed bytes, chrysd's own answers, so a call
// costs only what gRPC, the socket and the client's decoding cost on this host.
#pragma once

#include <memory>
#include <string>

#include "base/result.h"
#include "cri/proto/api.grpc.pb.h"
#include "e2e/fixtures/child_process.h"

namespace chrys::e2e {

namespace v1 = ::runtime::v1;

// The answers the floor server gives, as wire bytes (whatever the request).
struct FloorAnswers {
  std::string list_containers;   // a ListContainersResponse
  std::string container_status;  // a ContainerStatusResponse
  std::string list_pod_sandbox;  // a ListPodSandboxResponse
};

class GrpcFloor {
 public:
  // Writes the answers under `dir` (created) and runs `self_exe --grpc-floor DIR` on DIR/floor.sock; returns once
  // it answers. `self_exe` must call ServeGrpcFloor for that flag.
  static base::Result<std::unique_ptr<GrpcFloor>> Start(const std::string& self_exe, const std::string& dir,
                                                        const FloorAnswers& answers);
  GrpcFloor(const GrpcFloor&) = delete;
  GrpcFloor& operator=(const GrpcFloor&) = delete;
  ~GrpcFloor() = default;  // the child is killed by pid and reaped

  v1::RuntimeService::Stub& runtime() { return *runtime_; }

 private:
  GrpcFloor() = default;
  ChildProcess server_;
  std::unique_ptr<v1::RuntimeService::Stub> runtime_;
};

// The floor server's main: serves DIR/floor.sock from the answers in DIR until killed. Returns an exit code.
int ServeGrpcFloor(const std::string& dir);

}  // namespace chrys::e2e
