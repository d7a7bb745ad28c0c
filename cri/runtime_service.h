// RuntimeServiceImpl serves the CRI RuntimeService; each RPC family lives in its own .cpp file.
#pragma once

#include <functional>
#include <mutex>
#include <optional>
#include <string>

#include "base/phase_timer.h"
#include "cri/config.h"
#include "cri/container_monitor.h"
#include "cri/event_bus.h"
#include "cri/pod_store.h"
#include "cri/proto/api.grpc.pb.h"
#include "cri/readiness.h"
#include "cri/state_store.h"
#include "imagestore/image_store.h"
#include "netcni/pod_network.h"
#include "runtime/grpc_agent_connector.h"
#include "runtime/sandbox.h"

namespace chrys::cri {

namespace streaming {
class StreamingServer;
}  // namespace streaming

namespace v1 = ::runtime::v1;

// The modules below the CRI front that the RuntimeService drives. All outlive the service.
struct RuntimeBackends {
  StateStore& state;
  PodStore& pods;
  imagestore::ImageStore& images;
  netcni::PodNetworkManager& network;
  runtime::SandboxManager& sandboxes;
  runtime::GrpcAgentConnector& agents;
};

// ListPodSandbox and ListContainers, which kubelet calls every second or so and whose answers grow with the node,
// are raw callback methods, and ContainerStatus (kubelet asks it of every container that changed) a callback method:
// each answers from memory on the gRPC thread that read the request. A synchronous method hands the call to a
// thread of the sync pool: on a busy host about twice the thread wakeups per RPC. Every other RPC, which may wait
// on a VM or an agent, is synchronous.
class RuntimeServiceImpl final
    : public v1::RuntimeService::WithRawCallbackMethod_ListPodSandbox<
          v1::RuntimeService::WithRawCallbackMethod_ListContainers<
              v1::RuntimeService::WithCallbackMethod_ContainerStatus<v1::RuntimeService::Service>>> {
 public:
  using ReadinessCheck = std::function<Condition()>;

  // `network_ready` answers the NetworkReady condition (the pod network module provides it).
  RuntimeServiceImpl(const Config& config, RuntimeBackends backends, ReadinessCheck network_ready);

  // Loads what earlier runs recorded (the pod CIDR). Called once before serving.
  void LoadState();

  // runtime_info.cpp: version, status and runtime configuration.
  grpc::Status Version(grpc::ServerContext* context, const v1::VersionRequest* request,
                       v1::VersionResponse* response) override;
  grpc::Status Status(grpc::ServerContext* context, const v1::StatusRequest* request,
                      v1::StatusResponse* response) override;
  grpc::Status RuntimeConfig(grpc::ServerContext* context, const v1::RuntimeConfigRequest* request,
                             v1::RuntimeConfigResponse* response) override;
  grpc::Status UpdateRuntimeConfig(grpc::ServerContext* context, const v1::UpdateRuntimeConfigRequest* request,
                                   v1::UpdateRuntimeConfigResponse* response) override;

  // pod_sandbox.cpp: the pod sandbox lifecycle.
  grpc::Status RunPodSandbox(grpc::ServerContext* context, const v1::RunPodSandboxRequest* request,
                             v1::RunPodSandboxResponse* response) override;
  grpc::Status StopPodSandbox(grpc::ServerContext* context, const v1::StopPodSandboxRequest* request,
                              v1::StopPodSandboxResponse* response) override;
  grpc::Status RemovePodSandbox(grpc::ServerContext* context, const v1::RemovePodSandboxRequest* request,
                                v1::RemovePodSandboxResponse* response) override;
  grpc::Status PodSandboxStatus(grpc::ServerContext* context, const v1::PodSandboxStatusRequest* request,
                                v1::PodSandboxStatusResponse* response) override;
  // A raw callback method, like ListContainers (see list_responses.h).
  grpc::ServerUnaryReactor* ListPodSandbox(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) override;

  // container.cpp: the container lifecycle.
  grpc::Status CreateContainer(grpc::ServerContext* context, const v1::CreateContainerRequest* request,
                               v1::CreateContainerResponse* response) override;
  grpc::Status StartContainer(grpc::ServerContext* context, const v1::StartContainerRequest* request,
                              v1::StartContainerResponse* response) override;
  grpc::Status StopContainer(grpc::ServerContext* context, const v1::StopContainerRequest* request,
                             v1::StopContainerResponse* response) override;
  grpc::Status RemoveContainer(grpc::ServerContext* context, const v1::RemoveContainerRequest* request,
                               v1::RemoveContainerResponse* response) override;
  grpc::ServerUnaryReactor* ContainerStatus(grpc::CallbackServerContext* context,
                                            const v1::ContainerStatusRequest* request,
                                            v1::ContainerStatusResponse* response) override;
  // A raw callback method (see list_responses.h): kubelet relists often, and the list grows with every container.
  grpc::ServerUnaryReactor* ListContainers(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) override;
  grpc::Status ReopenContainerLog(grpc::ServerContext* context, const v1::ReopenContainerLogRequest* request,
                                  v1::ReopenContainerLogResponse* response) override;
  grpc::Status ExecSync(grpc::ServerContext* context, const v1::ExecSyncRequest* request,
                        v1::ExecSyncResponse* response) override;

  // streaming_rpcs.cpp: single-use URLs on the streaming server (UNAVAILABLE until SetStreamingServer).
  grpc::Status Exec(grpc::ServerContext* context, const v1::ExecRequest* request, v1::ExecResponse* response) override;
  grpc::Status Attach(grpc::ServerContext* context, const v1::AttachRequest* request,
                      v1::AttachResponse* response) override;
  grpc::Status PortForward(grpc::ServerContext* context, const v1::PortForwardRequest* request,
                           v1::PortForwardResponse* response) override;
  // The server the streaming RPCs mint URLs on; it must outlive serving.
  void SetStreamingServer(streaming::StreamingServer* server) { streaming_ = server; }

  // ImageService.PullImage for a confidential pod (its sandbox_config names a pod of ours with a confidential
  // handler, or the image's runtime_handler is one): pulls inside that pod's guest with the request's
  // credentials and returns the image id. nullopt when the pull is not for a confidential pod (the host store
  // pulls it). In container.cpp.
  std::optional<base::Result<std::string>> PullInConfidentialPod(const v1::PullImageRequest& request);

  // stats.cpp: resource usage, lifecycle events, resource updates.
  grpc::Status ContainerStats(grpc::ServerContext* context, const v1::ContainerStatsRequest* request,
                              v1::ContainerStatsResponse* response) override;
  grpc::Status ListContainerStats(grpc::ServerContext* context, const v1::ListContainerStatsRequest* request,
                                  v1::ListContainerStatsResponse* response) override;
  grpc::Status PodSandboxStats(grpc::ServerContext* context, const v1::PodSandboxStatsRequest* request,
                               v1::PodSandboxStatsResponse* response) override;
  grpc::Status ListPodSandboxStats(grpc::ServerContext* context, const v1::ListPodSandboxStatsRequest* request,
                                   v1::ListPodSandboxStatsResponse* response) override;
  grpc::Status GetContainerEvents(grpc::ServerContext* context, const v1::GetEventsRequest* request,
                                  grpc::ServerWriter<v1::ContainerEventResponse>* writer) override;
  grpc::Status UpdateContainerResources(grpc::ServerContext* context,
                                        const v1::UpdateContainerResourcesRequest* request,
                                        v1::UpdateContainerResourcesResponse* response) override;

  // Reconciles pod records with the VMs that survived a restart. Called once before serving.
  void RecoverPods(const runtime::RecoveryReport& report);

 private:
  base::Result<PodRecord> CreatePod(const v1::RunPodSandboxRequest& request);
  base::Status StopPod(PodRecord& pod);
  // Marks the pod's running containers exited because their VM went away.
  void MarkContainersGone(const std::string& sandbox_id, const std::string& reason);
  base::Result<ContainerRecord> CreateContainerIn(const v1::CreateContainerRequest& request, base::PhaseTimer& phases);
  // The stop signal, `timeout_seconds` for the container to exit, then SIGKILL; waits until its exit is recorded.
  base::Status StopContainerIn(const ContainerRecord& record, int64_t timeout_seconds);
  static void FillContainerStatus(const ContainerRecord& record, v1::ContainerStatus* status);
  base::Status FillContainerStats(const ContainerRecord& record, v1::ContainerStats* stats);
  base::Status FillPodStats(const PodRecord& pod, v1::PodSandboxStats* stats);
  void PublishContainerEvent(const std::string& container_id, v1::ContainerEventType type);

  const Config& config_;
  RuntimeBackends backends_;
  EventBus events_;
  std::unique_ptr<ContainerMonitor> monitor_;
  StateStore& state_;
  ReadinessCheck network_ready_;

  std::mutex mutex_;
  std::string pod_cidr_;
  streaming::StreamingServer* streaming_ = nullptr;
};

// Version reported by the build, e.g. "0.1.0".
const char* ChrysalisVersion();

// Checks a pod CIDR as kubelet sends it: one or two comma-separated IPv4/IPv6 CIDRs.
base::Status ValidatePodCidr(const std::string& cidr);

}  // namespace chrys::cri
