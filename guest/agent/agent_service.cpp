#include "guest/agent/agent_service.h"

#include <fcntl.h>
#include <linux/random.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/utsname.h>

#include <ctime>
#include <functional>
#include <thread>

#include "base/file_util.h"
#include "base/phase_timer.h"
#include "guest/agent/free_memory.h"
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
constexpr auto kDeferredModulesWait = std::chrono::seconds(60);
// How often a streaming RPC with nothing to send checks whether its reader went away (gRPC's sync API has no
// cancellation callback). Long: every such wake-up costs an idle VM CPU, and news wakes the streams at once; a
// reader that left only keeps a handler thread this long.
constexpr auto kIdleReaderCheck = std::chrono::seconds(10);

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
    resp->set_settled(ContainerSupportSettled());
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
    // The NICs appear when virtio_net (a deferred module, loaded first of them) has loaded: the filesystems that
    // load after it are not needed here.
    base::PhaseTimer phases;
    if (auto modules = WaitForModule("virtio_net", kDeferredModulesWait); !modules.ok()) {
      return ToGrpc(modules.error());
    }
    phases.End("virtio_net wait");
    std::lock_guard lock(setup_mu_);
    auto applied = ApplySandboxSetup(*req);
    if (applied.ok()) {
      sandbox_configured_ = true;
      // Phase times on the console, as for containers: where a pod's start goes under emulation.
      phases.End("configuration");
      LogInfo("sandbox set up (%s)", phases.summary().c_str());
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
    if (auto modules = WaitForModule("virtiofs", kDeferredModulesWait); !modules.ok()) {
      return ToGrpc(modules.error());
    }
    auto loaded = std::chrono::steady_clock::now();
    auto path = containers_.storage().MountShare(req->tag(), req->name(), req->read_only());
    if (!path.ok()) {
      return ToGrpc(path.error());
    }
    LogInfo(
        "share %s mounted in %lld ms", req->tag().c_str(),
        static_cast<long long>(
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - loaded).count()));
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
    if (auto modules = WaitForDeferredModules(kDeferredModulesWait); !modules.ok()) {
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
      // Drain both streams, then sleep until either has news. The timeout only bounds how long a cancelled
      // reader lingers (gRPC's sync API has no cancellation callback).
      uint64_t seen = p->activity().Seen();
      bool sent = false;
      for (auto [buffer, stream, open] : {std::tuple{&p->stdout_buffer(), v1::OutputChunk::STDOUT, &out_open},
                                          std::tuple{&p->stderr_buffer(), v1::OutputChunk::STDERR, &err_open}}) {
        if (!*open) {
          continue;
        }
        *open = buffer->Take(data, kChunk, std::chrono::milliseconds(0));
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
        sent = true;
      }
      if (!sent && (out_open || err_open)) {
        p->activity().WaitAfter(seen, kIdleReaderCheck);
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
      if (sub->Next(event, kIdleReaderCheck) && !writer->Write(event)) {
        break;
      }
    }
    return grpc::Status(grpc::StatusCode::CANCELLED, "watcher went away");
  });
}

