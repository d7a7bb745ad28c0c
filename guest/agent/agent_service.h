// AgentService: the gRPC face of chrys-agent; validates each request, then calls the managers.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>

#include "guest/agent/container_manager.h"
#include "guest/agent/hotplug.h"
#include "guest/proto/agent.grpc.pb.h"

namespace chrys::guest {

namespace v1 = ::chrys::agent::v1;

// Maps our Error to a gRPC status with the same category and message.
grpc::Status ToGrpc(const base::Error& error);

class AgentService final : public v1::Agent::Service {
 public:
  // `power_off` is called (from a separate thread, after the reply) to end the VM.
  AgentService(ContainerManager& containers, std::function<void()> power_off);

  void SetReady(uint64_t boot_to_ready_ms) {
    boot_to_ready_ms_ = boot_to_ready_ms;
    ready_ = true;
  }

  grpc::Status Ping(grpc::ServerContext* ctx, const v1::PingRequest* req, v1::PingResponse* resp) override;
  grpc::Status SetupSandbox(grpc::ServerContext* ctx, const v1::SetupSandboxRequest* req,
                            v1::SetupSandboxResponse* resp) override;
  grpc::Status MountShare(grpc::ServerContext* ctx, const v1::MountShareRequest* req,
                          v1::MountShareResponse* resp) override;
  grpc::Status CreateContainer(grpc::ServerContext* ctx, const v1::CreateContainerRequest* req,
                               v1::CreateContainerResponse* resp) override;
  grpc::Status StartContainer(grpc::ServerContext* ctx, const v1::StartContainerRequest* req,
                              v1::StartContainerResponse* resp) override;
  grpc::Status SignalProcess(grpc::ServerContext* ctx, const v1::SignalProcessRequest* req,
                             v1::SignalProcessResponse* resp) override;
  grpc::Status WaitProcess(grpc::ServerContext* ctx, const v1::WaitProcessRequest* req,
                           v1::WaitProcessResponse* resp) override;
  grpc::Status DeleteContainer(grpc::ServerContext* ctx, const v1::DeleteContainerRequest* req,
                               v1::DeleteContainerResponse* resp) override;
  grpc::Status ListContainers(grpc::ServerContext* ctx, const v1::ListContainersRequest* req,
                              v1::ListContainersResponse* resp) override;
  grpc::Status ExecProcess(grpc::ServerContext* ctx, const v1::ExecProcessRequest* req,
                           v1::ExecProcessResponse* resp) override;
  grpc::Status WriteStdin(grpc::ServerContext* ctx, const v1::WriteStdinRequest* req,
                          v1::WriteStdinResponse* resp) override;
  grpc::Status ResizeTty(grpc::ServerContext* ctx, const v1::ResizeTtyRequest* req,
                         v1::ResizeTtyResponse* resp) override;
  grpc::Status ReadOutput(grpc::ServerContext* ctx, const v1::ReadOutputRequest* req,
                          grpc::ServerWriter<v1::OutputChunk>* writer) override;
  grpc::Status ContainerStats(grpc::ServerContext* ctx, const v1::ContainerStatsRequest* req,
                              v1::ContainerStatsResponse* resp) override;
  grpc::Status SandboxStats(grpc::ServerContext* ctx, const v1::SandboxStatsRequest* req,
                            v1::SandboxStatsResponse* resp) override;
  grpc::Status WatchEvents(grpc::ServerContext* ctx, const v1::WatchEventsRequest* req,
                           grpc::ServerWriter<v1::Event>* writer) override;
  grpc::Status Shutdown(grpc::ServerContext* ctx, const v1::ShutdownRequest* req, v1::ShutdownResponse* resp) override;
  grpc::Status UpdateContainerResources(grpc::ServerContext* ctx, const v1::UpdateContainerResourcesRequest* req,
                                        v1::UpdateContainerResourcesResponse* resp) override;
  grpc::Status AttachOutput(grpc::ServerContext* ctx, const v1::AttachOutputRequest* req,
                            grpc::ServerWriter<v1::OutputChunk>* writer) override;
  grpc::Status PortForward(grpc::ServerContext* ctx,
                           grpc::ServerReaderWriter<v1::PortForwardFrame, v1::PortForwardFrame>* stream) override;
  grpc::Status OnlineResources(grpc::ServerContext* ctx, const v1::OnlineResourcesRequest* req,
                               v1::OnlineResourcesResponse* resp) override;
  grpc::Status Resume(grpc::ServerContext* ctx, const v1::ResumeRequest* req, v1::ResumeResponse* resp) override;
  grpc::Status PrepareTemplate(grpc::ServerContext* ctx, const v1::PrepareTemplateRequest* req,
                               v1::PrepareTemplateResponse* resp) override;

 private:
  ContainerManager& containers_;
  std::function<void()> power_off_;
  ResourceOnliner onliner_;  // made with the agent: the memory present then is the boot memory
  std::mutex online_mu_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> sandbox_configured_{false};
  std::atomic<bool> shutting_down_{false};
  std::atomic<uint64_t> boot_to_ready_ms_{0};
  std::mutex setup_mu_;
  std::atomic<int> port_forwards_{0};  // open PortForward calls, bounded (each holds a thread and a socket)
};

}  // namespace chrys::guest
