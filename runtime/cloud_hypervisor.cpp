#include "runtime/cloud_hypervisor.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "runtime/agent/transport.h"
#include "runtime/virtiofsd.h"

namespace chrys::runtime {

using base::Result;
using base::Status;
using nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

bool CloudHypervisorAvailable(const CloudHypervisorConfig& config) {
  return ::access(config.binary.c_str(), X_OK) == 0;
}

CloudHypervisorVmm::CloudHypervisorVmm(CloudHypervisorConfig config) : config_(std::move(config)) {}

CloudHypervisorVmm::~CloudHypervisorVmm() = default;

std::vector<std::string> CloudHypervisorVmm::BuildCommandLine(const VmLaunchSpec& spec) const {
  // Only the API socket and logging on the command line: the VM itself is described through vm.create, so
  // a restarted chrysd and the first start speak the same API.
  std::vector<std::string> argv = {config_.binary, "--api-socket", "path=" + ApiSocketPath(spec), "--log-file",
                                   VmmLogPath(spec)};
  argv.insert(argv.end(), config_.extra_args.begin(), config_.extra_args.end());
  return argv;
}

Result<std::vector<std::string>> CloudHypervisorVmm::CommandLine(const VmLaunchSpec& spec) const {
  CHRYS_RETURN_IF_ERROR(ValidateLaunchSpec(spec));
  return BuildCommandLine(spec);
}

json CloudHypervisorVmm::BuildVmConfig(const VmLaunchSpec& spec) const {
  json config;
  if (spec.disk_path.empty()) {
    config["payload"] = {{"kernel", spec.kernel_path}, {"cmdline", spec.kernel_cmdline}};
    if (!spec.initramfs_path.empty()) {
      config["payload"]["initramfs"] = spec.initramfs_path;
    }
  } else {
    config["payload"] = {{"firmware", spec.firmware_path}};
    config["disks"] = json::array({{{"path", spec.disk_path}, {"readonly", false}, {"id", "bootdisk"}}});
  }
  for (const DiskSpec& disk : spec.disks) {
    config["disks"].push_back(BuildDiskConfig(disk));
  }
  config["cpus"] = {{"boot_vcpus", spec.vcpus}, {"max_vcpus", spec.vcpus}};
  json memory = {{"size", static_cast<int64_t>(spec.memory_mib) << 20}};
  if (spec.hugepages) {
    memory["hugepages"] = true;
  }
  if (!spec.fs_shares.empty()) {
    memory["shared"] = true;  // vhost-user (virtiofsd) maps guest memory
  }
  config["memory"] = memory;
  config["serial"] = {{"mode", "File"}, {"file", spec.console_log_path}};
  config["console"] = {{"mode", "Off"}};
  config["rng"] = {{"src", "/dev/urandom"}};
  uint32_t cid = spec.vsock_cid >= 3 ? spec.vsock_cid : 3;
  config["vsock"] = {{"cid", cid}, {"socket", VsockSocketPath(spec)}, {"id", "agent"}};
  if (config_.balloon) {
    config["balloon"] = {{"size", 0}, {"deflate_on_oom", true}, {"free_page_reporting", true}};
  }
  if (!spec.fs_shares.empty()) {
    json fs = json::array();
    for (size_t i = 0; i < spec.fs_shares.size(); ++i) {
      fs.push_back(BuildFsConfig(spec, i));
    }
    config["fs"] = fs;
  }
  // NICs are added with vm.add-net right after create: only that call can carry the tap fds (SCM_RIGHTS).
  return config;
}

json CloudHypervisorVmm::BuildNetConfig(const VmLaunchSpec& spec, size_t index) const {
  const auto& nic = spec.interfaces[index];
  // One tap queue fd per queue pair (netcni makes one pair per vCPU): num_queues counts rx and tx.
  json net = {{"id", "net" + std::to_string(index)},
              {"mac", nic.guest_mac},
              {"mtu", nic.mtu},
              {"num_queues", static_cast<int>(2 * nic.tap_queue_fds.size())},
              {"queue_size", config_.net_queue_size},
              {"offload_tso", config_.net_offloads},
              {"offload_ufo", config_.net_offloads},
              {"offload_csum", config_.net_offloads}};
  return net;
}

json CloudHypervisorVmm::BuildDiskConfig(const DiskSpec& disk) {
  return {{"path", disk.path},
          {"readonly", disk.read_only},
          {"serial", disk.serial},
          {"id", "disk-" + disk.serial},
          {"image_type", "Raw"}};
}

json CloudHypervisorVmm::BuildFsConfig(const VmLaunchSpec& spec, size_t index) {
  return {{"tag", spec.fs_shares[index].tag},
          {"socket", FsSocketPath(spec, index)},
          {"num_queues", 1},
          {"queue_size", 1024},
          {"id", "fs" + std::to_string(index)}};
}

base::Error CloudHypervisorVmm::Failure(const std::string& what) {
  auto log = base::ReadFile(VmmLogPath(spec_), 1 << 20);
  std::string msg = "VM " + spec_.sandbox_id + ": " + what;
  if (log.ok() && !log->empty()) {
    msg += "\ncloud-hypervisor said: " + base::Tail(*log, 800);
  }
  msg += "\nconsole tail:\n" + ConsoleTail(spec_.console_log_path);
  return base::Unavailable(msg);
}

Status CloudHypervisorVmm::Start(const VmLaunchSpec& spec) {
  if (process_.valid()) {
    return base::FailedPrecondition("VM " + spec.sandbox_id + " is already started");
  }
  CHRYS_RETURN_IF_ERROR(ValidateLaunchSpec(spec));
  spec_ = spec;
  if (spec_.vsock_cid < 3) {
    spec_.vsock_cid = 3 + static_cast<uint32_t>(std::hash<std::string>{}(spec.sandbox_id) % 0x7fff0000u);
  }
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(spec_.run_dir, 0700));
  state_ = VmmProcessState{};
  state_.kind = VmmKind::kCloudHypervisor;
  state_.binary = config_.binary;
  state_.control_socket = ApiSocketPath(spec_);
  state_.agent.kind = AgentChannelKind::kHybridVsock;
  state_.agent.socket_path = VsockSocketPath(spec_);
  state_.agent.vsock_cid = spec_.vsock_cid;
  state_.agent.vsock_port = agent::kAgentVsockPort;
  auto fail = [this](const base::Error& err) -> Status {
    (void)Kill();
    return err;
  };
  if (config_.place_in_cgroup) {
    std::vector<CgroupHierarchy> hierarchies = config_.cgroup_hierarchies;
    if (hierarchies.empty()) {
      CHRYS_ASSIGN_OR_RETURN(hierarchies, DiscoverCgroupHierarchies());
    }
    CHRYS_ASSIGN_OR_RETURN(std::string rel,
                           VmmCgroupRelativePath(spec_.cgroup_parent, spec_.cgroup_driver, spec_.sandbox_id));
    CHRYS_ASSIGN_OR_RETURN(cgroup_, VmmCgroup::Create(hierarchies, rel));
    state_.cgroup_dirs = cgroup_.created_dirs();
  }
  for (const auto& path : {ApiSocketPath(spec_), VsockSocketPath(spec_)}) {
    (void)base::RemoveFileIfExists(path);
  }
  for (size_t i = 0; i < spec_.fs_shares.size(); ++i) {
    auto helper =
        LaunchVirtiofsd(config_.virtiofsd_binary, FsSocketPath(spec_, i), spec_.fs_shares[i], cgroup_.procs_files(),
                        spec_.run_dir + "/virtiofsd-" + std::to_string(i) + ".log", std::chrono::seconds(5));
    if (!helper.ok()) {
      return fail(helper.error());
    }
    state_.helper_pids.push_back(helper->pid());
    state_.helper_start_ticks.push_back(helper->start_ticks());
    helpers_.push_back(std::move(helper).value());
  }
  DetachedLaunchSpec launch;
  launch.argv = BuildCommandLine(spec_);
  launch.netns_path = spec_.netns_path;
  launch.cgroup_procs_files = cgroup_.procs_files();
  launch.output_log_path = spec_.run_dir + "/vmm.stdout";
  auto proc = DetachedProcess::Launch(launch);
  if (!proc.ok()) {
    return fail(proc.error().Wrap("starting cloud-hypervisor for " + spec_.sandbox_id));
  }
  process_ = std::move(proc).value();
  state_.pid = process_.pid();
  state_.start_time_ticks = process_.start_ticks();
  api_ = std::make_unique<ChApiClient>(ApiSocketPath(spec_));

