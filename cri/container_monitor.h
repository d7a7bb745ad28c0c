// ContainerMonitor follows each started container: copies its output into the CRI log, then records its exit.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "cri/container_log.h"
#include "cri/pod_store.h"
#include "runtime/grpc_agent_connector.h"

namespace chrys::cri {

class ContainerMonitor {
 public:
  // `on_exit` runs (on the monitor's thread) after a container's exit has been recorded.
  ContainerMonitor(PodStore& pods, runtime::GrpcAgentConnector& agents,
                   std::function<void(const std::string& container_id)> on_exit);
  ~ContainerMonitor();
  ContainerMonitor(const ContainerMonitor&) = delete;
  ContainerMonitor& operator=(const ContainerMonitor&) = delete;

  // Starts following a running container. Its exit is recorded only after its output is fully in the log.
  void Watch(const std::string& container_id, const std::string& sandbox_id, const runtime::AgentEndpoint& endpoint,
             std::unique_ptr<ContainerLog> log);
  // Blocks until the container's exit has been recorded, up to `timeout`. True when it was.
  bool WaitExited(const std::string& container_id, std::chrono::milliseconds timeout);
  // Reopens the container's log file (kubelet rotated it). kNotFound when the container is not followed.
  base::Status ReopenLog(const std::string& container_id);
  // Stops following (the container was removed or its VM is gone), joining the thread.
  void Forget(const std::string& container_id);

 private:
  struct Watched {
    std::thread thread;
    std::unique_ptr<ContainerLog> log;
    std::atomic<bool> stop{false};
    runtime::agent::CallCanceller canceller;  // ends the agent call the follower waits in, on stop
    bool exited = false;
    // Sets `stop` and cancels the agent call in flight: the follower ends at once, not after its slice.
    void Stop() {
      stop = true;
      canceller.Cancel();
    }
  };
  void Follow(const std::string& container_id, const std::string& sandbox_id, const runtime::AgentEndpoint& endpoint,
              Watched* watched);
  void RecordExit(const std::string& container_id, const runtime::agent::v1::ExitStatus& status);

  PodStore& pods_;
  runtime::GrpcAgentConnector& agents_;
  std::function<void(const std::string&)> on_exit_;
  std::mutex mutex_;
  std::condition_variable exited_;
  std::map<std::string, std::unique_ptr<Watched>> watched_;
};

}  // namespace chrys::cri
