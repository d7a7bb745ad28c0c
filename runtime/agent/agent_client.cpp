#include "runtime/agent/agent_client.h"

#include <grpcpp/create_channel_posix.h>
#include <grpcpp/grpcpp.h>

#include <thread>

namespace chrys::runtime::agent {
namespace {

using base::ErrorCode;
using base::Result;
using base::Status;
using Clock = std::chrono::steady_clock;

// How long ConnectWhenReady keeps one connection before dialling again: on virtio-serial an agent that dropped a
// stale session leaves a connection that never answers. A Ping in flight then may still take kMinPing.
constexpr std::chrono::milliseconds kConnectionPatience{10000};
constexpr std::chrono::milliseconds kMinPing{2000};

ErrorCode MapCode(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
      return ErrorCode::kInvalidArgument;
    case grpc::StatusCode::NOT_FOUND:
      return ErrorCode::kNotFound;
    case grpc::StatusCode::ALREADY_EXISTS:
      return ErrorCode::kAlreadyExists;
    case grpc::StatusCode::FAILED_PRECONDITION:
      return ErrorCode::kFailedPrecondition;
    case grpc::StatusCode::UNAVAILABLE:
      return ErrorCode::kUnavailable;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return ErrorCode::kDeadlineExceeded;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return ErrorCode::kResourceExhausted;
    case grpc::StatusCode::UNIMPLEMENTED:
      return ErrorCode::kUnimplemented;
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
      return ErrorCode::kPermissionDenied;
    case grpc::StatusCode::ABORTED:
      return ErrorCode::kAborted;
    case grpc::StatusCode::CANCELLED:
      return ErrorCode::kCancelled;
    default:
      return ErrorCode::kInternal;
  }
}

void SetDeadline(grpc::ClientContext& ctx, std::chrono::milliseconds timeout) {
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
}

}  // namespace

base::Error FromGrpcStatus(const grpc::Status& status, const std::string& context) {
  // The guest is not trusted: keep its message bounded.
  std::string message = status.error_message().substr(0, 4096);
  return base::Error(MapCode(status.error_code()), context + ": " + message);
}

AgentClient::AgentClient(AgentEndpoint endpoint, AgentClientOptions options, std::shared_ptr<grpc::Channel> channel)
    : endpoint_(std::move(endpoint)),
      options_(options),
      channel_(std::move(channel)),
      stub_(v1::Agent::NewStub(channel_)) {}

AgentClient::~AgentClient() = default;

Result<std::unique_ptr<AgentClient>> AgentClient::Connect(const AgentEndpoint& endpoint,
                                                          const AgentClientOptions& options) {
  CHRYS_ASSIGN_OR_RETURN(base::UniqueFd fd, ConnectTransport(endpoint, options.call_timeout));
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  args.SetMaxSendMessageSize(options.max_receive_message_bytes);
  // gRPC takes ownership of the descriptor.
  auto fd_channel = grpc::CreateCustomInsecureChannelFromFd(endpoint.Describe(), fd.Release(), args);
  if (!fd_channel) {
    return base::Internal("creating a gRPC channel on " + endpoint.Describe() + " failed");
  }
  return std::unique_ptr<AgentClient>(new AgentClient(endpoint, options, std::move(fd_channel)));
}

