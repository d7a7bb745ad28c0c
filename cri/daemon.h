// Daemon owns one chrysd instance: the single-instance lock, the CRI socket, the gRPC server and its services.
#pragma once

#include <grpcpp/server.h>

#include <atomic>
#include <memory>
#include <optional>
#include <thread>

#include "base/result.h"
#include "base/unique_fd.h"
#include "cri/admin_service.h"
#include "cri/config.h"
#include "cri/image_service.h"
#include "cri/runtime_service.h"
#include "cri/state_store.h"
#include "cri/streaming/agent_runtime.h"
#include "cri/streaming/server.h"
#include "imagestore/image_store.h"
#include "netcni/pod_network.h"

namespace chrys::cri {

class Daemon {
 public:
  explicit Daemon(Config config);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Takes the instance lock, opens the state, loads records and starts serving on the socket. Fails with a clear
  // message when another chrysd serves the same socket; a stale socket left by a crash is replaced.
  base::Status Start();

  // Blocks until RequestShutdown() has stopped the server.
  void Wait();

  // Stops accepting RPCs and lets in-flight ones finish for up to shutdown_grace_seconds; then closes the clients'
  // connections. Thread-safe: the signal thread calls it while the main thread sits in Wait(); later calls do
  // nothing.
  void RequestShutdown();

  // Shuts down if still serving, then removes the socket and releases the instance lock. Main thread only.
  void Close();

  const Config& config() const { return config_; }

 private:
  base::Status AcquireInstanceLock();
  base::Status ClearStaleSocket();
  base::Status OpenImageStore();
  base::Status OpenSandboxes();

  Config config_;
  base::UniqueFd lock_fd_;
  std::optional<StateStore> state_;
  std::unique_ptr<imagestore::ImageStore> images_;
  std::unique_ptr<netcni::PodNetworkManager> network_;
  std::optional<PodStore> pods_;
  std::shared_ptr<runtime::GrpcAgentConnector> agents_;
  std::unique_ptr<runtime::SandboxManager> sandboxes_;
  runtime::RecoveryReport recovery_;
  std::unique_ptr<streaming::AgentStreamRuntime> stream_runtime_;
  std::unique_ptr<streaming::StreamingServer> streaming_;
  std::unique_ptr<RuntimeServiceImpl> runtime_service_;
  std::unique_ptr<ImageServiceImpl> image_service_;
  std::unique_ptr<AdminServiceImpl> admin_service_;
  std::unique_ptr<grpc::Server> server_;
  bool socket_owned_ = false;
  std::atomic<bool> shutdown_requested_{false};
  std::atomic<bool> stop_accel_probe_{false};
  std::thread accel_probe_;  // the background KVM probe started with the daemon
};

}  // namespace chrys::cri
