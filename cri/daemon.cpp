#include "cri/daemon.h"

#include <fcntl.h>
#include <fmt/ranges.h>
#include <grpc/grpc.h>
#include <grpcpp/server_builder.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>

#include "base/file_util.h"
#include "cri/confidential_pods.h"
#include "cri/logging.h"
#include "cri/readiness.h"
#include "cri/server_options.h"
#include "cri/shared_dir.h"
#include "runtime/cgroup.h"
#include "runtime/cloud_hypervisor.h"
#include "runtime/confidential/cvm_sandbox.h"
#include "runtime/guest_manifest.h"
#include "runtime/qemu.h"

namespace chrys::cri {
namespace {

// True when something accepts connections on the unix socket at `path`.
bool SocketIsLive(const std::string& path) {
  base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    return false;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

}  // namespace

Daemon::Daemon(Config config) : config_(std::move(config)) {}

Daemon::~Daemon() {
  Close();
}

base::Status Daemon::AcquireInstanceLock() {
  std::string lock_path = config_.socket + ".lock";
  lock_fd_.Reset(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock_fd_) {
    return base::SystemError("open instance lock " + lock_path);
  }
  if (::flock(lock_fd_.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) {
      return base::SystemError("lock " + lock_path);
    }
    auto pid = base::ReadFile(lock_path, 64);
    std::string who = pid.ok() && !pid->empty() ? " (pid " + *pid + ")" : "";
    lock_fd_.Reset();
    return base::FailedPrecondition("another chrysd" + who + " is already serving " + config_.socket +
                                    "; stop it first or give this one a different --socket");
  }
  std::string pid = std::to_string(::getpid());
  if (::ftruncate(lock_fd_.get(), 0) != 0 || ::pwrite(lock_fd_.get(), pid.data(), pid.size(), 0) < 0) {
    return base::SystemError("write pid to " + lock_path);
  }
  return base::Status::Ok();
}

base::Status Daemon::ClearStaleSocket() {
  struct stat st {};
  if (::lstat(config_.socket.c_str(), &st) != 0) {
    return errno == ENOENT ? base::Status::Ok() : base::SystemError("stat " + config_.socket);
  }
  if (!S_ISSOCK(st.st_mode)) {
    return base::FailedPrecondition(config_.socket + " exists and is not a socket; refusing to replace it");
  }
  if (SocketIsLive(config_.socket)) {
    return base::FailedPrecondition("another process is accepting connections on " + config_.socket +
                                    "; refusing to take it over");
  }
  spdlog::info("replacing stale socket {} left by an earlier run", config_.socket);
  return base::RemoveFileIfExists(config_.socket);
}

base::Status Daemon::OpenImageStore() {
  imagestore::ImageStoreConfig images;
  images.root = config_.state_dir + "/images";
  images.max_concurrent_downloads = config_.images.max_concurrent_downloads;
  images.pull_timeout = std::chrono::seconds(config_.images.pull_timeout_seconds);
  for (const auto& [host, registry] : config_.images.registries) {
    imagestore::RegistryHostConfig& target = images.registry.hosts[host];
    target.mirrors = registry.mirrors;
    target.insecure = registry.insecure;
    target.ca_file = registry.ca_file;
  }
  auto store = imagestore::ImageStore::Open(images);
  if (!store.ok()) {
    return store.error().Wrap("open image store " + images.root);
  }
  images_ = std::move(store).value();
  return base::Status::Ok();
}

base::Status Daemon::OpenSandboxes() {
  runtime::SandboxManagerOptions options;
  options.state_dir = config_.state_dir + "/sandboxes";
  options.run_dir = config_.run_dir + "/sandboxes";
  options.boot_timeout = std::chrono::seconds(config_.vmm.boot_timeout_seconds);
  // The guest manifest names the kernel, initramfs and command line; without it pods cannot start (and
  // Status says so), but chrysd still serves.
  auto guest = runtime::ReadGuestManifest(config_.vmm.guest_dir);
  if (guest.ok()) {
    options.kernel_path = guest->kernel;
    options.initramfs_path = guest->initramfs;
    if (!guest->cmdline.empty()) {
      options.kernel_cmdline = guest->cmdline;
    }
    // crun and mkfs.ext4 are on the image's tools disk; without it containers cannot be created.
    if (guest->tools_disk) {
      options.boot_disks.push_back(*guest->tools_disk);
    } else {
      spdlog::warn("guest manifest {}/manifest.json names no tools disk: pods start but containers cannot",
                   config_.vmm.guest_dir);
    }
  } else if (guest.error().code() != base::ErrorCode::kNotFound) {
    spdlog::error("{}; pods cannot start", guest.error().message());
  }
  std::string qemu = FindExecutable(config_.vmm.qemu_binary);
  std::string accel = config_.vmm.accel;
  std::string run_dir = config_.run_dir;
  std::string kernel = options.kernel_path;
  std::string cvm_plans = ConfidentialPlansDir(config_);
  std::string firmware = config_.vmm.microvm_firmware;
  // A boot still waiting for the KVM probe at shutdown (the warm pool's first) ends with it, instead of running a
  // probe of its own for up to 10 s.
  const std::atomic<bool>* probe_cancel = &stop_accel_probe_;
  options.vmm_factory = [qemu, accel, run_dir, cvm_plans, firmware,
                         probe_cancel](runtime::VmmKind kind) -> base::Result<std::unique_ptr<runtime::Vmm>> {
    if (kind == runtime::VmmKind::kCloudHypervisor) {
      return std::unique_ptr<runtime::Vmm>(
          std::make_unique<runtime::CloudHypervisorVmm>(runtime::CloudHypervisorConfig{}));
    }
    runtime::QemuConfig qemu_config;
    if (!qemu.empty()) {
      qemu_config.qemu_binary = qemu;
    }
    qemu_config.accel = accel;
    qemu_config.accel_cache_path = run_dir + "/kvm-probe.json";
    qemu_config.direct_boot_firmware = firmware;
    qemu_config.accel_probe_cancel = probe_cancel;
    // Confidential pods (a launch plan under cvm_plans) boot the HAL disk; the others the microVM guest.
    return runtime::confidential::MakeQemuOrCvmVmm(qemu_config, cvm_plans);
  };
  runtime::QemuConfig probe;
  probe.accel = "auto";
  probe.accel_cache_path = run_dir + "/kvm-probe.json";
  if (!qemu.empty()) {
    probe.qemu_binary = qemu;
  }
  // Cloud Hypervisor needs its binary and a KVM that runs guests; otherwise the default handler uses QEMU.
  options.ch_usable = false;
  if (!FindExecutable(config_.vmm.cloud_hypervisor_binary).empty()) {
    auto resolved = runtime::ResolveQemuAccel(probe, kernel);
    options.ch_usable = resolved.ok() && *resolved == "kvm";
  } else if (accel == "auto" && !kernel.empty() && !qemu.empty()) {
    // The KVM probe boots a guest once per host and kernel; run it now, beside serving, so that the first pod
    // finds the verdict cached instead of waiting for it.
    accel_probe_ = std::thread([this, probe, kernel] {
      auto resolved = runtime::ResolveQemuAccel(probe, kernel, &stop_accel_probe_);
      if (resolved.ok()) {
        spdlog::info("QEMU accelerator for pods: {}", *resolved);
      }
    });
  }
  agents_ = std::make_shared<runtime::GrpcAgentConnector>();
  options.agent = agents_;
  options.warm_pool.size = WarmPoolSizeFor(config_.vmm, options.ch_usable);
  if (config_.vmm.warm_pool_size == kWarmPoolAuto) {
    spdlog::info(
        "warm pool (vmm.warm_pool_size auto): {} VM{}", options.warm_pool.size,
        options.ch_usable ? "s, since Cloud Hypervisor runs the default handler's pods and is not pooled" : "");
  }
  options.warm_pool.use_template = config_.vmm.vm_template;
  options.warm_pool.share_tag = kPodShareTag;
  options.warm_pool.share_root = config_.run_dir + "/pods";
  options.warm_pool.prepare_share = [](const std::string& dir) { return PrepareSharedDir(dir); };
  options.warm_pool.release_share = [](const std::string& dir) { return ReleaseSharedDir(dir); };
  // Refill boots take a CPU only when the pods' VMs leave one idle: a burst of pods that drains the pool is not
  // slowed by the boots that replace it.
  options.warm_pool.prepare_cgroup_parent = [](const std::string& parent) -> base::Status {
    CHRYS_ASSIGN_OR_RETURN(std::vector<runtime::CgroupHierarchy> hierarchies, runtime::DiscoverCgroupHierarchies());
    return runtime::CreateLowCpuWeightCgroup(hierarchies, parent);
  };
  options.warm_pool.release_cgroup_parent = [](const std::string& parent) {
    if (auto hierarchies = runtime::DiscoverCgroupHierarchies(); hierarchies.ok()) {
      runtime::RemoveEmptyCgroup(*hierarchies, parent);
    }
  };
  sandboxes_ = std::make_unique<runtime::SandboxManager>(options);
  auto report = sandboxes_->Recover();
  if (!report.ok()) {
    return report.error().Wrap("recover sandboxes");
  }
  recovery_ = std::move(report).value();
  return base::Status::Ok();
}

base::Status Daemon::Start() {
  std::string socket_dir = std::filesystem::path(config_.socket).parent_path().string();
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(socket_dir, 0755));
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(config_.run_dir, 0755));
  CHRYS_RETURN_IF_ERROR(AcquireInstanceLock());
  CHRYS_RETURN_IF_ERROR(ClearStaleSocket());