Result<std::unique_ptr<AgentClient>> AgentClient::ConnectWhenReady(const AgentEndpoint& endpoint,
                                                                   std::chrono::milliseconds timeout,
                                                                   const AgentClientOptions& options) {
  auto deadline = Clock::now() + timeout;
  std::string last_error = "no attempt made";
  while (Clock::now() < deadline) {
    auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    AgentClientOptions attempt_options = options;
    attempt_options.call_timeout = std::min(remaining, options.call_timeout);
    auto client = Connect(endpoint, attempt_options);
    if (!client.ok()) {
      last_error = client.error().message();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    // A connected socket does not mean a live agent: on virtio-serial the VMM accepts before the guest
    // opens its port, and bytes wait in the socket until it does. Keep pinging on this connection while it
    // stays healthy; dial again if it stays silent for long (the agent may have dropped a stale session).
    // A Ping waits as long as this connection is kept (at least kMinPing): the first one is sent before the guest
    // has booted, and one that expired and was sent again cost the guest ~50 ms more to answer (measured under TCG
    // on boots past 2 s). Booting many VMs at once on few cores takes several seconds: the patience covers that.
    auto connection_deadline = std::min(deadline, Clock::now() + kConnectionPatience);
    while (Clock::now() < connection_deadline && (*client)->Healthy()) {
      auto now = Clock::now();
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
      auto until_redial = std::chrono::duration_cast<std::chrono::milliseconds>(connection_deadline - now);
      auto ping = (*client)->Ping(std::min(left, std::max(until_redial, kMinPing)));
      if (ping.ok() && ping->ready()) {
        (*client)->options_ = options;
        return std::move(client).value();
      }
      last_error = ping.ok() ? "agent answered but is not ready" : ping.error().message();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return base::DeadlineExceeded("agent at " + endpoint.Describe() + " not ready within " +
                                std::to_string(timeout.count()) + " ms (last error: " + last_error + ")");
}

bool AgentClient::Healthy() const {
  return !broken_->load();
}

namespace {

// A failed call as our Error. A channel made from a descriptor never reconnects, and has no connectivity state to
// ask: a call that fails with UNAVAILABLE means the byte stream is gone, and the owner must dial again (`broken`).
base::Error FailCall(const grpc::Status& status, const std::string& context, std::atomic<bool>& broken) {
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    broken = true;
  }
  return FromGrpcStatus(status, context);
}

}  // namespace

base::Error AgentClient::Fail(const grpc::Status& status, const std::string& context) {
  return FailCall(status, context, *broken_);
}

Result<v1::PingResponse> AgentClient::Ping(std::chrono::milliseconds timeout) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, timeout);
  ctx.set_wait_for_ready(true);
  v1::PingRequest req;
  v1::PingResponse resp;
  grpc::Status s = stub_->Ping(&ctx, req, &resp);
  if (!s.ok()) {
    return Fail(s, "agent Ping");
  }
  return resp;
}

Status AgentClient::SetupSandbox(const v1::SetupSandboxRequest& request) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, options_.call_timeout);
  v1::SetupSandboxResponse resp;
  grpc::Status s = stub_->SetupSandbox(&ctx, request, &resp);
  if (!s.ok()) {
    return Fail(s, "agent SetupSandbox");
  }
  return Status::Ok();
}

Result<std::string> AgentClient::MountShare(const std::string& tag, const std::string& name, bool read_only) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, options_.call_timeout);
  v1::MountShareRequest req;
  req.set_tag(tag);
  req.set_name(name);
  req.set_read_only(read_only);
  v1::MountShareResponse resp;
  grpc::Status s = stub_->MountShare(&ctx, req, &resp);
  if (!s.ok()) {
    return Fail(s, "agent MountShare " + tag);
  }
  return resp.guest_path();
}

Result<uint32_t> AgentClient::CreateContainer(const v1::ContainerConfig& config) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, options_.call_timeout);
  v1::CreateContainerRequest req;
  *req.mutable_config() = config;
  v1::CreateContainerResponse resp;
  grpc::Status s = stub_->CreateContainer(&ctx, req, &resp);
  if (!s.ok()) {
    return Fail(s, "agent CreateContainer " + config.id());
  }
  return resp.pid();
}

Status AgentClient::StartContainer(const std::string& container_id) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, options_.call_timeout);
  v1::StartContainerRequest req;
  req.set_container_id(container_id);
  v1::StartContainerResponse resp;
  grpc::Status s = stub_->StartContainer(&ctx, req, &resp);
  if (!s.ok()) {
    return Fail(s, "agent StartContainer " + container_id);
  }
  return Status::Ok();
}

