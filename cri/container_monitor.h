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
#include <vector>

#include "cri/container_log.h"
#include "cri/pod_store.h"
#include "runtime/grpc_agent_connector.h"

namespace chrys::cri {

// No thread per container: the agent calls are asynchronous (their chunks are written to the log on gRPC's
// callback threads), and one worker thread takes each follower's next step (dial the agent, read again, wait for the
// exit, record it). Blocked threads would all join gRPC's polling and slow every RPC chrysd serves.
class ContainerMonitor {
 public:
  // `on_exit` runs (on the monitor's worker thread) after a container's exit has been recorded.
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
  // Stops following (the container was removed or its VM is gone): cancels the agent call in flight and waits
  // (a few seconds at most) until the follower has let go of the log.
  void Forget(const std::string& container_id);

  // Containers being followed (not yet forgotten, whether or not they exited).
  size_t watched() const;

 private:
  struct Watched;
  using WatchedPtr = std::shared_ptr<Watched>;
  // A step of one follower for the worker thread, due at `due` (at once when its follower is stopped).
  struct Task {
    std::chrono::steady_clock::time_point due;
    WatchedPtr watched;
    std::function<void()> run;
  };

  void Post(const WatchedPtr& watched, std::chrono::milliseconds delay, std::function<void()> run);
  void WorkerLoop();
  // Makes the worker look at its tasks again (a follower was stopped).
  void WakeWorker();

  // The follower's steps, on the worker thread.
  void StartReading(const WatchedPtr& w);
  void ReadEnded(const WatchedPtr& w, const base::Status& read);
  void OutputComplete(const WatchedPtr& w);
  void StartWaiting(const WatchedPtr& w);
  void WaitEnded(const WatchedPtr& w, const base::Result<runtime::agent::v1::ExitStatus>& status);
  void RecordExit(const WatchedPtr& w, const runtime::agent::v1::ExitStatus& status);
  // The follower is done: no call in flight, no step pending.
  void Finish(const WatchedPtr& w);

  PodStore& pods_;
  runtime::GrpcAgentConnector& agents_;
  std::function<void(const std::string&)> on_exit_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;  // a follower exited or finished
  std::map<std::string, WatchedPtr> watched_;
  int unfinished_ = 0;  // followers not finished, forgotten ones included

  std::mutex tasks_mutex_;
  std::condition_variable tasks_changed_;
  std::vector<Task> tasks_;
  bool quit_ = false;
  std::thread worker_;  // last: starts after everything above exists
};

}  // namespace chrys::cri