  auto state = StateStore::Open(config_.state_dir + "/state");
  if (!state.ok()) {
    return state.error().Wrap("open state directory");
  }
  state_.emplace(std::move(state).value());

  CHRYS_RETURN_IF_ERROR(OpenImageStore());

  netcni::PodNetworkConfig network;
  network.conf_dir = config_.cni.conf_dir;
  network.bin_dirs = config_.cni.bin_dirs;
  network.network_name = config_.cni.network_name;
  network.cache_dir = config_.state_dir + "/cni-cache";
  network.state_dir = config_.run_dir + "/netcni";
  network.plugin_timeout = std::chrono::seconds(config_.cni.plugin_timeout_seconds);
  network_ = std::make_unique<netcni::PodNetworkManager>(network);

  pods_.emplace(*state_);
  pods_->Load();
  CHRYS_RETURN_IF_ERROR(OpenSandboxes());

  RuntimeBackends backends{*state_, *pods_, *images_, *network_, *sandboxes_, *agents_};
  runtime_service_ = std::make_unique<RuntimeServiceImpl>(config_, backends, [this] {
    netcni::NetworkReadiness readiness = network_->Readiness();
    return Condition{readiness.ready, readiness.reason, readiness.message};
  });
  runtime_service_->LoadState();
  runtime_service_->RecoverPods(recovery_);
  // Warm VMs boot beside serving; the first ones are ready a boot's time after start.
  sandboxes_->StartWarmPool();
  stream_runtime_ = std::make_unique<streaming::AgentStreamRuntime>(*sandboxes_, *agents_);
  streaming::StreamingServerOptions stream_options;
  stream_options.address = config_.streaming.address;
  stream_options.port = config_.streaming.port;
  stream_options.tls_cert_file = config_.streaming.tls_cert_file;
  stream_options.tls_key_file = config_.streaming.tls_key_file;
  stream_options.idle_timeout = std::chrono::seconds(config_.streaming.idle_timeout_seconds);
  stream_options.stream_creation_timeout = std::chrono::seconds(config_.streaming.stream_creation_timeout_seconds);
  auto streaming = streaming::StreamingServer::Start(stream_options, *stream_runtime_);
  if (!streaming.ok()) {
    return streaming.error().Wrap("start the streaming server");
  }
  streaming_ = std::move(*streaming);
  runtime_service_->SetStreamingServer(streaming_.get());
  spdlog::info("streaming server on {}", streaming_->base_url());
  image_service_ = std::make_unique<ImageServiceImpl>(*images_);
  image_service_->SetGuestPull([service = runtime_service_.get()](const v1::PullImageRequest& request) {
    return service->PullInConfidentialPod(request);
  });
  GcScope gc;
  gc.pods = &*pods_;
  gc.network = network_.get();
  gc.sandboxes = sandboxes_.get();
  gc.netns_dir = network_->config().netns_dir;
  gc.vm_roots = {config_.state_dir + "/sandboxes", config_.run_dir + "/sandboxes"};
  admin_service_ = std::make_unique<AdminServiceImpl>(*images_, gc);

  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + config_.socket, grpc::InsecureServerCredentials());
  builder.RegisterService(runtime_service_.get());
  builder.RegisterService(image_service_.get());
  builder.RegisterService(admin_service_.get());
  ApplyCriServerOptions(builder);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<RpcLogInterceptorFactory>());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  server_ = builder.BuildAndStart();
  if (!server_) {
    return base::Unavailable("cannot listen on " + config_.socket + " (see the gRPC error above)");
  }
  socket_owned_ = true;
  if (::chmod(config_.socket.c_str(), 0660) != 0) {
    return base::SystemError("chmod 0660 " + config_.socket);
  }
  spdlog::info("chrysd {} serving CRI v1 on {}", ChrysalisVersion(), config_.socket);
  return base::Status::Ok();
}