Status AgentClient::SignalProcess(const v1::ProcessRef& process, int signal) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, options_.call_timeout);
  v1::SignalProcessRequest req;
  *req.mutable_process() = process;
  req.set_signal(signal);
  v1::SignalProcessResponse resp;
  grpc::Status s = stub_->SignalProcess(&ctx, req, &resp);
  if (!s.ok()) {
    return Fail(s, "agent SignalProcess " + process.container_id());
  }
  return Status::Ok();
}

void CallCanceller::Cancel() {
  std::lock_guard lock(mu_);
  cancelled_ = true;
  if (call_ != nullptr) {
    call_->TryCancel();
  }
}

bool CallCanceller::cancelled() const {
  std::lock_guard lock(mu_);
  return cancelled_;
}

bool CallCanceller::Attach(grpc::ClientContext* ctx) {
  std::lock_guard lock(mu_);
  if (cancelled_) {
    return false;
  }
  call_ = ctx;
  return true;
}

void CallCanceller::Detach() {
  std::lock_guard lock(mu_);
  call_ = nullptr;
}

// Keeps `ctx` registered with `canceller` (when given) for the life of one call.
class CancelScope {
 public:
  CancelScope(CallCanceller* canceller, grpc::ClientContext* ctx)
      : canceller_(canceller), attached_(canceller != nullptr && canceller->Attach(ctx)) {}
  ~CancelScope() {
    if (attached_) {
      canceller_->Detach();
    }
  }
  CancelScope(const CancelScope&) = delete;
  CancelScope& operator=(const CancelScope&) = delete;
  // The canceller was cancelled already: the call must not start.
  bool refused() const { return canceller_ != nullptr && !attached_; }

 private:
  CallCanceller* canceller_;
  bool attached_;
};

Result<v1::ExitStatus> AgentClient::WaitProcess(const v1::ProcessRef& process, std::chrono::milliseconds timeout,
                                                CallCanceller* canceller) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, timeout);
  CancelScope scope(canceller, &ctx);
  if (scope.refused()) {
    return base::MakeError(base::ErrorCode::kCancelled, "agent WaitProcess " + process.container_id() + ": cancelled");
  }
  v1::WaitProcessRequest req;
  *req.mutable_process() = process;
  v1::WaitProcessResponse resp;
  grpc::Status s = stub_->WaitProcess(&ctx, req, &resp);
  if (!s.ok()) {
    return Fail(s, "agent WaitProcess " + process.container_id());
  }
  return resp.status();
}

Result<v1::ExitStatus> AgentClient::ProcessStatus(const v1::ProcessRef& process) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, options_.call_timeout);
  v1::WaitProcessRequest req;
  *req.mutable_process() = process;
  req.set_no_block(true);
  v1::WaitProcessResponse resp;
  grpc::Status s = stub_->WaitProcess(&ctx, req, &resp);
  if (!s.ok()) {
    return Fail(s, "agent WaitProcess " + process.container_id());
  }
  return resp.status();
}

Status AgentClient::DeleteContainer(const std::string& container_id, bool force) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, options_.call_timeout);
  v1::DeleteContainerRequest req;
  req.set_container_id(container_id);
  req.set_force(force);
  v1::DeleteContainerResponse resp;
  grpc::Status s = stub_->DeleteContainer(&ctx, req, &resp);
  if (!s.ok()) {
    return Fail(s, "agent DeleteContainer " + container_id);
  }
  return Status::Ok();
}

Result<std::vector<v1::ContainerInfo>> AgentClient::ListContainers() {
  grpc::ClientContext ctx;
  SetDeadline(ctx, options_.call_timeout);
  v1::ListContainersRequest req;
  v1::ListContainersResponse resp;
  grpc::Status s = stub_->ListContainers(&ctx, req, &resp);
  if (!s.ok()) {
    return Fail(s, "agent ListContainers");
  }
  return std::vector<v1::ContainerInfo>(resp.containers().begin(), resp.containers().end());
}

