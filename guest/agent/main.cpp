// chrys-agent: the guest agent. As PID 1 of a microVM it sets up the guest and serves chrys.agent.v1 to
// the host over vsock or virtio-serial. `--socket PATH` serves on a unix socket instead (development, tests).
#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>
#include <signal.h>
#include <sys/reboot.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <thread>

#include "guest/agent/agent_service.h"
#include "guest/agent/channel.h"
#include "guest/agent/child_reaper.h"
#include "guest/agent/container_manager.h"
#include "guest/agent/guest_init.h"
#include "guest/agent/hal_mode.h"
#ifdef CHRYS_AGENT_HAL
#include "guest/agent/image_pull_service.h"
#endif
#include "guest/agent/log.h"
#include "guest/agent/validation.h"

namespace {

using namespace chrys::guest;

constexpr uint32_t kVsockPort = 1024;
constexpr const char* kPortName = "chrys.agent";

uint64_t BootMs() {
  timespec ts{};
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

[[noreturn]] void Halt(const char* why) {
  LogWarn("fatal: %s; powering off", why);
  ::sync();
  ::reboot(RB_POWER_OFF);
  ::_exit(1);
}

void PowerOff() {
  LogInfo("powering off");
  ::sync();
  if (::getpid() == 1) {
    ::reboot(RB_POWER_OFF);
  }
  ::_exit(0);
}

// Serves whichever host channels exist; the virtio-serial port may show up a little after the module loads.
void StartChannels(const std::string& local_socket) {
  bool vsock = HasVirtioVsock();
  if (vsock) {
    auto s = ServeVsock(local_socket, kVsockPort);
    if (s.ok()) {
      LogInfo("listening on vsock port %u", kVsockPort);
    } else {
      LogWarn("vsock: %s", s.error().message().c_str());
    }
  }
  auto port = FindVirtioPort(kPortName, std::chrono::milliseconds(vsock ? 200 : 5000));
  if (port.ok()) {
    auto s = ServeVirtioSerial(local_socket, *port);
    if (!s.ok()) {
      LogWarn("virtio-serial: %s", s.error().message().c_str());
    } else {
      LogInfo("serving on virtio-serial port %s", port->c_str());
    }
    return;
  }
  if (!vsock) {
    // Keep looking: a VMM may add the port later; without any channel the agent is useless but harmless.
    std::thread([local_socket] {
      for (;;) {
        auto later = FindVirtioPort(kPortName, std::chrono::seconds(60));
        if (later.ok() && ServeVirtioSerial(local_socket, *later).ok()) {
          LogInfo("serving on virtio-serial port %s", later->c_str());
          return;
        }
      }
    }).detach();
    LogWarn("no vsock device and no virtio-serial port '%s' yet", kPortName);
  }
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  std::string socket_path;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
      socket_path = argv[++i];
    }
  }
  bool pid1 = ::getpid() == 1;
  GuestHardware hardware;
  // HAL mode (confidential pods): the initramfs mounted and loaded everything; agent.json configures the pod.
  bool hal = HalModeRequested(argc, argv);
  if (pid1 && !hal) {
    LogInfo("started at %llu ms of guest uptime", static_cast<unsigned long long>(BootMs()));
    ::setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
    auto mounted = MountBaseFilesystems();
    if (!mounted.ok()) {
      Halt(mounted.error().message().c_str());
    }
    // Still single-threaded here, as entering a time namespace requires.
    auto ahead = RunMonotonicClockAhead();
    if (!ahead.ok()) {
      LogWarn("%s", ahead.error().message().c_str());
    }
  }
  if (pid1) {
    auto quiet = QuietIdleKernel();
    if (!quiet.ok()) {
      LogWarn("%s", quiet.error().message().c_str());
    }
  }
  auto reaper = ChildReaper::Start();
  if (!reaper.ok()) {
    if (pid1) {
      Halt(reaper.error().message().c_str());
    }
    LogWarn("%s", reaper.error().message().c_str());
    return 1;
  }
  if (hal) {
    auto configured = StartHalMode();
    if (!configured.ok() && pid1) {
      Halt(configured.error().message().c_str());
    }
  }
  if (pid1 && !hal) {
    // Modules load on their own thread (after SIGCHLD is blocked: it inherits the mask) while this one builds the
    // gRPC server: under TCG each takes ~100 ms of emulated time, and the guest has two vCPUs.
    hardware = ProbeGuestHardware();
    StartModuleLoader(hardware);
    StartContainerSupport();
  }

  ContainerManager containers;
  AgentService service(containers, PowerOff);
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(static_cast<int>(kMaxRequestBytes));
  builder.SetMaxSendMessageSize(4 << 20);
  // Few threads and one completion queue: the agent stays small while idle.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::NUM_CQS, 1);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, 1);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 2);
  grpc::ResourceQuota quota("chrys-agent");
  quota.SetMaxThreads(256);
  builder.SetResourceQuota(quota);
  if (socket_path.empty() && pid1) {
    // The host channels are bridged to this guest-local socket, one connection per host session.
    socket_path = "/run/chrys-agent.sock";
  }
  if (!socket_path.empty()) {
    ::unlink(socket_path.c_str());
    builder.AddListeningPort("unix:" + socket_path, grpc::InsecureServerCredentials());
  }
  builder.RegisterService(&service);
#ifdef CHRYS_AGENT_HAL
  // Confidential pods pull their images inside the guest, onto the encrypted /cocos.
  GuestImageService guest_images;
  builder.RegisterService(&guest_images);
#endif
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    if (pid1) {
      Halt("gRPC server did not start");
    }
    LogWarn("gRPC server did not start");
    return 1;
  }
  // Few console lines until ready: under TCG every character on the emulated UART costs ~35 us.
  uint64_t server_up_ms = BootMs();
  if (pid1) {
    // The host channel's driver (virtio_console or vsock) is a boot module.
    if (auto loaded = WaitForBootModules(std::chrono::seconds(60)); !loaded.ok()) {
      LogWarn("%s", loaded.error().message().c_str());
    }
    service.SetReady(BootMs());
    StartChannels(socket_path);
  } else {
    service.SetReady(BootMs());
  }
  LogInfo("ready after %llu ms of guest uptime (gRPC server up at %llu ms)", static_cast<unsigned long long>(BootMs()),
          static_cast<unsigned long long>(server_up_ms));
  server->Wait();
  if (pid1) {
    Halt("gRPC server stopped");
  }
  return 0;
}