grpc::Status AgentService::Resume(grpc::ServerContext*, const v1::ResumeRequest* req, v1::ResumeResponse* resp) {
  return Guarded("Resume", [&] {
    if (auto valid = ValidateResume(*req); !valid.ok()) {
      return ToGrpc(valid.error());
    }
    timespec before{};
    ::clock_gettime(CLOCK_REALTIME, &before);
    timespec host{static_cast<time_t>(req->unix_time_ns() / 1000000000),
                  static_cast<long>(req->unix_time_ns() % 1000000000)};
    if (::clock_settime(CLOCK_REALTIME, &host) != 0) {
      return ToGrpc(base::SystemError("setting the guest clock"));
    }
    // Credit the host's bytes to the input pool, then make the kernel rekey its generator from it now rather than
    // at its next scheduled reseed: until then every clone would draw the template's stream.
    base::UniqueFd random(::open("/dev/urandom", O_WRONLY | O_CLOEXEC));
    if (!random.valid()) {
      return ToGrpc(base::SystemError("opening /dev/urandom"));
    }
    std::vector<uint32_t> info_words(2 + (req->entropy().size() + 3) / 4, 0);
    auto* info = reinterpret_cast<rand_pool_info*>(info_words.data());
    info->entropy_count = static_cast<int>(req->entropy().size() * 8);
    info->buf_size = static_cast<int>(req->entropy().size());
    std::memcpy(info->buf, req->entropy().data(), req->entropy().size());
    if (::ioctl(random.get(), RNDADDENTROPY, info) != 0) {
      return ToGrpc(base::SystemError("adding the host's entropy (RNDADDENTROPY)"));
    }
    if (::ioctl(random.get(), RNDRESEEDCRNG) != 0) {
      return ToGrpc(base::SystemError("reseeding the guest's random generator (RNDRESEEDCRNG)"));
    }
    int64_t step = req->unix_time_ns() - (static_cast<int64_t>(before.tv_sec) * 1000000000 + before.tv_nsec);
    resp->set_clock_step_ns(step);
    LogInfo("resumed from a template: clock stepped %lld ms, random generator reseeded",
            static_cast<long long>(step / 1000000));
    return grpc::Status::OK;
  });
}

grpc::Status AgentService::PrepareTemplate(grpc::ServerContext*, const v1::PrepareTemplateRequest* req,
                                           v1::PrepareTemplateResponse* resp) {
  return Guarded("PrepareTemplate", [&] {
    if (auto valid = ValidatePrepareTemplate(*req); !valid.ok()) {
      return ToGrpc(valid.error());
    }
    uint64_t keep = (req->keep_free_mib() == 0 ? 16 : req->keep_free_mib()) * (uint64_t{1} << 20);
    base::PhaseTimer phases;
    auto zeroed = ZeroFreeMemory(keep, ReadMemFree);
    if (!zeroed.ok()) {
      return ToGrpc(zeroed.error());
    }
    phases.End("zero");
    resp->set_zeroed_bytes(*zeroed);
    LogInfo("template: %llu MiB of free memory zeroed (%s)", static_cast<unsigned long long>(*zeroed >> 20),
            phases.summary().c_str());
    return grpc::Status::OK;
  });
}

grpc::Status AgentService::OnlineResources(grpc::ServerContext*, const v1::OnlineResourcesRequest* req,
                                           v1::OnlineResourcesResponse* resp) {
  return Guarded("OnlineResources", [&] {
    if (auto valid = ValidateOnlineResources(*req); !valid.ok()) {
      return ToGrpc(valid.error());
    }
    uint32_t timeout = req->timeout_ms() == 0 ? 10000 : req->timeout_ms();
    std::lock_guard lock(online_mu_);
    base::PhaseTimer phases;
    auto online = onliner_.WaitOnline(static_cast<int>(req->vcpus()), static_cast<int>(req->added_memory_mib()),
                                      std::chrono::milliseconds(timeout));
    if (!online.ok()) {
      return ToGrpc(online.error());
    }
    phases.End("online");
    resp->set_online_vcpus(static_cast<uint32_t>(online->vcpus));
    uint64_t mem_kib = 0;
    if (auto meminfo = base::ReadFile("/proc/meminfo", 1 << 16); meminfo.ok()) {
      mem_kib = CgroupKey(*meminfo, "MemTotal:");  // the same key reader SandboxStats uses
    }
    resp->set_memory_total_kib(mem_kib);
    LogInfo("%d vCPUs and %d MiB of hot-plugged memory online, MemTotal %llu KiB (%s)", online->vcpus,
            online->added_memory_mib, static_cast<unsigned long long>(mem_kib), phases.summary().c_str());
    return grpc::Status::OK;
  });
}