  auto ping = api_->Expect2xx("GET", "vmm.ping", std::nullopt, config_.ping_timeout);
  if (!ping.ok()) {
    return fail(Failure("cloud-hypervisor API did not come up: " + ping.error().message()));
  }
  json pong = json::parse(ping->body, nullptr, false);
  if (!pong.is_object() || !pong.contains("version") || !pong["version"].is_string()) {
    return fail(Failure("vmm.ping answered something that is not a VmmPingResponse: " + ping->body.substr(0, 200)));
  }
  auto created = api_->Expect2xx("PUT", "vm.create", BuildVmConfig(spec_), config_.api_timeout);
  if (!created.ok()) {
    return fail(Failure(created.error().message()));
  }
  for (size_t i = 0; i < spec_.interfaces.size(); ++i) {
    auto added = api_->Expect2xx("PUT", "vm.add-net", BuildNetConfig(spec_, i), config_.api_timeout,
                                 spec_.interfaces[i].tap_queue_fds);
    if (!added.ok()) {
      return fail(Failure("adding interface " + std::to_string(i) + ": " + added.error().message()));
    }
  }
  auto booted = api_->Expect2xx("PUT", "vm.boot", std::nullopt, config_.api_timeout);
  if (!booted.ok()) {
    return fail(Failure("vm.boot: " + booted.error().message()));
  }
  return Status::Ok();
}

