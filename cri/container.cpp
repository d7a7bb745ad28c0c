// The container RPC family: CreateContainer, StartContainer, StopContainer, RemoveContainer, ContainerStatus,
// ListContainers, ReopenContainerLog, ExecSync. Containers run inside their pod's VM, driven through its agent;
// their root filesystem is the image's EROFS layer disks under an overlay on a per-container scratch disk.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/file_util.h"
#include "base/text.h"
#include "cri/confidential_pods.h"
#include "cri/cri_util.h"
#include "cri/grpc_status.h"
#include "cri/list_responses.h"
#include "cri/runtime_service.h"
#include "cri/shared_dir.h"
#include "cri/validation.h"

namespace chrys::cri {

namespace {

namespace agentv1 = runtime::agent::v1;

constexpr uint64_t kScratchDiskBytes = 1ULL << 30;  // sparse: only what the container writes uses space
constexpr size_t kExecSyncMaxOutput = 8 << 20;      // per stream; kubelet's message limit is 16 MiB

// virtio-blk serials are at most 20 bytes: a kind letter and a prefix of the digest or id.
std::string LayerSerial(const std::string& digest) {
  std::string hex = digest.substr(digest.find(':') + 1);
  return "l" + hex.substr(0, 19);
}
std::string ScratchSerial(const std::string& container_id) {
  return "s" + container_id.substr(0, 19);
}

struct ImageDefaults {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;
  std::string working_dir;
  std::string user;
  std::string stop_signal;
};

ImageDefaults ParseImageConfig(const std::string& config_json) {
  ImageDefaults out;
  auto json = nlohmann::json::parse(config_json, nullptr, false);
  if (!json.is_object() || !json.contains("config") || !json["config"].is_object()) {
    return out;
  }
  const auto& c = json["config"];
  auto strings = [&](const char* key) {
    std::vector<std::string> v;
    if (c.contains(key) && c[key].is_array()) {
      for (const auto& item : c[key]) {
        if (item.is_string()) {
          v.push_back(item.get<std::string>());
        }
      }
    }
    return v;
  };
  out.entrypoint = strings("Entrypoint");
  out.cmd = strings("Cmd");
  out.env = strings("Env");
  out.working_dir = c.value("WorkingDir", "");
  out.user = c.value("User", "");
  out.stop_signal = c.value("StopSignal", "");
  return out;
}

int SignalNumber(const std::string& name) {
  static const std::pair<const char*, int> kSignals[] = {
      {"SIGTERM", SIGTERM}, {"SIGINT", SIGINT},   {"SIGQUIT", SIGQUIT}, {"SIGKILL", SIGKILL},
      {"SIGHUP", SIGHUP},   {"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2}, {"SIGWINCH", SIGWINCH}};
  std::string upper = base::AsciiUpper(name);
  if (upper.rfind("SIG", 0) != 0) {
    upper = "SIG" + upper;
  }
  for (const auto& [n, v] : kSignals) {
    if (upper == n) {
      return v;
    }
  }
  if (!name.empty() && std::all_of(name.begin(), name.end(), ::isdigit)) {
    return std::stoi(name);
  }
  return SIGTERM;
}

// Who the container runs as, for the agent to resolve in the container's own /etc/passwd and /etc/group (names
// only mean something there): run_as_user, else run_as_username, else the image's USER ("name", "name:group",
// "uid:gid"), else root; run_as_group replaces the group; supplemental groups are added to the user's own.
base::Status ApplyUser(const v1::ContainerConfig& config, const ImageDefaults& image, agentv1::User* user) {
  const auto& sc = config.linux().security_context();
  std::string name;
  std::string group;
  if (sc.has_run_as_user()) {
    if (sc.run_as_user().value() < 0 || sc.run_as_user().value() > 0xFFFFFFFELL) {
      return base::InvalidArgument("config.linux.security_context.run_as_user: " +
                                   std::to_string(sc.run_as_user().value()) + " is not a valid uid");
    }
    name = std::to_string(sc.run_as_user().value());
  } else if (!sc.run_as_username().empty()) {
    name = sc.run_as_username();
    if (name.find(':') != std::string::npos) {
      return base::InvalidArgument("config.linux.security_context.run_as_username: '" + name +
                                   "' must be a user name; set the group with run_as_group");
    }
  } else if (!image.user.empty()) {
    auto colon = image.user.find(':');
    name = image.user.substr(0, colon);
    group = colon == std::string::npos ? "" : image.user.substr(colon + 1);
  }
  if (name.empty()) {
    if (!group.empty()) {
      return base::InvalidArgument("image user '" + image.user + "' names a group without a user");
    }
    name = "0";
  }
  if (sc.has_run_as_group()) {
    if (sc.run_as_group().value() < 0 || sc.run_as_group().value() > 0xFFFFFFFELL) {
      return base::InvalidArgument("config.linux.security_context.run_as_group: " +
                                   std::to_string(sc.run_as_group().value()) + " is not a valid gid");
    }
    group = std::to_string(sc.run_as_group().value());
  }
  user->set_name(name);
  user->set_group(group);
  for (int64_t gid : sc.supplemental_groups()) {
    if (gid < 0 || gid > 0xFFFFFFFELL) {
      return base::InvalidArgument("config.linux.security_context.supplemental_groups: " + std::to_string(gid) +
                                   " is not a valid gid");
    }
    user->add_additional_gids(static_cast<uint32_t>(gid));
  }
  return base::Status::Ok();
}

// The deprecated string form of a seccomp profile, which older kubelets and crictl configs still send.
template <typename SecurityContext>
std::string LegacySeccompPath(const SecurityContext& sc) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  return sc.seccomp_profile_path();
#pragma GCC diagnostic pop
}

// The seccomp filter: the container's security context if it sets one, else the pod's, else Unconfined (what
// kubelet means by sending none). Localhost profiles are read here, on the host, and passed on as JSON.
base::Status ApplySeccomp(const v1::ContainerConfig& config, const v1::PodSandboxConfig& pod, agentv1::Seccomp* out) {
  const auto& sc = config.linux().security_context();
  const auto& pod_sc = pod.linux().security_context();
  std::string field = "config.linux.security_context.seccomp";
  v1::SecurityProfile profile;
  std::string legacy_path;
  if (sc.has_seccomp()) {
    profile = sc.seccomp();
  } else if (!LegacySeccompPath(sc).empty()) {
    legacy_path = LegacySeccompPath(sc);
    field = "config.linux.security_context.seccomp_profile_path";
  } else if (pod_sc.has_seccomp()) {
    profile = pod_sc.seccomp();
    field = "sandbox_config.linux.security_context.seccomp";
  } else if (!LegacySeccompPath(pod_sc).empty()) {
    legacy_path = LegacySeccompPath(pod_sc);
    field = "sandbox_config.linux.security_context.seccomp_profile_path";
  } else {
    profile.set_profile_type(v1::SecurityProfile::Unconfined);
  }
  if (!legacy_path.empty()) {
    // The deprecated string form: "runtime/default", "docker/default", "unconfined", "localhost/<path>".
    if (legacy_path == "runtime/default" || legacy_path == "docker/default") {
      profile.set_profile_type(v1::SecurityProfile::RuntimeDefault);
    } else if (legacy_path == "unconfined") {
      profile.set_profile_type(v1::SecurityProfile::Unconfined);
    } else if (legacy_path.rfind("localhost/", 0) == 0) {
      profile.set_profile_type(v1::SecurityProfile::Localhost);
      profile.set_localhost_ref(legacy_path.substr(std::string("localhost/").size()));
    } else {
      return base::InvalidArgument(field + ": '" + legacy_path +
                                   "' is not runtime/default, unconfined or localhost/<path>");
    }
  }
  switch (profile.profile_type()) {
    case v1::SecurityProfile::Unconfined:
      out->set_mode(agentv1::Seccomp::UNCONFINED);
      return base::Status::Ok();
    case v1::SecurityProfile::RuntimeDefault:
      out->set_mode(agentv1::Seccomp::RUNTIME_DEFAULT);
      return base::Status::Ok();
    case v1::SecurityProfile::Localhost:
      break;
    default:
      return base::InvalidArgument(field + ".profile_type: unknown type " + std::to_string(profile.profile_type()));
  }
  const std::string& path = profile.localhost_ref();
  if (path.empty() || path[0] != '/') {
    return base::InvalidArgument(field + ".localhost_ref: '" + path +
                                 "' must be the absolute path of a seccomp profile on the node");
  }
  auto text = base::ReadFile(path, 512 << 10);
  if (!text.ok()) {
    return base::InvalidArgument(field + ".localhost_ref: cannot read seccomp profile '" + path +
                                 "': " + text.error().message());
  }
  auto json = nlohmann::json::parse(*text, nullptr, false);
  if (!json.is_object()) {
    return base::InvalidArgument(field + ".localhost_ref: seccomp profile '" + path + "' is not a JSON object");
  }
  out->set_mode(agentv1::Seccomp::LOCALHOST);
  out->set_profile_json(*text);
  return base::Status::Ok();
}

// CRI resources as the agent takes them. CPU shares become a cgroup v2 weight; a swap limit equal to the memory
// limit (kubelet's "no swap") is left out at create, where the guest has no swap to limit anyway.
void ToAgentResources(const v1::LinuxContainerResources& res, bool at_create, agentv1::Resources* out) {
  out->set_cpu_quota_us(res.cpu_quota());
  out->set_cpu_period_us(static_cast<uint64_t>(res.cpu_period()));
  out->set_cpu_weight(CpuSharesToWeight(res.cpu_shares()));
  out->set_memory_limit_bytes(res.memory_limit_in_bytes());
  out->set_cpuset_cpus(res.cpuset_cpus());
  out->set_cpuset_mems(res.cpuset_mems());
  if (!(at_create && res.memory_swap_limit_in_bytes() == res.memory_limit_in_bytes())) {
    out->set_memory_swap_limit_bytes(res.memory_swap_limit_in_bytes());
  }
  for (const auto& limit : res.hugepage_limits()) {
    (*out->mutable_hugepage_limits())[limit.page_size()] = limit.limit();
  }
  for (const auto& [key, value] : res.unified()) {
    (*out->mutable_unified())[key] = value;
  }
}

// The agent of a sandbox's VM: inspect the sandbox, then get (or dial) its agent client.
base::Result<std::shared_ptr<runtime::agent::AgentClient>> AgentOf(const RuntimeBackends& backends,
                                                                   const std::string& sandbox_id) {
  CHRYS_ASSIGN_OR_RETURN(runtime::SandboxStatus vm, backends.sandboxes.Inspect(sandbox_id));
  return backends.agents.Get(sandbox_id, vm.agent);
}

}  // namespace

base::Result<ContainerRecord> RuntimeServiceImpl::CreateContainerIn(const v1::CreateContainerRequest& request,
                                                                    base::PhaseTimer& phases) {
  auto pod = backends_.pods.FindPod(request.pod_sandbox_id());
  if (!pod.ok()) {
    return pod.error();
  }
  if (pod->state != PodState::kReady) {
    return base::FailedPrecondition("pod sandbox " + pod->id + " is not ready; containers need a running VM");
  }
  const v1::ContainerConfig& config = request.config();
  CHRYS_RETURN_IF_ERROR(ValidateContainerConfig(config, pod->config));
  CHRYS_RETURN_IF_ERROR(ValidateLinuxResources(config.linux().resources(), "config.linux.resources"));
  CHRYS_ASSIGN_OR_RETURN(runtime::SandboxStatus vm, backends_.sandboxes.Inspect(pod->id));
  // Confidential pods never use the host store: the guest pulls the image onto its encrypted disk, and the
  // container runs from the unpacked layers there.
  std::optional<::chrys::agent::v1::PullImageResponse> in_guest;
  std::optional<imagestore::ImageRecord> image;
  if (IsConfidentialHandler(pod->handler)) {
    CHRYS_ASSIGN_OR_RETURN(auto guest_agent, backends_.agents.Get(pod->id, vm.agent));
    // kubelet's PullImage for this pod already pulled it in the guest, with the credentials; pull here only if not.
    CHRYS_ASSIGN_OR_RETURN(in_guest, PullImageInConfidentialPod(config_, *guest_agent, config.image().image(),
                                                                /*auth=*/nullptr, /*if_present=*/true));
  } else {
    auto found = backends_.images.Get(config.image().image());
    if (!found.ok()) {
      if (found.error().code() == base::ErrorCode::kNotFound) {
        return base::NotFound("config.image.image: image '" + config.image().image() +
                              "' is not in the store; pull it first");
      }
      return found.error();
    }
    image = std::move(found).value();
  }
  const std::string image_id = in_guest ? in_guest->image_id() : image->id;
  for (const auto& mount : config.mounts()) {
    struct stat st {};
    if (::stat(mount.host_path().c_str(), &st) != 0) {
      return base::InvalidArgument("config.mounts: host_path '" + mount.host_path() + "' does not exist");
    }
  }
  ImageDefaults defaults;
  if (in_guest) {
    defaults = ParseImageConfig(in_guest->config_json());
  } else if (auto config_json = backends_.images.ConfigJson(*image); config_json.ok()) {
    defaults = ParseImageConfig(*config_json);
  }

  ContainerRecord record;
  record.id = NewId();
  record.sandbox_id = pod->id;
  record.state = ContainerState::kCreated;
  record.config = config;
  record.image_id = image_id;
  record.image_ref = config.image().image();
  record.created_at = NowNanos();
  CHRYS_ASSIGN_OR_RETURN(record.log_path, ResolveLogPath(pod->config.log_directory(), config.log_path()));

  agentv1::ContainerConfig guest;
  guest.set_id(record.id);
  auto* process = guest.mutable_process();
  // CRI command replaces the image entrypoint (and drops its Cmd); CRI args replace the Cmd.
  std::vector<std::string> argv;
  if (!config.command().empty()) {
    argv.assign(config.command().begin(), config.command().end());
    argv.insert(argv.end(), config.args().begin(), config.args().end());
  } else {
    argv = defaults.entrypoint;
    if (!config.args().empty()) {
      argv.insert(argv.end(), config.args().begin(), config.args().end());
    } else {
      argv.insert(argv.end(), defaults.cmd.begin(), defaults.cmd.end());
    }
  }
  if (argv.empty()) {
    return base::InvalidArgument("config.command: neither the container config nor image " + image_id +
                                 " says what to run");
  }
  for (const auto& arg : argv) {
    process->add_args(arg);
  }
  for (const auto& env : defaults.env) {
    process->add_env(env);
  }
  for (const auto& env : config.envs()) {
    process->add_env(env.key() + "=" + env.value());
  }
  process->set_cwd(!config.working_dir().empty() ? config.working_dir()
                                                 : (defaults.working_dir.empty() ? "/" : defaults.working_dir));
  CHRYS_RETURN_IF_ERROR(ApplyUser(config, defaults, process->mutable_user()));
  process->set_tty(config.tty());
  process->set_stdin(config.stdin());
  const auto& sc = config.linux().security_context();
  process->set_no_new_privileges(sc.no_new_privs());
  if (!sc.privileged()) {
    // The whole set goes to the guest, so that drops (Kubernetes' "drop: [ALL]") hold as well as adds.
    CHRYS_ASSIGN_OR_RETURN(std::vector<std::string> capabilities, ResolveCapabilities(sc.capabilities()));
    auto* names = process->mutable_capabilities()->mutable_names();
    names->Add(capabilities.begin(), capabilities.end());
    CHRYS_ASSIGN_OR_RETURN(std::vector<std::string> ambient, ResolveAmbientCapabilities(sc.capabilities()));
    process->mutable_capabilities()->mutable_ambient()->Add(ambient.begin(), ambient.end());
  }
  guest.set_readonly_rootfs(sc.readonly_rootfs());
  guest.set_privileged(sc.privileged());
  if (!sc.privileged()) {
    // The pod's security context as kubelet sends it with this request (as containerd reads it), else as the pod
    // was created.
    const v1::PodSandboxConfig& pod_config = request.has_sandbox_config() ? request.sandbox_config() : pod->config;
    CHRYS_RETURN_IF_ERROR(ApplySeccomp(config, pod_config, guest.mutable_seccomp()));
  }
  ToAgentResources(config.linux().resources(), /*at_create=*/true, guest.mutable_resources());
  for (const auto& [key, value] : config.annotations()) {
    (*guest.mutable_annotations())[key] = value;
  }

  phases.End("prepare");
  CHRYS_RETURN_IF_ERROR(backends_.pods.AddContainer(record));
  bool committed = false;
  std::vector<std::function<void()>> undo;
  auto rollback = [&] {
    if (committed) {
      return;
    }
    for (auto it = undo.rbegin(); it != undo.rend(); ++it) {
      (*it)();
    }
  };
  struct Guard {
    std::function<void()> fn;
    ~Guard() { fn(); }
  } guard{rollback};
  undo.push_back([this, id = record.id] { backends_.pods.RemoveContainer(id).ok(); });

  if (in_guest) {
    // The upper layer goes to the guest's encrypted disk, next to the layers (no scratch disk from the host).
    for (const auto& dir : in_guest->layer_dirs()) {
      guest.mutable_rootfs()->add_layer_dirs(dir);
    }
  } else {
    CHRYS_RETURN_IF_ERROR(backends_.images.Lease(record.id, image->id));
    undo.push_back([this, id = record.id] { backends_.images.ReleaseLease(id).ok(); });

    // Layer disks are shared by every container of the pod that uses the layer: plug each once.
    CHRYS_ASSIGN_OR_RETURN(std::vector<std::string> layer_paths, backends_.images.EnsureLayerImages(image->id));
    for (size_t i = 0; i < image->layers.size() && i < layer_paths.size(); ++i) {
      std::string serial = LayerSerial(image->layers[i].digest.str());
      bool plugged = std::any_of(vm.disks.begin(), vm.disks.end(), [&](const auto& d) { return d.serial == serial; });
      if (!plugged) {
        CHRYS_RETURN_IF_ERROR(backends_.sandboxes.AttachLayerDisk(pod->id, serial, layer_paths[i]));
        vm.disks.push_back({serial, "", -1, true, layer_paths[i]});
      }
      record.layer_serials.push_back(serial);
      guest.mutable_rootfs()->add_layer_serials(serial);
    }
    phases.End("layer disks");
    record.scratch_serial = ScratchSerial(record.id);
    CHRYS_RETURN_IF_ERROR(backends_.sandboxes.AttachScratchDisk(pod->id, record.scratch_serial, kScratchDiskBytes));
    undo.push_back([this, pod_id = pod->id, serial = record.scratch_serial] {
      backends_.sandboxes.DetachDisk(pod_id, serial).ok();
    });
    guest.mutable_rootfs()->set_scratch_serial(record.scratch_serial);
    phases.End("scratch disk");
  }

  // Volumes: host paths bound into the pod's shared directory, which the guest sees over virtio-fs.
  int index = 0;
  for (const auto& mount : config.mounts()) {
    std::string name = record.id.substr(0, 12) + "/" + std::to_string(index++);
    std::string target = pod->shared_dir + "/" + name;
    CHRYS_RETURN_IF_ERROR(BindIntoSharedDir(mount.host_path(), target, mount.readonly()));
    record.volume_targets.push_back(target);
    undo.push_back([target] { UnbindFromSharedDir(target).ok(); });
    auto* m = guest.add_mounts();
    m->set_destination(mount.container_path());
    m->set_source(pod->shared_guest_path + "/" + name);
    m->set_type("bind");
    if (mount.readonly()) {
      m->add_options("ro");
    }
  }

  phases.End("volumes");
  CHRYS_ASSIGN_OR_RETURN(auto agent, backends_.agents.Get(pod->id, vm.agent));
  if (auto created = agent->CreateContainer(guest); !created.ok()) {
    return created.error().Wrap("create container " + record.id + " in the guest");
  }
  phases.End("guest");
  CHRYS_RETURN_IF_ERROR(backends_.pods.UpdateContainer(record));
  committed = true;
  return record;
}

std::optional<base::Result<std::string>> RuntimeServiceImpl::PullInConfidentialPod(
    const v1::PullImageRequest& request) {
  const v1::PodSandboxConfig& sandbox = request.sandbox_config();
  std::optional<PodRecord> pod;
  if (sandbox.has_metadata()) {
    for (const auto& candidate : backends_.pods.SnapshotPods()) {
      const auto& m = candidate->config.metadata();
      if (m.uid() == sandbox.metadata().uid() && m.name() == sandbox.metadata().name() &&
          m.namespace_() == sandbox.metadata().namespace_() && candidate->state == PodState::kReady) {
        pod = *candidate;
        break;
      }
    }
  }
  bool for_confidential = IsConfidentialHandler(request.image().runtime_handler());
  if (!pod || !IsConfidentialHandler(pod->handler)) {
    if (for_confidential) {
      return base::Result<std::string>(base::FailedPrecondition(
          "image.runtime_handler " + request.image().runtime_handler() +
          ": confidential images are pulled inside the pod's guest; PullImage needs the sandbox_config of a ready "
          "pod with that handler"));
    }
    return std::nullopt;
  }
  auto agent = AgentOf(backends_, pod->id);
  if (!agent.ok()) {
    return base::Result<std::string>(agent.error());
  }
  spdlog::info("pulling image {} inside confidential pod {}", request.image().image(), pod->id);
  auto pulled = PullImageInConfidentialPod(config_, **agent, request.image().image(),
                                           request.has_auth() ? &request.auth() : nullptr, /*if_present=*/false);
  if (!pulled.ok()) {
    return base::Result<std::string>(pulled.error());
  }
  spdlog::info("pulled image {} inside confidential pod {} as {}", request.image().image(), pod->id,
               pulled->image_id());
  return base::Result<std::string>(pulled->image_id());
}

grpc::Status RuntimeServiceImpl::CreateContainer(grpc::ServerContext* /*context*/,
                                                 const v1::CreateContainerRequest* request,
                                                 v1::CreateContainerResponse* response) {
  base::PhaseTimer phases;
  auto record = CreateContainerIn(*request, phases);
  if (!record.ok()) {
    spdlog::warn("CreateContainer in {}: {}", request->pod_sandbox_id(), record.error().message());
    return ToGrpcStatus(record.error());
  }
  spdlog::info("container {} ({}) created in sandbox {}: {}", record->id, record->config.metadata().name(),
               record->sandbox_id, phases.summary());
  PublishContainerEvent(record->id, v1::CONTAINER_CREATED_EVENT);
  response->set_container_id(record->id);
  return grpc::Status::OK;
}

grpc::Status RuntimeServiceImpl::StartContainer(grpc::ServerContext* /*context*/,
                                                const v1::StartContainerRequest* request,
                                                v1::StartContainerResponse* /*response*/) {
  auto record = backends_.pods.FindContainer(request->container_id());
  if (!record.ok()) {
    return ToGrpcStatus(record.error());
  }
  if (record->state != ContainerState::kCreated) {
    return ToGrpcStatus(base::FailedPrecondition("container " + record->id + " is not in the created state"));
  }
  auto vm = backends_.sandboxes.Inspect(record->sandbox_id);
  if (!vm.ok()) {
    return ToGrpcStatus(vm.error());
  }
  std::unique_ptr<ContainerLog> log;
  if (!record->log_path.empty()) {
    auto opened = ContainerLog::Open(record->log_path);
    if (!opened.ok()) {
      return ToGrpcStatus(opened.error());
    }
    log = std::move(opened).value();
  }
  auto agent = backends_.agents.Get(record->sandbox_id, vm->agent);
  if (!agent.ok()) {
    return ToGrpcStatus(agent.error());
  }
  if (auto started = (*agent)->StartContainer(record->id); !started.ok()) {
    return ToGrpcStatus(started.error().Wrap("start container " + record->id));
  }
  record->state = ContainerState::kRunning;
  record->started_at = NowNanos();
  if (auto s = backends_.pods.UpdateContainer(*record); !s.ok()) {
    return ToGrpcStatus(s.error());
  }
  monitor_->Watch(record->id, record->sandbox_id, vm->agent, std::move(log));
  spdlog::info("container {} started", record->id);
  PublishContainerEvent(record->id, v1::CONTAINER_STARTED_EVENT);
  return grpc::Status::OK;
}

base::Status RuntimeServiceImpl::StopContainerIn(const ContainerRecord& record, int64_t timeout_seconds) {
  if (record.state != ContainerState::kRunning) {
    return base::Status::Ok();
  }
  auto vm = backends_.sandboxes.Inspect(record.sandbox_id);
  if (!vm.ok()) {
    return base::Status::Ok();  // no VM, nothing runs
  }
  CHRYS_ASSIGN_OR_RETURN(auto agent, backends_.agents.Get(record.sandbox_id, vm->agent));
  agentv1::ProcessRef process;
  process.set_container_id(record.id);
  std::string stop_signal = "SIGTERM";
  if (auto config = backends_.images.Get(record.image_id); config.ok()) {
    if (auto json = backends_.images.ConfigJson(*config); json.ok()) {
      std::string from_image = ParseImageConfig(*json).stop_signal;
      if (!from_image.empty()) {
        stop_signal = from_image;
      }
    }
  }
  if (timeout_seconds > 0) {
    auto signalled = agent->SignalProcess(process, SignalNumber(stop_signal));
    if (signalled.ok() && monitor_->WaitExited(record.id, std::chrono::seconds(timeout_seconds))) {
      return base::Status::Ok();
    }
  }
  agent->SignalProcess(process, SIGKILL).ok();
  if (!monitor_->WaitExited(record.id, std::chrono::seconds(10))) {
    return base::DeadlineExceeded("container " + record.id + " did not exit within 10 s of SIGKILL");
  }
  return base::Status::Ok();
}

grpc::Status RuntimeServiceImpl::StopContainer(grpc::ServerContext* /*context*/,
                                               const v1::StopContainerRequest* request,
                                               v1::StopContainerResponse* /*response*/) {
  auto record = backends_.pods.FindContainer(request->container_id());
  if (!record.ok()) {
    return ToGrpcStatus(record.error());
  }
  if (auto s = StopContainerIn(*record, request->timeout()); !s.ok()) {
    return ToGrpcStatus(s.error());
  }
  return grpc::Status::OK;
}

grpc::Status RuntimeServiceImpl::RemoveContainer(grpc::ServerContext* /*context*/,
                                                 const v1::RemoveContainerRequest* request,
                                                 v1::RemoveContainerResponse* /*response*/) {
  if (request->container_id().empty()) {
    return InvalidArgument("container_id is required");
  }
  auto record = backends_.pods.FindContainer(request->container_id());
  if (!record.ok()) {
    return record.error().code() == base::ErrorCode::kNotFound ? grpc::Status::OK : ToGrpcStatus(record.error());
  }
  if (auto s = StopContainerIn(*record, 0); !s.ok()) {
    return ToGrpcStatus(s.error());
  }
  monitor_->Forget(record->id);
  auto vm = backends_.sandboxes.Inspect(record->sandbox_id);
  if (vm.ok() && vm->state == runtime::SandboxState::kReady) {
    if (auto agent = backends_.agents.Get(record->sandbox_id, vm->agent); agent.ok()) {
      if (auto deleted = (*agent)->DeleteContainer(record->id, true);
          !deleted.ok() && deleted.error().code() != base::ErrorCode::kNotFound) {
        return ToGrpcStatus(deleted.error().Wrap("delete container " + record->id + " in the guest"));
      }
    }
    if (!record->scratch_serial.empty()) {
      backends_.sandboxes.DetachDisk(record->sandbox_id, record->scratch_serial).ok();
    }
  }
  for (const auto& target : record->volume_targets) {
    UnbindFromSharedDir(target).ok();
  }
  backends_.images.ReleaseLease(record->id).ok();
  PublishContainerEvent(record->id, v1::CONTAINER_DELETED_EVENT);
  if (auto s = backends_.pods.RemoveContainer(record->id); !s.ok()) {
    return ToGrpcStatus(s.error());
  }
  spdlog::info("container {} removed", record->id);
  return grpc::Status::OK;
}

void RuntimeServiceImpl::FillContainerStatus(const ContainerRecord& c, v1::ContainerStatus* status) {
  status->set_id(c.id);
  *status->mutable_metadata() = c.config.metadata();
  status->set_state(ToCriState(c.state));
  status->set_created_at(c.created_at);
  status->set_started_at(c.started_at);
  status->set_finished_at(c.finished_at);
  status->set_exit_code(c.exit_code);
  *status->mutable_image() = c.config.image();
  status->set_image_ref(c.image_id);
  status->set_image_id(c.image_id);
  status->set_reason(c.reason);
  status->set_message(c.message);
  *status->mutable_labels() = c.config.labels();
  *status->mutable_annotations() = c.config.annotations();
  *status->mutable_mounts() = c.config.mounts();
  status->set_log_path(c.log_path);
  *status->mutable_resources()->mutable_linux() = c.config.linux().resources();
}

// A callback handler: it answers from the pod store, without waiting on anything, on gRPC's own thread.
grpc::ServerUnaryReactor* RuntimeServiceImpl::ContainerStatus(grpc::CallbackServerContext* context,
                                                              const v1::ContainerStatusRequest* request,
                                                              v1::ContainerStatusResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto found = backends_.pods.FindContainerPtr(request->container_id());
  if (!found.ok()) {
    reactor->Finish(ToGrpcStatus(found.error()));
    return reactor;
  }
  const ContainerRecord& record = **found;
  FillContainerStatus(record, response->mutable_status());
  if (request->verbose()) {
    nlohmann::json info = {
        {"sandboxId", record.sandbox_id}, {"layerDisks", record.layer_serials}, {"scratchDisk", record.scratch_serial}};
    (*response->mutable_info())["info"] = info.dump();
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

// A callback handler on raw bytes: it runs on gRPC's own thread without a hand-off, and answers from the encoded
// entries cached on the records (list_responses.h).
grpc::ServerUnaryReactor* RuntimeServiceImpl::ListContainers(grpc::CallbackServerContext* context,
                                                             const grpc::ByteBuffer* request_bytes,
                                                             grpc::ByteBuffer* response_bytes) {
  return ReplyWithEncoded<v1::ListContainersRequest>(
      context, request_bytes, response_bytes, [this](const v1::ListContainersRequest& request) {
        return EncodeListContainersResponse(backends_.pods.SnapshotContainers(), request.filter());
      });
}

grpc::Status RuntimeServiceImpl::ReopenContainerLog(grpc::ServerContext* /*context*/,
                                                    const v1::ReopenContainerLogRequest* request,
                                                    v1::ReopenContainerLogResponse* /*response*/) {
  auto record = backends_.pods.FindContainer(request->container_id());
  if (!record.ok()) {
    return ToGrpcStatus(record.error());
  }
  if (record->state != ContainerState::kRunning) {
    return ToGrpcStatus(base::FailedPrecondition("container " + record->id + " is not running"));
  }
  return ToGrpcStatus(monitor_->ReopenLog(record->id));
}

grpc::Status RuntimeServiceImpl::ExecSync(grpc::ServerContext* /*context*/, const v1::ExecSyncRequest* request,
                                          v1::ExecSyncResponse* response) {
  auto record = backends_.pods.FindContainer(request->container_id());
  if (!record.ok()) {
    return ToGrpcStatus(record.error());
  }
  if (request->cmd().empty()) {
    return InvalidArgument("cmd is required");
  }
  if (record->state != ContainerState::kRunning) {
    return ToGrpcStatus(base::FailedPrecondition("container " + record->id + " is not running"));
  }
  auto agent = AgentOf(backends_, record->sandbox_id);
  if (!agent.ok()) {
    return ToGrpcStatus(agent.error());
  }
  agentv1::ProcessSpec spec;
  for (const auto& arg : request->cmd()) {
    spec.add_args(arg);
  }
  std::string exec_id = NewId().substr(0, 16);
  if (auto pid = (*agent)->ExecProcess(record->id, exec_id, spec); !pid.ok()) {
    return ToGrpcStatus(pid.error().Wrap("exec in container " + record->id));
  }
  agentv1::ProcessRef process;
  process.set_container_id(record->id);
  process.set_exec_id(exec_id);
  auto timeout = request->timeout() > 0 ? std::chrono::milliseconds(request->timeout() * 1000)
                                        : std::chrono::milliseconds(std::chrono::hours(24));
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string out;
  std::string err;
  auto sink = [&](agentv1::OutputChunk::Stream stream, std::string_view data) {
    std::string& dst = stream == agentv1::OutputChunk::STDERR ? err : out;
    dst.append(data.substr(0, kExecSyncMaxOutput - std::min(kExecSyncMaxOutput, dst.size())));
    return true;
  };
  auto read = (*agent)->ReadOutput(process, sink, timeout);
  if (!read.ok()) {
    if (read.error().code() == base::ErrorCode::kDeadlineExceeded) {
      (*agent)->SignalProcess(process, SIGKILL).ok();
      return {grpc::StatusCode::DEADLINE_EXCEEDED,
              "command timed out after " + std::to_string(request->timeout()) + " s"};
    }
    return ToGrpcStatus(read.error());
  }
  auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  auto exit = (*agent)->WaitProcess(process, std::max(remaining, std::chrono::milliseconds(1000)));
  if (!exit.ok()) {
    return ToGrpcStatus(exit.error());
  }
  response->set_stdout(out);
  response->set_stderr(err);
  response->set_exit_code(exit->exit_code());
  return grpc::Status::OK;
}

grpc::Status RuntimeServiceImpl::UpdateContainerResources(grpc::ServerContext* /*context*/,
                                                          const v1::UpdateContainerResourcesRequest* request,
                                                          v1::UpdateContainerResourcesResponse* /*response*/) {
  auto record = backends_.pods.FindContainer(request->container_id());
  if (!record.ok()) {
    return ToGrpcStatus(record.error());
  }
  if (auto valid = ValidateLinuxResources(request->linux(), "linux"); !valid.ok()) {
    return ToGrpcStatus(valid.error());
  }
  // containerd keeps an exited container's new limits for a start that never comes; a CRI container cannot
  // start again, so say plainly that nothing can change.
  if (record->state != ContainerState::kCreated && record->state != ContainerState::kRunning) {
    return ToGrpcStatus(base::FailedPrecondition("container " + record->id +
                                                 " is not running (exited or unknown); its resources cannot change"));
  }
  if (!request->has_linux()) {
    return grpc::Status::OK;  // nothing for Linux to change (windows resources do not apply)
  }
  auto agent = AgentOf(backends_, record->sandbox_id);
  if (!agent.ok()) {
    return ToGrpcStatus(agent.error());
  }
  agentv1::Resources update;
  ToAgentResources(request->linux(), /*at_create=*/false, &update);
  auto in_force = (*agent)->UpdateContainerResources(record->id, update);
  if (!in_force.ok()) {
    return ToGrpcStatus(in_force.error().Wrap("update the resources of container " + record->id));
  }
  auto stored = backends_.pods.MutateContainer(record->id, [&](ContainerRecord& c) {
    auto* resources = c.config.mutable_linux()->mutable_resources();
    *resources = MergeLinuxResources(*resources, request->linux());
  });
  if (!stored.ok()) {
    return ToGrpcStatus(stored.error().Wrap("record the new resources of container " + record->id));
  }
  spdlog::info("container {}: resources updated (memory.max now {}, cpu quota {} us)", record->id,
               in_force->memory_limit_bytes(), in_force->cpu_quota_us());
  return grpc::Status::OK;
}

}  // namespace chrys::cri