grpc::Status AgentService::Shutdown(grpc::ServerContext*, const v1::ShutdownRequest* req, v1::ShutdownResponse*) {
  return Guarded("Shutdown", [&] {
    uint32_t grace = req->force() ? 0 : req->grace_period_ms() == 0 ? 10000 : req->grace_period_ms();
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

namespace chrys::guest {
namespace {

constexpr size_t kAttachChunk = 32 << 10;
constexpr size_t kAttachBacklog = 1 << 20;
// What one port-forward read takes: the coalescing mark, so that a bulk read fills the frame exactly. 256 KiB, not
// 64: each frame costs a poll, a gRPC write and the bridge's splices in the guest, whose one vCPU bounds a
// download; the bigger frames took a 32 MiB download from 0.83-0.96x to 0.97-1.09x of a direct TCP connection.
constexpr size_t kForwardChunk = 256 << 10;
constexpr size_t kForwardMaxFrame = 64 << 10;
constexpr int kMaxPortForwards = 64;

// Connects to `port` on the guest's loopback, IPv4 first, then IPv6 (a server may listen on either only).
base::Result<base::UniqueFd> DialLoopback(uint32_t port) {
  int last_errno = 0;
  for (int family : {AF_INET, AF_INET6}) {
    base::UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
      last_errno = errno;
      continue;
    }
    sockaddr_storage addr{};
    socklen_t len = 0;
    if (family == AF_INET) {
      auto* in = reinterpret_cast<sockaddr_in*>(&addr);
      in->sin_family = AF_INET;
      in->sin_port = htons(static_cast<uint16_t>(port));
      in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      len = sizeof(sockaddr_in);
    } else {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&addr);
      in6->sin6_family = AF_INET6;
      in6->sin6_port = htons(static_cast<uint16_t>(port));
      in6->sin6_addr = in6addr_loopback;
      len = sizeof(sockaddr_in6);
    }
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0) {
      int one = 1;
      ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      return fd;
    }
    last_errno = errno;
  }
  return base::SystemError("connect to port " + std::to_string(port) + " on 127.0.0.1 or [::1] in the pod", last_errno);
}

// Batches a fast stream's small writes into large frames. A server writing in small pieces (stdio's 4 KiB
// buffers) would otherwise cost one gRPC message, one channel crossing and one wakeup per piece, and that
// per-piece work is what bounds port-forward throughput on a busy (or emulated) guest vCPU. Once reads come
// close together (within kBulkGapMs), the kernel wakes us only when kCoalesceBytes are queued (SO_RCVLOWAT);
// every kCoalesceWaitMs we look whether the queue still grows: while it does (and for at most kMaxHoldMs) we
// keep collecting, and as soon as a wait adds nothing, what is queued goes out. A wait that finds nothing
// queued ends bulk mode. A stream that is quiet between messages (request/response traffic) stays at a 1-byte
// mark and sees every byte at once; a bulk stream's last bytes wait at most kCoalesceWaitMs after they came.
class StreamCoalescer {
 public:
  static constexpr int kCoalesceBytes = static_cast<int>(kForwardChunk);
  static constexpr int kCoalesceWaitMs = 2;
  static constexpr int kMaxHoldMs = 20;
  static constexpr int kBulkGapMs = 5;
  static constexpr int kIdlePollMs = 200;

  explicit StreamCoalescer(int fd) : fd_(fd) {}

  int poll_timeout_ms() const { return bulk_ ? kCoalesceWaitMs : kIdlePollMs; }

  // The poll timed out: true when the data queued below the mark should be read and sent now.
  bool TimedOut() {
    if (!bulk_) {
      return false;
    }
    int queued = 0;
    if (::ioctl(fd_, FIONREAD, &queued) != 0 || queued <= 0) {
      return true;  // nothing came: the read finds nothing and ends bulk mode
    }
    auto now = std::chrono::steady_clock::now();
    if (held_bytes_ == 0) {
      holding_since_ = now;
    }
    bool growing = queued > held_bytes_;
    held_bytes_ = queued;
    return !growing || now - holding_since_ >= std::chrono::milliseconds(kMaxHoldMs);
  }

  // A read returned `n` bytes, or nothing (-1 with EAGAIN) after a bulk wait.
  void Received(ssize_t n) {
    auto now = std::chrono::steady_clock::now();
    held_bytes_ = 0;
    if (n <= 0) {
      SetBulk(false);  // the stream paused: back to byte-at-once
    } else if (now - last_read_ < std::chrono::milliseconds(kBulkGapMs)) {
      SetBulk(true);
    }
    last_read_ = now;
  }

 private:
  void SetBulk(bool bulk) {
    if (bulk == bulk_) {
      return;
    }
    int mark = bulk ? kCoalesceBytes : 1;
    if (::setsockopt(fd_, SOL_SOCKET, SO_RCVLOWAT, &mark, sizeof(mark)) == 0) {
      bulk_ = bulk;
    }
  }

  int fd_;
  bool bulk_ = false;
  int held_bytes_ = 0;  // queued at the last wait of the current hold (0: not holding)
  std::chrono::steady_clock::time_point holding_since_{};
  std::chrono::steady_clock::time_point last_read_{};
};

// Writes all of `data` to a blocking socket, giving up when `stop()` says so (polls in short slices).
bool WriteAllTo(int fd, std::string_view data, const std::function<bool()>& stop) {
  while (!data.empty()) {
    if (stop()) {
      return false;
    }
    pollfd p{fd, POLLOUT, 0};
    int r = ::poll(&p, 1, 200);
    if (r < 0 && errno != EINTR) {
      return false;
    }
    if (r <= 0) {
      continue;
    }
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      continue;
    }
    if (n <= 0) {
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

grpc::Status AgentService::AttachOutput(grpc::ServerContext* ctx, const v1::AttachOutputRequest* req,
                                        grpc::ServerWriter<v1::OutputChunk>* writer) {
  return Guarded("AttachOutput", [&] {
    auto valid = ValidateProcessRef(req->process(), "process");
    if (!valid.ok()) {
      return ToGrpc(valid.error());
    }
    auto io = containers_.Io(req->process());
    if (!io.ok()) {
      return ToGrpc(io.error());
    }
    std::shared_ptr<ProcessIo> p = *io;
    struct Tapped {
      OutputBuffer& buffer;
      std::shared_ptr<OutputTap> tap;
      ~Tapped() { buffer.Untap(tap); }
    };
    Tapped out{p->stdout_buffer(), p->stdout_buffer().Tap(kAttachBacklog)};
    Tapped err{p->stderr_buffer(), p->stderr_buffer().Tap(kAttachBacklog)};
    // An empty first message tells the host the taps are in place (output from now on is seen).
    v1::OutputChunk hello;
    if (!writer->Write(hello)) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "reader went away");
    }
    std::string data;
    bool out_open = true;
    bool err_open = true;
    while (out_open || err_open) {
      if (ctx->IsCancelled()) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "reader went away");
      }
      bool waited = false;
      for (auto [tapped, stream, open] : {std::tuple{&out, v1::OutputChunk::STDOUT, &out_open},
                                          std::tuple{&err, v1::OutputChunk::STDERR, &err_open}}) {
        if (!*open) {
          continue;
        }
        auto wait = waited ? std::chrono::milliseconds(0) : std::chrono::milliseconds(100);
        waited = true;
        *open = tapped->tap->Take(data, kAttachChunk, wait);
        if (!*open && tapped->tap->overflowed()) {
          return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                              "the attached reader fell more than 1 MiB behind the process's output");
        }
        if (data.empty()) {
          continue;
        }
        v1::OutputChunk chunk;
        chunk.set_stream(stream);
        chunk.set_data(data);
        if (!writer->Write(chunk)) {
          return grpc::Status(grpc::StatusCode::CANCELLED, "reader went away");
        }
      }
    }
    return grpc::Status::OK;
  });
}