Status CloudHypervisorVmm::WaitReady(const ReadinessCheck& check, milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (true) {
    if (!Alive()) {
      base::Error err = Failure("cloud-hypervisor exited while the guest was booting");
      (void)Kill();
      return err;
    }
    if (ConsoleTail(spec_.console_log_path, 4096).find("Kernel panic") != std::string::npos) {
      base::Error err = Failure("the guest kernel panicked");
      (void)Kill();
      return err;
    }
    auto ready = check();
    if (!ready.ok()) {
      base::Error err = Failure("readiness check failed: " + ready.error().message());
      (void)Kill();
      return err;
    }
    if (*ready) {
      return Status::Ok();
    }
    if (Clock::now() >= deadline) {
      base::Error err = Failure("the guest did not become ready within " + std::to_string(timeout.count()) + "ms");
      (void)Kill();
      return base::DeadlineExceeded(err.message());
    }
    std::this_thread::sleep_for(milliseconds(50));
  }
}

Status CloudHypervisorVmm::HotplugDisk(const DiskSpec& disk, milliseconds timeout) {
  CHRYS_RETURN_IF_ERROR(ValidateDiskSpec(disk));
  if (!api_) {
    return base::FailedPrecondition("VM " + spec_.sandbox_id + " is not running");
  }
  for (const auto& d : state_.plugged_disks) {
    if (d.serial == disk.serial) {
      return base::MakeError(base::ErrorCode::kAlreadyExists, "a disk with serial " + disk.serial + " is plugged");
    }
  }
  std::string id = "disk-" + disk.serial;
  auto added = api_->Expect2xx("PUT", "vm.add-disk", BuildDiskConfig(disk), timeout);
  if (!added.ok()) {
    // vm.add-disk is not idempotent: no blind retry. If the reply was lost the device may exist; remove it by id.
    if (added.error().code() == base::ErrorCode::kDeadlineExceeded ||
        added.error().code() == base::ErrorCode::kUnavailable) {
      (void)api_->Call("PUT", "vm.remove-device", json{{"id", id}}, timeout);
    }
    return added.error().Wrap("hot-plugging disk " + disk.serial);
  }
  if (added->status == 200) {
    json info = json::parse(added->body, nullptr, false);
    if (!info.is_object() || !info.contains("id") || !info["id"].is_string() || !info.contains("bdf")) {
      // Half done: the VMM says it added something we cannot identify. Undo by our own id.
      auto undo = api_->Call("PUT", "vm.remove-device", json{{"id", id}}, timeout);
      std::string extra = undo.ok() ? "" : " (rollback failed: " + undo.error().message() + ")";
      return base::Internal("hot-plugging disk " + disk.serial +
                            ": vm.add-disk answered an unreadable PciDeviceInfo: " + added->body.substr(0, 120) +
                            extra);
    }
    id = info["id"].get<std::string>();
  }
  state_.plugged_disks.push_back({disk.serial, id, -1, disk.read_only, disk.path});
  return Status::Ok();
}

