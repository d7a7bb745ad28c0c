// AgentStreamRuntime runs exec, attach and port-forward sessions through the pod VM's chrys-agent (ExecProcess,
// WriteStdin, ResizeTty, ReadOutput, WaitProcess, AttachOutput, PortForward), for the streaming server.
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
  // Attaches to a running container's main process: a copy of its output (the CRI log keeps its own reader).
  base::Result<std::unique_ptr<StreamProcess>> Attach(const AttachRequest& request) override;
  // Dials the port on the guest's loopback through the agent (the host netns cannot reach a TC-redirect pod).
  base::Result<std::unique_ptr<PortConnection>> DialPort(const PortForwardRequest& request, int32_t port) override;

 private:
  runtime::SandboxManager& sandboxes_;
  runtime::GrpcAgentConnector& agents_;
};

}  // namespace chrys::cri::streaming
