#include "guest/agent/agent_service.h"

#include <sys/utsname.h>

#include <ctime>
#include <thread>

#include "base/file_util.h"
#include "guest/agent/guest_init.h"
#include "guest/agent/log.h"
#include "guest/agent/sandbox.h"
#include "guest/agent/validation.h"

#ifndef CHRYS_AGENT_VERSION
#define CHRYS_AGENT_VERSION "dev"
#endif

namespace chrys::guest {
namespace {

// How long a request that mounts a filesystem waits for the modules loaded after boot.
constexpr auto kFilesystemModulesWait = std::chrono::seconds(60);

using base::ErrorCode;

grpc::StatusCode ToGrpcCode(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInternal:
      return grpc::StatusCode::INTERNAL;
    case ErrorCode::kInvalidArgument:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case ErrorCode::kNotFound:
      return grpc::StatusCode::NOT_FOUND;
    case ErrorCode::kAlreadyExists:
      return grpc::StatusCode::ALREADY_EXISTS;
    case ErrorCode::kFailedPrecondition:
      return grpc::StatusCode::FAILED_PRECONDITION;
    case ErrorCode::kUnavailable:
      return grpc::StatusCode::UNAVAILABLE;
    case ErrorCode::kDeadlineExceeded:
      return grpc::StatusCode::DEADLINE_EXCEEDED;
    case ErrorCode::kResourceExhausted:
      return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case ErrorCode::kUnimplemented:
      return grpc::StatusCode::UNIMPLEMENTED;
    case ErrorCode::kPermissionDenied:
      return grpc::StatusCode::PERMISSION_DENIED;
    case ErrorCode::kAborted:
      return grpc::StatusCode::ABORTED;
    case ErrorCode::kCancelled:
      return grpc::StatusCode::CANCELLED;
  }
  return grpc::StatusCode::UNKNOWN;
}

grpc::Status FromStatus(const base::Status& s) {
  return s.ok() ? grpc::Status::OK : ToGrpc(s.error());
}

uint64_t NowBootMs() {
  timespec ts{};
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

uint64_t SelfRssBytes() {
  auto status = base::ReadFile("/proc/self/status", 64 << 10);
  if (!status.ok()) {
    return 0;
  }
  auto pos = status->find("VmRSS:");
  if (pos == std::string::npos) {
    return 0;
  }
  return std::strtoull(status->c_str() + pos + 6, nullptr, 10) * 1024;
}

// Runs a handler so that an unexpected exception (allocation failure, a library throwing) becomes an error
// reply with a log line instead of ending the agent (PID 1: that would panic the VM).
template <typename F>
grpc::Status Guarded(const char* method, F&& handler) {
  try {
    return handler();
  } catch (const std::exception& e) {
    LogWarn("%s: unexpected exception: %s", method, e.what());
    return grpc::Status(grpc::StatusCode::INTERNAL, std::string(method) + ": internal error: " + e.what());
  }
}

std::chrono::steady_clock::time_point DeadlineOf(grpc::ServerContext* ctx) {
  auto left = ctx->deadline() - std::chrono::system_clock::now();
  // No deadline from the client shows as a far future; cap waits at a day anyway.
  if (left > std::chrono::hours(24)) {
    left = std::chrono::hours(24);
  }
  return std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(left);
}

}  // namespace

grpc::Status ToGrpc(const base::Error& error) {
  return grpc::Status(ToGrpcCode(error.code()), error.message());
}

AgentService::AgentService(ContainerManager& containers, std::function<void()> power_off)
    : containers_(containers), power_off_(std::move(power_off)) {}

grpc::Status AgentService::Ping(grpc::ServerContext*, const v1::PingRequest*, v1::PingResponse* resp) {
  return Guarded("Ping", [&] {
    utsname uts{};
    ::uname(&uts);
    resp->set_agent_version(CHRYS_AGENT_VERSION);
    resp->set_kernel_release(uts.release);
    resp->set_ready(ready_);
    resp->set_sandbox_configured(sandbox_configured_);
    resp->set_uptime_ms(NowBootMs());
    resp->set_agent_rss_bytes(SelfRssBytes());
    resp->set_boot_to_ready_ms(boot_to_ready_ms_);
    return grpc::Status::OK;
  });
}

grpc::Status AgentService::SetupSandbox(grpc::ServerContext*, const v1::SetupSandboxRequest* req,
                                        v1::SetupSandboxResponse*) {
  return Guarded("SetupSandbox", [&] {
    auto valid = ValidateSetupSandbox(*req);
    if (!valid.ok()) {
      return ToGrpc(valid.error());
    }
    std::lock_guard lock(setup_mu_);
    auto applied = ApplySandboxSetup(*req);
    if (applied.ok()) {
      sandbox_configured_ = true;
    }
    return FromStatus(applied);
  });
}

grpc::Status AgentService::MountShare(grpc::ServerContext*, const v1::MountShareRequest* req,
                                      v1::MountShareResponse* resp) {
  return Guarded("MountShare", [&] {
    auto valid = ValidateMountShare(*req);
    if (!valid.ok()) {
      return ToGrpc(valid.error());
    }
    if (auto modules = WaitForDeferredModules(kFilesystemModulesWait); !modules.ok()) {
      return ToGrpc(modules.error());
    }
    auto path = containers_.storage().MountShare(req->tag(), req->name(), req->read_only());
    if (!path.ok()) {
      return ToGrpc(path.error());
    }
    resp->set_guest_path(*path);
    return grpc::Status::OK;
  });
}

grpc::Status AgentService::CreateContainer(grpc::ServerContext*, const v1::CreateContainerRequest* req,
                                           v1::CreateContainerResponse* resp) {
  return Guarded("CreateContainer", [&] {
    auto valid = ValidateContainerConfig(req->config());
    if (!valid.ok()) {
      return ToGrpc(valid.error());
    }
    if (auto modules = WaitForDeferredModules(kFilesystemModulesWait); !modules.ok()) {
      return ToGrpc(modules.error());
    }
    auto pid = containers_.Create(req->config());
    if (!pid.ok()) {
      LogWarn("CreateContainer %s: %s", req->config().id().c_str(), pid.error().message().c_str());
      return ToGrpc(pid.error());
    }
    resp->set_pid(*pid);
    return grpc::Status::OK;
  });
}

grpc::Status AgentService::StartContainer(grpc::ServerContext*, const v1::StartContainerRequest* req,
                                          v1::StartContainerResponse*) {
  return Guarded("StartContainer", [&] {
    auto valid = ValidateId(req->container_id(), "container_id");
    if (!valid.ok()) {
      return ToGrpc(valid.error());
    }
    return FromStatus(containers_.Start(req->container_id()));
  });
}

grpc::Status AgentService::SignalProcess(grpc::ServerContext*, const v1::SignalProcessRequest* req,
                                         v1::SignalProcessResponse*) {
  return Guarded("SignalProcess", [&] {
    auto valid = ValidateProcessRef(req->process(), "process");
    if (valid.ok()) {
      valid = ValidateSignal(req->signal());
    }
    if (!valid.ok()) {
      return ToGrpc(valid.error());
    }
    return FromStatus(containers_.Signal(req->process(), req->signal()));
  });
}

grpc::Status AgentService::WaitProcess(grpc::ServerContext* ctx, const v1::WaitProcessRequest* req,
                                       v1::WaitProcessResponse* resp) {
  return Guarded("WaitProcess", [&] {
    auto valid = ValidateProcessRef(req->process(), "process");
    if (!valid.ok()) {
      return ToGrpc(valid.error());
    }
    auto status =
        containers_.Wait(req->process(), req->no_block(), DeadlineOf(ctx), [ctx] { return ctx->IsCancelled(); });
    if (!status.ok()) {
      return ToGrpc(status.error());
    }
    *resp->mutable_status() = *status;
    return grpc::Status::OK;
  });
}

grpc::Status AgentService::DeleteContainer(grpc::ServerContext*, const v1::DeleteContainerRequest* req,
                                           v1::DeleteContainerResponse*) {
  return Guarded("DeleteContainer", [&] {
    auto valid = ValidateId(req->container_id(), "container_id");
    if (!valid.ok()) {
      return ToGrpc(valid.error());
    }
    return FromStatus(containers_.Delete(req->container_id(), req->force()));
  });
}

grpc::Status AgentService::ListContainers(grpc::ServerContext*, const v1::ListContainersRequest*,
                                          v1::ListContainersResponse* resp) {
  return Guarded("ListContainers", [&] {
    for (auto& info : containers_.List()) {
      *resp->add_containers() = std::move(info);
    }
    return grpc::Status::OK;
  });
}

grpc::Status AgentService::ExecProcess(grpc::ServerContext*, const v1::ExecProcessRequest* req,
                                       v1::ExecProcessResponse* resp) {
  return Guarded("ExecProcess", [&] {
    auto valid = ValidateId(req->container_id(), "container_id");
    if (valid.ok()) {
      valid = ValidateId(req->exec_id(), "exec_id");
    }
    if (valid.ok()) {
      valid = ValidateProcessSpec(req->process(), "process");
    }
    if (!valid.ok()) {
      return ToGrpc(valid.error());
    }
    auto pid = containers_.Exec(req->container_id(), req->exec_id(), req->process());
    if (!pid.ok()) {
      return ToGrpc(pid.error());
    }
    resp->set_pid(*pid);
    return grpc::Status::OK;
  });
}

grpc::Status AgentService::WriteStdin(grpc::ServerContext*, const v1::WriteStdinRequest* req, v1::WriteStdinResponse*) {
  return Guarded("WriteStdin", [&] {
    auto valid = ValidateWriteStdin(*req);
    if (!valid.ok()) {
      return ToGrpc(valid.error());
    }
    return FromStatus(containers_.WriteStdin(req->process(), req->data(), req->eof()));
  });
}

grpc::Status AgentService::ResizeTty(grpc::ServerContext*, const v1::ResizeTtyRequest* req, v1::ResizeTtyResponse*) {
  return Guarded("ResizeTty", [&] {
    auto valid = ValidateProcessRef(req->process(), "process");
    if (!valid.ok()) {
      return ToGrpc(valid.error());
    }
    if (req->rows() == 0 || req->columns() == 0 || req->rows() > 10000 || req->columns() > 10000) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "rows, columns: must be 1..10000");
    }
    return FromStatus(containers_.Resize(req->process(), req->rows(), req->columns()));
  });
}