Result<uint32_t> AgentClient::ExecProcess(const std::string& container_id, const std::string& exec_id,
                                          const v1::ProcessSpec& process) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, options_.call_timeout);
  v1::ExecProcessRequest req;
  req.set_container_id(container_id);
  req.set_exec_id(exec_id);
  *req.mutable_process() = process;
  v1::ExecProcessResponse resp;
  grpc::Status s = stub_->ExecProcess(&ctx, req, &resp);
  if (!s.ok()) {
    return Fail(s, "agent ExecProcess " + container_id + "/" + exec_id);
  }
  return resp.pid();
}

Status AgentClient::WriteStdin(const v1::ProcessRef& process, std::string_view data, bool eof) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, options_.call_timeout);
  v1::WriteStdinRequest req;
  *req.mutable_process() = process;
  req.set_data(std::string(data));
  req.set_eof(eof);
  v1::WriteStdinResponse resp;
  grpc::Status s = stub_->WriteStdin(&ctx, req, &resp);
  if (!s.ok()) {
    return Fail(s, "agent WriteStdin " + process.container_id());
  }
  return Status::Ok();
}

Status AgentClient::ResizeTty(const v1::ProcessRef& process, uint32_t rows, uint32_t columns) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, options_.call_timeout);
  v1::ResizeTtyRequest req;
  *req.mutable_process() = process;
  req.set_rows(rows);
  req.set_columns(columns);
  v1::ResizeTtyResponse resp;
  grpc::Status s = stub_->ResizeTty(&ctx, req, &resp);
  if (!s.ok()) {
    return Fail(s, "agent ResizeTty " + process.container_id());
  }
  return Status::Ok();
}

Status AgentClient::ReadOutput(const v1::ProcessRef& process, const OutputSink& sink, std::chrono::milliseconds timeout,
                               CallCanceller* canceller) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, timeout);
  CancelScope scope(canceller, &ctx);
  if (scope.refused()) {
    return base::MakeError(base::ErrorCode::kCancelled, "agent ReadOutput " + process.container_id() + ": cancelled");
  }
  v1::ReadOutputRequest req;
  *req.mutable_process() = process;
  auto reader = stub_->ReadOutput(&ctx, req);
  v1::OutputChunk chunk;
  bool stopped = false;
  while (reader->Read(&chunk)) {
    if (!sink(chunk.stream(), chunk.data())) {
      stopped = true;
      ctx.TryCancel();
      break;
    }
  }
  grpc::Status s = reader->Finish();
  if (stopped) {
    return Status::Ok();
  }
  if (!s.ok()) {
    return Fail(s, "agent ReadOutput " + process.container_id());
  }
  return Status::Ok();
}

namespace {

// ReadOutputAsync's reactor. It keeps itself alive (self_) from Start until OnDone, and the channel with it.
class OutputReader final : public grpc::ClientReadReactor<v1::OutputChunk>,
                           public AgentCall,
                           public std::enable_shared_from_this<OutputReader> {
 public:
  OutputReader(std::shared_ptr<grpc::Channel> channel, std::shared_ptr<std::atomic<bool>> broken,
               AgentClient::OutputSink sink, std::function<void(Status)> on_done)
      : channel_(std::move(channel)),
        broken_(std::move(broken)),
        sink_(std::move(sink)),
        on_done_(std::move(on_done)) {}

  void Start(v1::Agent::Stub& stub, const v1::ProcessRef& process, std::chrono::milliseconds timeout) {
    self_ = shared_from_this();
    SetDeadline(ctx_, timeout);
    *request_.mutable_process() = process;
    stub.async()->ReadOutput(&ctx_, &request_, this);
    StartRead(&chunk_);
    StartCall();
  }
  void Cancel() override { ctx_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      return;  // the stream ended; OnDone follows
    }
    if (!sink_(chunk_.stream(), chunk_.data())) {
      stopped_ = true;
      ctx_.TryCancel();
      return;
    }
    StartRead(&chunk_);
  }
  void OnDone(const grpc::Status& status) override {
    Status result = Status::Ok();
    if (!stopped_ && !status.ok()) {
      result = FailCall(status, "agent ReadOutput " + request_.process().container_id(), *broken_);
    }
    auto on_done = std::move(on_done_);
    auto keep = std::move(self_);  // this may go when `keep` does, after the callback
    on_done(std::move(result));
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::shared_ptr<std::atomic<bool>> broken_;
  AgentClient::OutputSink sink_;
  std::function<void(Status)> on_done_;
  grpc::ClientContext ctx_;
  v1::ReadOutputRequest request_;
  v1::OutputChunk chunk_;
  bool stopped_ = false;  // the sink asked to stop: the cancellation that follows is not an error
  std::shared_ptr<OutputReader> self_;
};

// WaitProcessAsync's call state, alive until its callback ran.
class ProcessWaiter final : public AgentCall, public std::enable_shared_from_this<ProcessWaiter> {
 public:
  ProcessWaiter(std::shared_ptr<grpc::Channel> channel, std::shared_ptr<std::atomic<bool>> broken,
                std::function<void(Result<v1::ExitStatus>)> on_done)
      : channel_(std::move(channel)), broken_(std::move(broken)), on_done_(std::move(on_done)) {}

