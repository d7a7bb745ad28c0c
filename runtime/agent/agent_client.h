// AgentClient: the host's typed handle on one VM's chrys-agent (gRPC over the agent channel).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "guest/proto/agent.grpc.pb.h"
#include "runtime/agent/transport.h"

namespace grpc {
class Channel;
class ClientContext;
class Status;
}  // namespace grpc

namespace chrys::runtime::agent {

namespace v1 = ::chrys::agent::v1;

// Lets another thread end a long agent call early (a follower waiting on a container's output while chrysd
// stops). Cancel() cancels the call in flight, if any, and every later call made with this canceller.
class CallCanceller {
 public:
  void Cancel();
  bool cancelled() const;

 private:
  friend class CancelScope;
  // Registers `ctx` as the call in flight; false (and nothing registered) when already cancelled.
  bool Attach(grpc::ClientContext* ctx);
  void Detach();

  mutable std::mutex mu_;
  grpc::ClientContext* call_ = nullptr;
  bool cancelled_ = false;
};

// One asynchronous agent call in flight (AgentClient::ReadOutputAsync, WaitProcessAsync). Cancel() ends it early;
// its completion callback still runs, once. Holding the handle keeps the call's state (and its channel) alive.
class AgentCall {
 public:
  virtual ~AgentCall() = default;
  virtual void Cancel() = 0;
};

struct AgentClientOptions {
  // Deadline of ordinary calls (not Wait/ReadOutput/WatchEvents, which block until their event).
  std::chrono::milliseconds call_timeout{std::chrono::seconds(30)};
  // Largest message accepted from the agent; the guest is not trusted.
  int max_receive_message_bytes = 4 << 20;
};

// Maps a failed gRPC status to our Error (same categories), keeping the agent's message.
base::Error FromGrpcStatus(const grpc::Status& status, const std::string& context);

class AgentClient {
 public:
  // Connects the transport and opens a gRPC channel on it. The agent may not be up yet: use WaitReady.
  static base::Result<std::unique_ptr<AgentClient>> Connect(const AgentEndpoint& endpoint,
                                                            const AgentClientOptions& options = {});
  // Connects (re-dialling while the VM boots and nothing listens yet) and pings until the agent answers
  // ready, or the timeout passes.
  static base::Result<std::unique_ptr<AgentClient>> ConnectWhenReady(const AgentEndpoint& endpoint,
                                                                     std::chrono::milliseconds timeout,
                                                                     const AgentClientOptions& options = {});

  ~AgentClient();
  AgentClient(const AgentClient&) = delete;
  AgentClient& operator=(const AgentClient&) = delete;

  const AgentEndpoint& endpoint() const { return endpoint_; }
  // True while the underlying connection is usable; false once the agent side went away (reconnect then).
  bool Healthy() const;

  base::Result<v1::PingResponse> Ping(std::chrono::milliseconds timeout);
  base::Status SetupSandbox(const v1::SetupSandboxRequest& request);
  base::Result<std::string> MountShare(const std::string& tag, const std::string& name, bool read_only);

  // Returns the guest pid of the created (not yet started) main process.
  base::Result<uint32_t> CreateContainer(const v1::ContainerConfig& config);
  base::Status StartContainer(const std::string& container_id);
  base::Status SignalProcess(const v1::ProcessRef& process, int signal);
  // Blocks until the process exits or `timeout` passes (kDeadlineExceeded).
  base::Result<v1::ExitStatus> WaitProcess(const v1::ProcessRef& process, std::chrono::milliseconds timeout,
                                           CallCanceller* canceller = nullptr);
  // The current state without blocking (status.exited() false while it runs).
  base::Result<v1::ExitStatus> ProcessStatus(const v1::ProcessRef& process);
  base::Status DeleteContainer(const std::string& container_id, bool force);
  base::Result<std::vector<v1::ContainerInfo>> ListContainers();

  base::Result<uint32_t> ExecProcess(const std::string& container_id, const std::string& exec_id,
                                     const v1::ProcessSpec& process);
  base::Status WriteStdin(const v1::ProcessRef& process, std::string_view data, bool eof);
  base::Status ResizeTty(const v1::ProcessRef& process, uint32_t rows, uint32_t columns);

