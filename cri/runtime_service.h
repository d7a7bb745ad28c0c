// RuntimeServiceImpl serves the CRI RuntimeService; each RPC family lives in its own .cpp file.
#pragma once

#include <functional>
#include <mutex>
#include <string>

#include "cri/config.h"
#include "cri/proto/api.grpc.pb.h"
#include "cri/readiness.h"
#include "cri/state_store.h"

namespace chrys::cri {

namespace v1 = ::runtime::v1;

class RuntimeServiceImpl final : public v1::RuntimeService::Service {
 public:
  using ReadinessCheck = std::function<Condition()>;

  // `network_ready` answers the NetworkReady condition (the pod network module provides it).
  RuntimeServiceImpl(const Config& config, StateStore& state, ReadinessCheck network_ready);

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

 private:
  const Config& config_;
  StateStore& state_;
  ReadinessCheck network_ready_;

  std::mutex mutex_;
  std::string pod_cidr_;
};

// Version reported by the build, e.g. "0.1.0".
const char* ChrysalisVersion();

// Checks a pod CIDR as kubelet sends it: one or two comma-separated IPv4/IPv6 CIDRs.
base::Status ValidatePodCidr(const std::string& cidr);

}  // namespace chrys::cri
