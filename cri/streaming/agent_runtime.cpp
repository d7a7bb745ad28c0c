#include "cri/streaming/agent_runtime.h"

#include <grpcpp/client_context.h>
#include <openssl/rand.h>
#include <signal.h>

#include <atomic>
#include <mutex>

namespace chrys::cri::streaming {

namespace {

namespace agentv1 = ::chrys::agent::v1;

constexpr size_t kStdinChunk = 64 << 10;  // the agent's WriteStdin limit

std::string NewExecId() {
  unsigned char bytes[8];
  RAND_bytes(bytes, sizeof(bytes));
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id = "stream-";
  for (unsigned char b : bytes) {
    id.push_back(kHex[b >> 4]);
    id.push_back(kHex[b & 15]);
  }
  return id;
}

class AgentExec : public StreamProcess {
 public:
  AgentExec(std::shared_ptr<runtime::agent::AgentClient> client, agentv1::ProcessRef process)
      : client_(std::move(client)), process_(std::move(process)) {}

  ~AgentExec() override {
    // Never leave the process behind in the guest: a session that ends without a recorded exit kills it.
    if (!exited_) {
      client_->SignalProcess(process_, SIGKILL).ok();
    }
  }

  base::Status WriteStdin(std::string_view data) override {
    while (!data.empty()) {
      std::string_view chunk = data.substr(0, kStdinChunk);
      CHRYS_RETURN_IF_ERROR(client_->WriteStdin(process_, chunk, false));
      data.remove_prefix(chunk.size());
    }
    return base::Status::Ok();
  }
  base::Status CloseStdin() override { return client_->WriteStdin(process_, "", true); }
  base::Status Resize(uint16_t width, uint16_t height) override { return client_->ResizeTty(process_, height, width); }

  base::Status PumpOutput(const OutputSink& sink) override {
    agentv1::ReadOutputRequest request;
    *request.mutable_process() = process_;
    {
      std::lock_guard lock(mu_);
      if (aborted_) {
        return base::MakeError(base::ErrorCode::kCancelled, "session aborted");
      }
      context_ = std::make_unique<grpc::ClientContext>();
    }
    auto reader = client_->stub().ReadOutput(context_.get(), request);
    agentv1::OutputChunk chunk;
    bool stopped = false;
    while (reader->Read(&chunk)) {
      auto stream = chunk.stream() == agentv1::OutputChunk::STDERR ? OutputStream::kStderr : OutputStream::kStdout;
      if (!sink(stream, chunk.data())) {
        stopped = true;
        context_->TryCancel();
        break;
      }
    }
    grpc::Status status = reader->Finish();
    if (stopped || aborted_) {
      return base::MakeError(base::ErrorCode::kCancelled, "session aborted");
    }
    if (!status.ok()) {
      return runtime::agent::FromGrpcStatus(status, "read the output of " + process_.exec_id());
    }
    return base::Status::Ok();
  }

  base::Result<StreamExit> Wait() override {
    CHRYS_ASSIGN_OR_RETURN(agentv1::ExitStatus status, client_->WaitProcess(process_, std::chrono::seconds(60)));
    exited_ = true;
    return StreamExit{status.exit_code()};
  }

  void Abort() override {
    std::lock_guard lock(mu_);
    if (aborted_.exchange(true)) {
      return;
    }
    client_->SignalProcess(process_, SIGKILL).ok();
    if (context_) {
      context_->TryCancel();
    }
  }

 private:
  std::shared_ptr<runtime::agent::AgentClient> client_;
  agentv1::ProcessRef process_;
  std::mutex mu_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::atomic<bool> aborted_{false};
  std::atomic<bool> exited_{false};
};

// An attachment to a container's main process: a copy of its output (AttachOutput, which leaves the CRI log
// its own reader), stdin and resize to the process. Ending the session only detaches.
class AgentAttach : public StreamProcess {
 public:
  AgentAttach(std::shared_ptr<runtime::agent::AgentClient> client, agentv1::ProcessRef process)
      : client_(std::move(client)), process_(std::move(process)) {}

  ~AgentAttach() override {
    Abort();
    if (reader_) {
      reader_->Finish();
    }
  }