// Cloud Hypervisor takes a hot-plugged NIC's tap fds as SCM_RIGHTS on its API socket (PUT /vm.add-net), which
// this HTTP client cannot send; CH VMs get their NICs at launch and are not pooled.
Status CloudHypervisorVmm::HotplugNic(const NetInterfaceSpec& nic, milliseconds /*timeout*/) {
  return base::MakeError(base::ErrorCode::kUnimplemented,
                         "NIC " + nic.guest_mac + ": Cloud Hypervisor VMs get their NICs at launch (no hot-plug)");
}

// CH VMs are sized for their pod at launch (they are never pooled, so never grown to a pod's size).
Status CloudHypervisorVmm::Grow(int vcpus, int memory_mib, milliseconds /*timeout*/) {
  return base::MakeError(base::ErrorCode::kUnimplemented, "growing a Cloud Hypervisor VM to " + std::to_string(vcpus) +
                                                              " vCPUs and " + std::to_string(memory_mib) +
                                                              " MiB: its VMs are sized for their pod at launch");
}

Status CloudHypervisorVmm::Rehome(const VmLaunchSpec& target) {
  return base::MakeError(
      base::ErrorCode::kUnimplemented,
      "sandbox " + target.sandbox_id + ": Cloud Hypervisor VMs are launched for their pod, never pooled");
}

Status CloudHypervisorVmm::SaveState(const std::string& /*state_path*/, milliseconds /*timeout*/) {
  return base::MakeError(base::ErrorCode::kUnimplemented,
                         "VM " + spec_.sandbox_id + ": Cloud Hypervisor VMs are launched for their pod, never cloned");
}

Status CloudHypervisorVmm::UnplugDisk(const std::string& serial, milliseconds timeout) {
  auto it = std::find_if(state_.plugged_disks.begin(), state_.plugged_disks.end(),
                         [&](const PluggedDisk& d) { return d.serial == serial; });
  if (it == state_.plugged_disks.end()) {
    return base::NotFound("no disk with serial " + serial + " is plugged into " + spec_.sandbox_id);
  }
  if (!api_) {
    return base::FailedPrecondition("VM " + spec_.sandbox_id + " is not running");
  }
  auto removed = api_->Expect2xx("PUT", "vm.remove-device", json{{"id", it->device_id}}, timeout);
  if (!removed.ok()) {
    return removed.error().Wrap("unplugging disk " + serial);
  }
  state_.plugged_disks.erase(it);
  return Status::Ok();
}

Status CloudHypervisorVmm::Shutdown(bool graceful, milliseconds timeout) {
  if (api_ && Alive() && graceful) {
    auto pressed = api_->Call("PUT", "vm.power-button", std::nullopt, std::min(timeout, config_.api_timeout));
    if (pressed.ok() && pressed->status / 100 == 2) {
      // Cloud Hypervisor exits once the guest powers off.
      process_.WaitExit(timeout);
    }
  }
  if (api_ && Alive()) {
    (void)api_->Call("PUT", "vm.shutdown", std::nullopt, milliseconds(1000));
    (void)api_->Call("PUT", "vmm.shutdown", std::nullopt, milliseconds(1000));
    process_.WaitExit(milliseconds(1000));
  }
  if (process_.valid() && Alive()) {
    CHRYS_RETURN_IF_ERROR(process_.Terminate(std::chrono::seconds(2)));
  }
  process_.WaitExit(milliseconds(0));
  return Cleanup();
}