  // Receives one chunk of output; return false to stop reading early.
  using OutputSink = std::function<bool(v1::OutputChunk::Stream stream, std::string_view data)>;
  // Streams the process's stdout/stderr into `sink` until both are closed (OK), the sink stops, or
  // `timeout` passes (kDeadlineExceeded). Data flows with backpressure: a slow sink slows the process.
  // A cancelled `canceller` ends it with kCancelled.
  base::Status ReadOutput(const v1::ProcessRef& process, const OutputSink& sink, std::chrono::milliseconds timeout,
                          CallCanceller* canceller = nullptr);

  // ReadOutput without a thread waiting on it: chunks reach `sink` on a gRPC callback thread, each read only after
  // the previous chunk was taken (the same backpressure), then `on_done` runs once, also on a gRPC thread, with what
  // ReadOutput would have returned (OK when both streams closed or the sink stopped). Many containers are followed at
  // once: a thread blocked in each of their reads joins gRPC's polling, and every RPC chrysd serves then hands the
  // poller from one such thread to the next.
  std::shared_ptr<AgentCall> ReadOutputAsync(const v1::ProcessRef& process, std::chrono::milliseconds timeout,
                                             OutputSink sink, std::function<void(base::Status)> on_done);
  // WaitProcess the same way: `on_done` gets its result once, on a gRPC callback thread.
  std::shared_ptr<AgentCall> WaitProcessAsync(const v1::ProcessRef& process, std::chrono::milliseconds timeout,
                                              std::function<void(base::Result<v1::ExitStatus>)> on_done);

  base::Result<v1::ContainerStatsResponse> ContainerStats(const std::string& container_id);
  base::Result<v1::SandboxStatsResponse> SandboxStats();
  // Delivers events until `on_event` returns false, the connection drops, or `timeout` passes.
  base::Status WatchEvents(const std::function<bool(const v1::Event&)>& on_event, std::chrono::milliseconds timeout);

  // Asks the guest to stop its containers (SIGTERM, SIGKILL after `grace`; a zero grace kills them at once) and
  // power off, waiting at most `timeout` for the reply, which comes before the power-off.
  base::Status Shutdown(std::chrono::milliseconds grace, std::chrono::milliseconds timeout);

  // Has the guest bring hot-plugged vCPUs and memory online (see the agent's OnlineResources); waits at most
  // `timeout` for them to appear.
  base::Result<v1::OnlineResourcesResponse> OnlineResources(int vcpus, int added_memory_mib,
                                                            std::chrono::milliseconds timeout);

  // After a restore from a template: sets the guest clock to `unix_time_ns` and reseeds its random generator with
  // `entropy` (32..512 bytes).
  base::Result<v1::ResumeResponse> Resume(int64_t unix_time_ns, const std::string& entropy);
  // On the template VM before it is saved: zeroes the guest's free memory; returns the bytes zeroed.
  base::Result<uint64_t> PrepareTemplate(std::chrono::milliseconds timeout);

  // Changes a created or running container's cgroup limits (fields left zero/empty stay as they are);
  // returns the limits the guest reports in force afterwards.
  base::Result<v1::Resources> UpdateContainerResources(const std::string& container_id, const v1::Resources& resources);

  // The raw stub, for calls this class does not wrap.
  v1::Agent::Stub& stub() { return *stub_; }

  // Pulls an image inside the guest (GuestImages, served only by the HAL agent of confidential pods; others
  // answer UNIMPLEMENTED). The layers stay in the guest; bounded by `timeout`.
  base::Result<v1::PullImageResponse> PullImageInGuest(const v1::PullImageRequest& request,
                                                       std::chrono::milliseconds timeout);

 private:
  AgentClient(AgentEndpoint endpoint, AgentClientOptions options, std::shared_ptr<grpc::Channel> channel);
  // Converts a failed call, remembering when the connection itself is gone.
  base::Error Fail(const grpc::Status& status, const std::string& context);

  AgentEndpoint endpoint_;
  AgentClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Agent::Stub> stub_;
  // Shared with asynchronous calls, which may end after this client is gone.
  std::shared_ptr<std::atomic<bool>> broken_ = std::make_shared<std::atomic<bool>>(false);
};

}  // namespace chrys::runtime::agent