  // Opens the output copy and waits for the agent's first (empty) message: from then on nothing is missed.
  base::Status Open() {
    agentv1::AttachOutputRequest request;
    *request.mutable_process() = process_;
    reader_ = client_->stub().AttachOutput(&context_, request);
    agentv1::OutputChunk hello;
    if (!reader_->Read(&hello)) {
      grpc::Status status = reader_->Finish();
      reader_.reset();
      return runtime::agent::FromGrpcStatus(status, "attach to the output of container " + process_.container_id());
    }
    return base::Status::Ok();
  }

  base::Status WriteStdin(std::string_view data) override {
    while (!data.empty()) {
      std::string_view chunk = data.substr(0, kStdinChunk);
      CHRYS_RETURN_IF_ERROR(client_->WriteStdin(process_, chunk, false));
      data.remove_prefix(chunk.size());
    }
    return base::Status::Ok();
  }
  // The container's stdin stays open for the next attach: a client closing its side only detaches.
  base::Status CloseStdin() override { return base::Status::Ok(); }
  base::Status Resize(uint16_t width, uint16_t height) override { return client_->ResizeTty(process_, height, width); }

  base::Status PumpOutput(const OutputSink& sink) override {
    agentv1::OutputChunk chunk;
    while (reader_->Read(&chunk)) {
      if (chunk.data().empty()) {
        continue;
      }
      auto stream = chunk.stream() == agentv1::OutputChunk::STDERR ? OutputStream::kStderr : OutputStream::kStdout;
      if (!sink(stream, chunk.data())) {
        Abort();
        break;
      }
    }
    grpc::Status status = reader_->Finish();
    reader_.reset();
    if (aborted_) {
      return base::MakeError(base::ErrorCode::kCancelled, "detached");
    }
    if (!status.ok()) {
      return runtime::agent::FromGrpcStatus(status, "attached output of container " + process_.container_id());
    }
    return base::Status::Ok();
  }

  // Like kubelet: an attachment that ended because the container closed its output reports success.
  base::Result<StreamExit> Wait() override { return StreamExit{0}; }

  void Abort() override {
    if (!aborted_.exchange(true)) {
      context_.TryCancel();
    }
  }

 private:
  std::shared_ptr<runtime::agent::AgentClient> client_;
  agentv1::ProcessRef process_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<agentv1::OutputChunk>> reader_;
  std::atomic<bool> aborted_{false};
};

// One TCP connection to a port in the guest, carried by the agent's PortForward stream.
class AgentPortConnection : public PortConnection {
 public:
  explicit AgentPortConnection(std::shared_ptr<runtime::agent::AgentClient> client) : client_(std::move(client)) {}

  ~AgentPortConnection() override {
    Abort();
    if (stream_ && !finished_) {
      stream_->Finish();
    }
  }

  base::Status Open(int32_t port) {
    stream_ = client_->stub().PortForward(&context_);
    agentv1::PortForwardFrame first;
    first.set_port(static_cast<uint32_t>(port));
    if (!stream_->Write(first)) {
      return Finish("open port " + std::to_string(port));
    }
    port_ = port;
    return base::Status::Ok();
  }

  base::Status Write(std::string_view data) override {
    while (!data.empty()) {
      std::string_view chunk = data.substr(0, kStdinChunk);
      agentv1::PortForwardFrame frame;
      frame.set_data(chunk.data(), chunk.size());
      if (!stream_->Write(frame)) {
        return base::Unavailable("port " + std::to_string(port_) + " in the pod: the connection is closed");
      }
      data.remove_prefix(chunk.size());
    }
    return base::Status::Ok();
  }

  base::Status CloseWrite() override {
    if (!writes_done_.exchange(true)) {
      stream_->WritesDone();
    }
    return base::Status::Ok();
  }

  base::Status Pump(const std::function<bool(std::string_view)>& sink) override {
    agentv1::PortForwardFrame frame;
    while (stream_->Read(&frame)) {
      if (frame.eof()) {
        return base::Status::Ok();  // the pod side closed its output; the call ends once we half-close too
      }
      if (!frame.data().empty() && !sink(frame.data())) {
        Abort();
        return base::MakeError(base::ErrorCode::kCancelled, "the client went away");
      }
    }
    return Finish("port " + std::to_string(port_));
  }