Status CloudHypervisorVmm::Kill() {
  if (process_.valid()) {
    (void)process_.Signal(SIGKILL);
    process_.WaitExit(std::chrono::seconds(10));
  }
  return Cleanup();
}

Status CloudHypervisorVmm::Cleanup() {
  api_.reset();
  std::string first_error;
  for (auto& helper : helpers_) {
    Status s = helper.Terminate(std::chrono::seconds(2));
    if (!s.ok() && first_error.empty()) {
      first_error = s.error().message();
    }
  }
  helpers_.clear();
  if (!spec_.run_dir.empty()) {
    std::vector<std::string> sockets = {ApiSocketPath(spec_), VsockSocketPath(spec_)};
    for (size_t i = 0; i < spec_.fs_shares.size(); ++i) {
      sockets.push_back(FsSocketPath(spec_, i));
    }
    for (const auto& s : sockets) {
      (void)base::RemoveFileIfExists(s);
    }
  }
  Status cg = cgroup_.Remove(std::chrono::seconds(2));
  if (!cg.ok() && first_error.empty()) {
    first_error = cg.error().message();
  }
  state_.cgroup_dirs = cgroup_.created_dirs();
  state_.plugged_disks.clear();
  if (!first_error.empty()) {
    return base::Internal("cleaning up VM " + spec_.sandbox_id + ": " + first_error);
  }
  return Status::Ok();
}

Result<VmInfo> CloudHypervisorVmm::Info() {
  VmInfo info;
  info.pid = state_.pid;
  if (!Alive() || !api_) {
    info.state = VmRunState::kShutdown;
    info.detail = "exited";
    return info;
  }
  CHRYS_ASSIGN_OR_RETURN(HttpResponse resp, api_->Expect2xx("GET", "vm.info", std::nullopt, config_.api_timeout));
  json body = json::parse(resp.body, nullptr, false);
  if (!body.is_object() || !body.contains("state") || !body["state"].is_string()) {
    return base::Internal("vm.info answered something that is not a VmInfo: " + resp.body.substr(0, 200));
  }
  info.detail = body["state"].get<std::string>();
  if (info.detail == "Running") {
    info.state = VmRunState::kRunning;
  } else if (info.detail == "Paused" || info.detail == "Created" || info.detail == "BreakPoint") {
    info.state = VmRunState::kPaused;
  } else if (info.detail == "Shutdown") {
    info.state = VmRunState::kShutdown;
  }
  return info;
}

Status CloudHypervisorVmm::Adopt(const VmmProcessState& state, const VmLaunchSpec& spec) {
  if (state.kind != VmmKind::kCloudHypervisor) {
    return base::InvalidArgument("adopt: state is not a Cloud Hypervisor VM");
  }
  spec_ = spec;
  state_ = state;
  cgroup_ = VmmCgroup::FromCreatedDirs(state.cgroup_dirs);
  CHRYS_ASSIGN_OR_RETURN(process_, DetachedProcess::Attach(state.pid, state.start_time_ticks, state.binary));
  for (size_t i = 0; i < state.helper_pids.size(); ++i) {
    uint64_t ticks = i < state.helper_start_ticks.size() ? state.helper_start_ticks[i] : 0;
    CHRYS_ASSIGN_OR_RETURN(DetachedProcess helper,
                           DetachedProcess::Attach(state.helper_pids[i], ticks, config_.virtiofsd_binary));
    helpers_.push_back(std::move(helper));
  }
  api_ = std::make_unique<ChApiClient>(state.control_socket);
  CHRYS_RETURN_IF_ERROR(api_->Expect2xx("GET", "vmm.ping", std::nullopt, config_.api_timeout));
  CHRYS_ASSIGN_OR_RETURN(VmInfo info, Info());
  if (info.state != VmRunState::kRunning) {
    return base::Unavailable("VM " + spec.sandbox_id + " is " + info.detail + ", not running");
  }
  return Status::Ok();
}

bool CloudHypervisorVmm::Alive() const {
  return process_.valid() && process_.Alive();
}

}  // namespace chrys::runtime
