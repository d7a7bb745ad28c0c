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
  return base::MakeError(base::ErrorCode::kUnimplemented,
                         "attach to container " + request.container_id + " is not implemented by this chrysd yet");
}

base::Result<std::unique_ptr<PortConnection>> AgentStreamRuntime::DialPort(const PortForwardRequest& request,
                                                                           int32_t port) {
  return base::MakeError(base::ErrorCode::kUnimplemented, "port-forward to port " + std::to_string(port) + " of pod " +
                                                              request.sandbox_id + " is not implemented yet");
}

}  // namespace chrys::cri::streaming