grpc::Status AgentService::ReadOutput(grpc::ServerContext* ctx, const v1::ReadOutputRequest* req,
                                      grpc::ServerWriter<v1::OutputChunk>* writer) {
  return Guarded("ReadOutput", [&] {
    auto valid = ValidateProcessRef(req->process(), "process");
    if (!valid.ok()) {
      return ToGrpc(valid.error());
    }
    auto io = containers_.Io(req->process());
    if (!io.ok()) {
      return ToGrpc(io.error());
    }
    std::shared_ptr<ProcessIo> p = *io;
    uint64_t generation = p->NewReader();
    constexpr size_t kChunk = 32 << 10;
    std::string data;
    bool out_open = true;
    bool err_open = true;
    while (out_open || err_open) {
      if (ctx->IsCancelled()) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "reader went away");
      }
      if (!p->IsCurrentReader(generation)) {
        return grpc::Status(grpc::StatusCode::ABORTED, "another reader took over this output");
      }
      bool waited = false;
      for (auto [buffer, stream, open] : {std::tuple{&p->stdout_buffer(), v1::OutputChunk::STDOUT, &out_open},
                                          std::tuple{&p->stderr_buffer(), v1::OutputChunk::STDERR, &err_open}}) {
        if (!*open) {
          continue;
        }
        // Wait (briefly) only on the first open stream; the other is checked right after without waiting.
        auto wait = waited ? std::chrono::milliseconds(0) : std::chrono::milliseconds(100);
        waited = true;
        *open = buffer->Take(data, kChunk, wait);
        if (data.empty()) {
          continue;
        }
        v1::OutputChunk chunk;
        chunk.set_stream(stream);
        chunk.set_data(data);
        if (!writer->Write(chunk)) {
          buffer->PutBack(data);
          return grpc::Status(grpc::StatusCode::CANCELLED, "reader went away");
        }
      }
    }
    return grpc::Status::OK;
  });
}