  void Abort() override {
    if (!aborted_.exchange(true)) {
      context_.TryCancel();
    }
  }

 private:
  base::Status Finish(const std::string& what) {
    grpc::Status status = stream_->Finish();
    finished_ = true;
    if (aborted_) {
      return base::MakeError(base::ErrorCode::kCancelled, "port-forward aborted");
    }
    if (!status.ok()) {
      return base::Error(runtime::agent::FromGrpcStatus(status, what));
    }
    return base::Status::Ok();
  }

  std::shared_ptr<runtime::agent::AgentClient> client_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<agentv1::PortForwardFrame, agentv1::PortForwardFrame>> stream_;
  int32_t port_ = 0;
  std::atomic<bool> writes_done_{false};
  std::atomic<bool> aborted_{false};
  bool finished_ = false;
};

}  // namespace

base::Result<std::unique_ptr<StreamProcess>> AgentStreamRuntime::StartExec(const ExecRequest& request) {
  CHRYS_ASSIGN_OR_RETURN(runtime::SandboxStatus vm, sandboxes_.Inspect(request.sandbox_id));
  CHRYS_ASSIGN_OR_RETURN(std::shared_ptr<runtime::agent::AgentClient> client,
                         agents_.Get(request.sandbox_id, vm.agent));
  agentv1::ProcessSpec spec;
  for (const auto& arg : request.cmd) {
    spec.add_args(arg);
  }
  spec.set_tty(request.tty);
  spec.set_stdin(request.stdin);
  if (request.tty) {
    spec.set_tty_rows(24);
    spec.set_tty_columns(80);
  }
  agentv1::ProcessRef process;
  process.set_container_id(request.container_id);
  process.set_exec_id(NewExecId());
  auto pid = client->ExecProcess(request.container_id, process.exec_id(), spec);
  if (!pid.ok()) {
    return pid.error().Wrap("exec in container " + request.container_id);
  }
  return std::unique_ptr<StreamProcess>(new AgentExec(std::move(client), std::move(process)));
}

base::Result<std::unique_ptr<StreamProcess>> AgentStreamRuntime::Attach(const AttachRequest& request) {
  CHRYS_ASSIGN_OR_RETURN(runtime::SandboxStatus vm, sandboxes_.Inspect(request.sandbox_id));
  CHRYS_ASSIGN_OR_RETURN(std::shared_ptr<runtime::agent::AgentClient> client,
                         agents_.Get(request.sandbox_id, vm.agent));
  agentv1::ProcessRef process;
  process.set_container_id(request.container_id);
  CHRYS_ASSIGN_OR_RETURN(agentv1::ExitStatus state, client->ProcessStatus(process));
  if (state.exited()) {
    return base::FailedPrecondition("container " + request.container_id + " is not running (it exited with code " +
                                    std::to_string(state.exit_code()) + ")");
  }
  auto attach = std::make_unique<AgentAttach>(std::move(client), std::move(process));
  CHRYS_RETURN_IF_ERROR(attach->Open());
  return std::unique_ptr<StreamProcess>(std::move(attach));
}

base::Result<std::unique_ptr<PortConnection>> AgentStreamRuntime::DialPort(const PortForwardRequest& request,
                                                                           int32_t port) {
  if (port <= 0 || port > 65535) {
    return base::InvalidArgument("port " + std::to_string(port) + ": must be 1..65535");
  }
  CHRYS_ASSIGN_OR_RETURN(runtime::SandboxStatus vm, sandboxes_.Inspect(request.sandbox_id));
  CHRYS_ASSIGN_OR_RETURN(std::shared_ptr<runtime::agent::AgentClient> client,
                         agents_.Get(request.sandbox_id, vm.agent));
  auto connection = std::make_unique<AgentPortConnection>(std::move(client));
  CHRYS_RETURN_IF_ERROR(connection->Open(port));
  return std::unique_ptr<PortConnection>(std::move(connection));
}

}  // namespace chrys::cri::streaming