  void Start(v1::Agent::Stub& stub, const v1::ProcessRef& process, std::chrono::milliseconds timeout) {
    SetDeadline(ctx_, timeout);
    *request_.mutable_process() = process;
    stub.async()->WaitProcess(&ctx_, &request_, &response_,
                              [self = shared_from_this()](const grpc::Status& status) { self->Done(status); });
  }
  void Cancel() override { ctx_.TryCancel(); }

 private:
  void Done(const grpc::Status& status) {
    auto on_done = std::move(on_done_);
    if (!status.ok()) {
      on_done(FailCall(status, "agent WaitProcess " + request_.process().container_id(), *broken_));
      return;
    }
    on_done(response_.status());
  }

  std::shared_ptr<grpc::Channel> channel_;
  std::shared_ptr<std::atomic<bool>> broken_;
  std::function<void(Result<v1::ExitStatus>)> on_done_;
  grpc::ClientContext ctx_;
  v1::WaitProcessRequest request_;
  v1::WaitProcessResponse response_;
};

}  // namespace

std::shared_ptr<AgentCall> AgentClient::ReadOutputAsync(const v1::ProcessRef& process,
                                                        std::chrono::milliseconds timeout, OutputSink sink,
                                                        std::function<void(Status)> on_done) {
  auto reader = std::make_shared<OutputReader>(channel_, broken_, std::move(sink), std::move(on_done));
  reader->Start(*stub_, process, timeout);
  return reader;
}

std::shared_ptr<AgentCall> AgentClient::WaitProcessAsync(const v1::ProcessRef& process,
                                                         std::chrono::milliseconds timeout,
                                                         std::function<void(Result<v1::ExitStatus>)> on_done) {
  auto waiter = std::make_shared<ProcessWaiter>(channel_, broken_, std::move(on_done));
  waiter->Start(*stub_, process, timeout);
  return waiter;
}

Result<v1::ContainerStatsResponse> AgentClient::ContainerStats(const std::string& container_id) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, options_.call_timeout);
  v1::ContainerStatsRequest req;
  req.set_container_id(container_id);
  v1::ContainerStatsResponse resp;
  grpc::Status s = stub_->ContainerStats(&ctx, req, &resp);
  if (!s.ok()) {
    return Fail(s, "agent ContainerStats " + container_id);
  }
  return resp;
}

Result<v1::SandboxStatsResponse> AgentClient::SandboxStats() {
  grpc::ClientContext ctx;
  SetDeadline(ctx, options_.call_timeout);
  v1::SandboxStatsRequest req;
  v1::SandboxStatsResponse resp;
  grpc::Status s = stub_->SandboxStats(&ctx, req, &resp);
  if (!s.ok()) {
    return Fail(s, "agent SandboxStats");
  }
  return resp;
}

