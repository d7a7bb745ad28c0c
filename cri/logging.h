// Logging set-up for chrysd: spdlog to stderr or to a size-rotated file, and a gRPC interceptor logging every RPC.
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include <string>
#include <vector>

#include "base/result.h"
#include "cri/config.h"

namespace chrys::cri {

// Installs the default logger from the config: level, and a rotating file sink when log.file is set.
base::Status SetUpLogging(const LogConfig& config);

// Logs each RPC at debug level with its method, duration and gRPC status code (errors at warn level), and keeps
// the RPCs in flight for InFlightRpcs.
class RpcLogInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override;
};

// The RPCs the interceptor has seen start and not yet end, oldest first, each as "<method> (<ms> ms)": what a
// shutdown waits for.
std::vector<std::string> InFlightRpcs();

}  // namespace chrys::cri