grpc::Status AgentService::ContainerStats(grpc::ServerContext*, const v1::ContainerStatsRequest* req,
                                          v1::ContainerStatsResponse* resp) {
  return Guarded("ContainerStats", [&] {
    auto valid = ValidateId(req->container_id(), "container_id");
    if (!valid.ok()) {
      return ToGrpc(valid.error());
    }
    auto stats = containers_.Stats(req->container_id());
    if (!stats.ok()) {
      return ToGrpc(stats.error());
    }
    *resp = *stats;
    return grpc::Status::OK;
  });
}

grpc::Status AgentService::SandboxStats(grpc::ServerContext*, const v1::SandboxStatsRequest*,
                                        v1::SandboxStatsResponse* resp) {
  return Guarded("SandboxStats", [&] {
    auto stats = containers_.SandboxStats();
    if (!stats.ok()) {
      return ToGrpc(stats.error());
    }
    *resp = *stats;
    return grpc::Status::OK;
  });
}

grpc::Status AgentService::WatchEvents(grpc::ServerContext* ctx, const v1::WatchEventsRequest*,
                                       grpc::ServerWriter<v1::Event>* writer) {
  return Guarded("WatchEvents", [&] {
    auto sub = containers_.events().Subscribe();
    struct Unsub {
      EventHub& hub;
      std::shared_ptr<EventHub::Subscription> sub;
      ~Unsub() { hub.Unsubscribe(sub); }
    } unsub{containers_.events(), sub};
    v1::Event event;
    while (!ctx->IsCancelled()) {
      if (sub->Next(event, std::chrono::milliseconds(200)) && !writer->Write(event)) {
        break;
      }
    }
    return grpc::Status(grpc::StatusCode::CANCELLED, "watcher went away");
  });
}

grpc::Status AgentService::Shutdown(grpc::ServerContext*, const v1::ShutdownRequest* req, v1::ShutdownResponse*) {
  return Guarded("Shutdown", [&] {
    uint32_t grace = req->grace_period_ms() == 0 ? 10000 : req->grace_period_ms();
    if (grace > 60000) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "grace_period_ms: at most 60000");
    }
    if (shutting_down_.exchange(true)) {
      return grpc::Status::OK;
    }
    LogInfo("shutdown requested, grace %u ms", grace);
    containers_.StopAll(std::chrono::milliseconds(grace));
    // Power off a moment after replying, so the host sees the answer.
    std::thread([off = power_off_] {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      off();
    }).detach();
    return grpc::Status::OK;
  });
}

}  // namespace chrys::guest