grpc::Status AgentService::PortForward(grpc::ServerContext* ctx,
                                       grpc::ServerReaderWriter<v1::PortForwardFrame, v1::PortForwardFrame>* stream) {
  return Guarded("PortForward", [&] {
    struct Slot {
      std::atomic<int>& count;
      ~Slot() { --count; }
    } slot{port_forwards_};
    if (++port_forwards_ > kMaxPortForwards) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "more than " + std::to_string(kMaxPortForwards) + " port-forward connections open");
    }
    v1::PortForwardFrame frame;
    if (!stream->Read(&frame)) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "the host went away before naming a port");
    }
    if (frame.port() == 0 || frame.port() > 65535) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "port: must be 1..65535");
    }
    const uint32_t port = frame.port();
    auto dialled = DialLoopback(port);
    if (!dialled.ok()) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, dialled.error().message());
    }
    base::UniqueFd socket = std::move(*dialled);
    std::atomic<bool> stop{false};
    auto stopped = [&] { return stop.load() || ctx->IsCancelled(); };

    // Guest → host: read the socket until EOF, then tell the host with an eof frame.
    std::atomic<bool> pod_output_done{false};
    uint64_t frames_out = 0;
    uint64_t bytes_out = 0;
    std::thread pump([&] {
      // One frame for the whole stream, read into directly: no copy between the socket and the message. Its
      // data is sized back to a full chunk after each send, which only touches the tail a short read left.
      v1::PortForwardFrame out;
      std::string& data = *out.mutable_data();
      data.resize(kForwardChunk);
      StreamCoalescer coalescer(socket.get());
      while (!stopped()) {
        pollfd p{socket.get(), POLLIN, 0};
        int r = ::poll(&p, 1, coalescer.poll_timeout_ms());
        if (r < 0 && errno != EINTR) {
          break;
        }
        if (r == 0 && !coalescer.TimedOut()) {
          continue;  // idle; a bulk stream that paused falls through to flush what it holds
        }
        if (r < 0) {
          continue;
        }
        ssize_t n = ::recv(socket.get(), data.data(), kForwardChunk, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
          coalescer.Received(-1);
          continue;
        }
        coalescer.Received(n);
        if (n <= 0) {
          out.Clear();
          out.set_eof(true);
          stream->Write(out);
          break;
        }
        data.resize(static_cast<size_t>(n));
        ++frames_out;
        bytes_out += static_cast<uint64_t>(n);
        if (!stream->Write(out)) {
          stop = true;
          break;
        }
        data.resize(kForwardChunk);
      }
      pod_output_done = true;
    });

    // Host → guest: data until the host half-closes (WritesDone), then shut our write side down.
    grpc::Status result = grpc::Status::OK;
    while (stream->Read(&frame)) {
      if (frame.data().size() > kForwardMaxFrame) {
        result = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "data: at most 64 KiB per frame");
        stop = true;
        break;
      }
      if (!frame.data().empty() && !WriteAllTo(socket.get(), frame.data(), stopped)) {
        // The guest side closed its input; what the host still sends is dropped, its output may continue.
        break;
      }
    }
    if (ctx->IsCancelled()) {
      stop = true;
    }
    ::shutdown(socket.get(), SHUT_WR);
    pump.join();
    LogInfo("port-forward to port %u closed: %llu bytes out in %llu frames", port,
            static_cast<unsigned long long>(bytes_out), static_cast<unsigned long long>(frames_out));
    if (ctx->IsCancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "the host went away");
    }
    return result;
  });
}

grpc::Status AgentService::UpdateContainerResources(grpc::ServerContext*,
                                                    const v1::UpdateContainerResourcesRequest* req,
                                                    v1::UpdateContainerResourcesResponse* resp) {
  return Guarded("UpdateContainerResources", [&] {
    auto valid = ValidateUpdateResources(*req);
    if (!valid.ok()) {
      return ToGrpc(valid.error());
    }
    auto now = containers_.UpdateResources(req->container_id(), req->resources());
    if (!now.ok()) {
      LogWarn("UpdateContainerResources %s: %s", req->container_id().c_str(), now.error().message().c_str());
      return ToGrpc(now.error());
    }
    *resp->mutable_resources() = *now;
    return grpc::Status::OK;
  });
}

}  // namespace chrys::guest
