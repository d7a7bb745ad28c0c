// AgentStreamRuntime runs exec sessions through the pod VM's chrys-agent (ExecProcess, WriteStdin, ResizeTty,
// ReadOutput, WaitProcess), for the streaming server.
#pragma once

#include "cri/streaming/stream_runtime.h"
#include "runtime/grpc_agent_connector.h"
#include "runtime/sandbox.h"

namespace chrys::cri::streaming {

class AgentStreamRuntime : public StreamRuntime {
 public:
  AgentStreamRuntime(runtime::SandboxManager& sandboxes, runtime::GrpcAgentConnector& agents)
      : sandboxes_(sandboxes), agents_(agents) {}

  base::Result<std::unique_ptr<StreamProcess>> StartExec(const ExecRequest& request) override;
  // Not yet: the agent's ReadOutput has a single reader (the CRI log monitor); attach needs a tee there.
  base::Result<std::unique_ptr<StreamProcess>> Attach(const AttachRequest& request) override;
  // Not yet: needs a PortForward stream in the agent API.
  base::Result<std::unique_ptr<PortConnection>> DialPort(const PortForwardRequest& request, int32_t port) override;

 private:
  runtime::SandboxManager& sandboxes_;
  runtime::GrpcAgentConnector& agents_;
};

}  // namespace chrys::cri::streaming