Status AgentClient::WatchEvents(const std::function<bool(const v1::Event&)>& on_event,
                                std::chrono::milliseconds timeout) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, timeout);
  v1::WatchEventsRequest req;
  auto reader = stub_->WatchEvents(&ctx, req);
  v1::Event event;
  bool stopped = false;
  while (reader->Read(&event)) {
    if (!on_event(event)) {
      stopped = true;
      ctx.TryCancel();
      break;
    }
  }
  grpc::Status s = reader->Finish();
  if (stopped) {
    return Status::Ok();
  }
  if (!s.ok()) {
    return Fail(s, "agent WatchEvents");
  }
  return Status::Ok();
}

Status AgentClient::Shutdown(std::chrono::milliseconds grace, std::chrono::milliseconds timeout) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, timeout);
  v1::ShutdownRequest req;
  if (grace.count() > 0) {
    req.set_grace_period_ms(static_cast<uint32_t>(grace.count()));
  } else {
    req.set_force(true);
    req.set_grace_period_ms(1);  // what an agent from before `force` honours: all but at once
  }
  v1::ShutdownResponse resp;
  grpc::Status s = stub_->Shutdown(&ctx, req, &resp);
  if (!s.ok()) {
    return Fail(s, "agent Shutdown");
  }
  return Status::Ok();
}

Result<v1::OnlineResourcesResponse> AgentClient::OnlineResources(int vcpus, int added_memory_mib,
                                                                 std::chrono::milliseconds timeout) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, timeout + options_.call_timeout);
  v1::OnlineResourcesRequest req;
  req.set_vcpus(static_cast<uint32_t>(vcpus));
  req.set_added_memory_mib(static_cast<uint32_t>(added_memory_mib));
  req.set_timeout_ms(static_cast<uint32_t>(timeout.count()));
  v1::OnlineResourcesResponse resp;
  grpc::Status s = stub_->OnlineResources(&ctx, req, &resp);
  if (!s.ok()) {
    return Fail(s, "agent OnlineResources");
  }
  return resp;
}

Result<v1::ResumeResponse> AgentClient::Resume(int64_t unix_time_ns, const std::string& entropy) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, options_.call_timeout);
  v1::ResumeRequest req;
  req.set_unix_time_ns(unix_time_ns);
  req.set_entropy(entropy);
  v1::ResumeResponse resp;
  grpc::Status s = stub_->Resume(&ctx, req, &resp);
  if (!s.ok()) {
    return Fail(s, "agent Resume");
  }
  return resp;
}

Result<uint64_t> AgentClient::PrepareTemplate(std::chrono::milliseconds timeout) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, timeout);
  v1::PrepareTemplateRequest req;
  v1::PrepareTemplateResponse resp;
  grpc::Status s = stub_->PrepareTemplate(&ctx, req, &resp);
  if (!s.ok()) {
    return Fail(s, "agent PrepareTemplate");
  }
  return resp.zeroed_bytes();
}

Result<v1::Resources> AgentClient::UpdateContainerResources(const std::string& container_id,
                                                            const v1::Resources& resources) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, options_.call_timeout);
  v1::UpdateContainerResourcesRequest req;
  req.set_container_id(container_id);
  *req.mutable_resources() = resources;
  v1::UpdateContainerResourcesResponse resp;
  grpc::Status s = stub_->UpdateContainerResources(&ctx, req, &resp);
  if (!s.ok()) {
    return Fail(s, "agent UpdateContainerResources " + container_id);
  }
  return resp.resources();
}

Result<v1::PullImageResponse> AgentClient::PullImageInGuest(const v1::PullImageRequest& request,
                                                            std::chrono::milliseconds timeout) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, timeout);
  v1::GuestImages::Stub images(channel_);
  v1::PullImageResponse resp;
  grpc::Status s = images.PullImage(&ctx, request, &resp);
  if (!s.ok()) {
    return Fail(s, "in-guest PullImage " + request.image());
  }
  return resp;
}

}  // namespace chrys::runtime::agent