void Daemon::Wait() {
  if (server_) {
    server_->Wait();
  }
}

void Daemon::RequestShutdown() {
  if (!server_ || shutdown_requested_.exchange(true)) {
    return;
  }
  spdlog::info("shutting down: no new RPCs, waiting up to {} s for in-flight ones", config_.shutdown_grace_seconds);
  // Event streams never finish on their own: end them first, so only real work uses the grace period.
  EventBus::CloseAll();
  if (auto rpcs = InFlightRpcs(); !rpcs.empty()) {
    spdlog::info("in flight: {}", fmt::join(rpcs, ", "));
  }
  auto start = std::chrono::steady_clock::now();
  auto grace = std::chrono::seconds(config_.shutdown_grace_seconds);
  // gRPC's graceful shutdown also waits for the clients to close their connections after its GOAWAY, which an
  // idle client (kubelet, crictl's) does seconds later: a restart took 4-10 s with no RPC in flight. So once no
  // RPC has been in flight for a moment (its answer written), the connections are dropped.
  std::mutex mutex;
  std::condition_variable stopped;
  bool server_down = false;
  std::thread closer([&] {
    constexpr auto kLook = std::chrono::milliseconds(25);
    int idle_looks = 0;
    std::unique_lock lock(mutex);
    while (!stopped.wait_for(lock, kLook, [&] { return server_down; }) &&
           std::chrono::steady_clock::now() - start < grace) {
      idle_looks = InFlightRpcs().empty() ? idle_looks + 1 : 0;
      if (idle_looks >= 2) {
        grpc_server_cancel_all_calls(server_->c_server());  // none are left; this closes the connections
      }
    }
  });
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  {
    std::lock_guard lock(mutex);
    server_down = true;
  }
  stopped.notify_all();
  closer.join();
  auto took = std::chrono::steady_clock::now() - start;
  if (took > std::chrono::seconds(1)) {
    spdlog::warn("the in-flight RPCs took {} ms to end",
                 std::chrono::duration_cast<std::chrono::milliseconds>(took).count());
  }
}

void Daemon::Close() {
  // A probe still running is abandoned (its QEMU killed, nothing cached): shutdown does not wait for it.
  stop_accel_probe_ = true;
  if (accel_probe_.joinable()) {
    accel_probe_.join();
  }
  if (server_) {
    RequestShutdown();
    server_->Wait();
    server_.reset();
  }
  if (streaming_) {
    streaming_->Stop();
  }
  if (sandboxes_) {
    // Pod VMs outlive chrysd; warm ones belong to no pod and go with it.
    sandboxes_->StopWarmPool();
  }
  if (socket_owned_) {
    base::RemoveFileIfExists(config_.socket).ok();
    socket_owned_ = false;
  }
  lock_fd_.Reset();
}

}  // namespace chrys::cri
