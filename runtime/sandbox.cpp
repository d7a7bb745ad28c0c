#include "runtime/sandbox.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <regex>
#include <thread>

#include "base/file_util.h"
#include "base/scratch_disk.h"
#include "base/subprocess.h"
#include "runtime/cloud_hypervisor.h"
#include "runtime/process.h"
#include "runtime/qemu.h"
#include "runtime/sandbox_record.h"

namespace chrys::runtime {

using base::Result;
using base::Status;
using nlohmann::json;
using std::chrono::milliseconds;

const char* SandboxStateName(SandboxState state) {
  switch (state) {
    case SandboxState::kCreating:
      return "creating";
    case SandboxState::kBooting:
      return "booting";
    case SandboxState::kReady:
      return "ready";
    case SandboxState::kNotReady:
      return "notready";
    case SandboxState::kStopping:
      return "stopping";
    case SandboxState::kStopped:
      return "stopped";
  }
  return "unknown";
}

namespace {

std::optional<SandboxState> ParseState(const std::string& name) {
  for (auto s : {SandboxState::kCreating, SandboxState::kBooting, SandboxState::kReady, SandboxState::kNotReady,
                 SandboxState::kStopping, SandboxState::kStopped}) {
    if (name == SandboxStateName(s)) {
      return s;
    }
  }
  return std::nullopt;
}

json DisksToJson(const std::vector<PluggedDisk>& disks) {
  json out = json::array();
  for (const auto& d : disks) {
    out.push_back({{"serial", d.serial},
                   {"device_id", d.device_id},
                   {"slot", d.slot},
                   {"read_only", d.read_only},
                   {"path", d.path}});
  }
  return out;
}

std::vector<PluggedDisk> DisksFromJson(const json& j) {
  std::vector<PluggedDisk> out;
  if (!j.is_array()) {
    return out;
  }
  for (const auto& d : j) {
    out.push_back({d.value("serial", ""), d.value("device_id", ""), d.value("slot", -1), d.value("read_only", true),
                   d.value("path", "")});
  }
  return out;
}

json NicsToJson(const std::vector<PluggedNic>& nics) {
  json out = json::array();
  for (const auto& n : nics) {
    out.push_back({{"device_id", n.device_id}, {"netdev_id", n.netdev_id}, {"slot", n.slot}, {"mac", n.mac}});
  }
  return out;
}

json SharesToJson(const std::vector<PluggedShare>& shares) {
  json out = json::array();
  for (const auto& s : shares) {
    out.push_back({{"tag", s.tag}, {"device_id", s.device_id}, {"slot", s.slot}});
  }
  return out;
}

json ProcessStateToJson(const VmmProcessState& s) {
  return {{"kind", VmmKindName(s.kind)},
          {"pid", s.pid},
          {"start_time_ticks", s.start_time_ticks},
          {"binary", s.binary},
          {"control_socket", s.control_socket},
          {"helper_pids", s.helper_pids},
          {"helper_start_ticks", s.helper_start_ticks},
          {"cgroup_dirs", s.cgroup_dirs},
          {"agent",
           {{"kind", AgentChannelKindName(s.agent.kind)},
            {"socket_path", s.agent.socket_path},
            {"vsock_cid", s.agent.vsock_cid},
            {"vsock_port", s.agent.vsock_port}}},
          {"disks", DisksToJson(s.plugged_disks)},
          {"nics", NicsToJson(s.plugged_nics)},
          {"shares", SharesToJson(s.plugged_shares)},
          {"disk_hotplug_bus", s.disk_hotplug_bus}};
}

VmmProcessState ProcessStateFromJson(const json& j) {
  VmmProcessState s;
  s.kind = j.value("kind", "") == "cloud-hypervisor" ? VmmKind::kCloudHypervisor : VmmKind::kQemu;
  s.pid = j.value("pid", 0);
  s.start_time_ticks = j.value("start_time_ticks", uint64_t{0});
  s.binary = j.value("binary", "");
  s.control_socket = j.value("control_socket", "");
  s.helper_pids = j.value("helper_pids", std::vector<pid_t>{});
  s.helper_start_ticks = j.value("helper_start_ticks", std::vector<uint64_t>{});
  s.cgroup_dirs = j.value("cgroup_dirs", std::vector<std::string>{});
  if (j.contains("agent") && j["agent"].is_object()) {
    const json& a = j["agent"];
    std::string kind = a.value("kind", "");
    s.agent.kind = kind == "vhost-vsock"    ? AgentChannelKind::kVhostVsock
                   : kind == "hybrid-vsock" ? AgentChannelKind::kHybridVsock
                                            : AgentChannelKind::kVirtioSerial;
    s.agent.socket_path = a.value("socket_path", "");
    s.agent.vsock_cid = a.value("vsock_cid", 0u);
    s.agent.vsock_port = a.value("vsock_port", 1024u);
  }
  s.plugged_disks = DisksFromJson(j.value("disks", json::array()));
  for (const auto& n : j.value("nics", json::array())) {
    s.plugged_nics.push_back(
        {n.value("device_id", ""), n.value("netdev_id", ""), n.value("slot", -1), n.value("mac", "")});
  }
  for (const auto& f : j.value("shares", json::array())) {
    s.plugged_shares.push_back({f.value("tag", ""), f.value("device_id", ""), f.value("slot", -1)});
  }
  if (s.kind == VmmKind::kQemu) {
    s.disk_hotplug_bus = j.value("disk_hotplug_bus", std::string(kDiskBusRootPorts));
  }
  return s;
}

// The parts of the launch spec a restarted chrysd needs (fds are not persisted: the VMM holds its copies).
json LaunchSpecToJson(const VmLaunchSpec& s) {
  json shares = json::array();
  for (const auto& f : s.fs_shares) {
    shares.push_back({{"tag", f.tag}, {"host_dir", f.host_dir}, {"read_only", f.read_only}});
  }
  json disks = json::array();
  for (const auto& d : s.disks) {
    disks.push_back({{"serial", d.serial}, {"path", d.path}, {"read_only", d.read_only}});
  }
  return {{"sandbox_id", s.sandbox_id},
          {"kernel", s.kernel_path},
          {"initramfs", s.initramfs_path},
          {"cmdline", s.kernel_cmdline},
          {"vcpus", s.vcpus},
          {"memory_mib", s.memory_mib},
          {"max_vcpus", s.max_vcpus},
          {"max_memory_mib", s.max_memory_mib},
          {"run_dir", s.run_dir},
          {"console", s.console_log_path},
          {"netns", s.netns_path},
          {"cgroup_parent", s.cgroup_parent},
          {"fs_shares", shares},
          {"disks", disks},
          {"vsock_cid", s.vsock_cid}};
}

VmLaunchSpec LaunchSpecFromJson(const json& j) {
  VmLaunchSpec s;
  s.sandbox_id = j.value("sandbox_id", "");
  s.kernel_path = j.value("kernel", "");
  s.initramfs_path = j.value("initramfs", "");
  s.kernel_cmdline = j.value("cmdline", "");
  s.vcpus = j.value("vcpus", 1);
  s.memory_mib = j.value("memory_mib", 512);
  s.max_vcpus = j.value("max_vcpus", 0);
  s.max_memory_mib = j.value("max_memory_mib", 0);
  s.run_dir = j.value("run_dir", "");
  s.console_log_path = j.value("console", "");
  s.netns_path = j.value("netns", "");
  s.cgroup_parent = j.value("cgroup_parent", "");
  s.vsock_cid = j.value("vsock_cid", 0u);
  for (const auto& f : j.value("fs_shares", json::array())) {
    s.fs_shares.push_back({f.value("tag", ""), f.value("host_dir", ""), f.value("read_only", false)});
  }
  for (const auto& d : j.value("disks", json::array())) {
    s.disks.push_back({d.value("serial", ""), d.value("path", ""), d.value("read_only", true)});
  }
  return s;
}

bool IsScratchPath(const std::string& state_dir, const std::string& path) {
  return path.rfind(state_dir + "/disks/", 0) == 0;
}

}  // namespace

int VcpusFor(const PodResources& pod, const VmSizing& sizing) {
  int vcpus = pod.cpu_millis > 0 ? static_cast<int>((pod.cpu_millis + 999) / 1000) : sizing.default_vcpus;
  vcpus += sizing.overhead_vcpus;
  return std::clamp(vcpus, 1, std::max(1, sizing.max_vcpus));
}

int MemoryMibFor(const PodResources& pod, const VmSizing& sizing) {
  constexpr int64_t kMiB = 1 << 20;
  int64_t mib = pod.memory_bytes > 0 ? (pod.memory_bytes + kMiB - 1) / kMiB : sizing.default_memory_mib;
  mib += sizing.overhead_memory_mib;
  return static_cast<int>(std::max<int64_t>(mib, 64));
}

Result<VmmKind> SelectVmmKind(const std::string& handler, bool ch_usable) {
  if (handler == "chrysalis" || handler.empty()) {
    return ch_usable ? VmmKind::kCloudHypervisor : VmmKind::kQemu;
  }
  // Confidential guests are QEMU's: the VMM factory launches them from their plan (disk boot, SEV-SNP or TDX
  // arguments); chrysd refuses the TEE handlers earlier on hosts that lack the TEE.
  if (handler == "chrysalis-qemu" || handler == "chrysalis-cvm" || handler == "chrysalis-snp" ||
      handler == "chrysalis-tdx") {
    return VmmKind::kQemu;
  }
  return base::InvalidArgument("unknown runtime handler \"" + handler +
                               "\" (known: chrysalis, chrysalis-qemu, chrysalis-cvm, chrysalis-snp, chrysalis-tdx)");
}

SandboxManager::SandboxManager(SandboxManagerOptions options) : options_(std::move(options)) {}

SandboxManager::~SandboxManager() {
  StopWarmPool();
}

Result<std::unique_ptr<Vmm>> SandboxManager::MakeVmm(VmmKind kind) {
  if (options_.vmm_factory) {
    return options_.vmm_factory(kind);
  }
  if (kind == VmmKind::kQemu) {
    return std::unique_ptr<Vmm>(std::make_unique<QemuVmm>(QemuConfig{}));
  }
  return std::unique_ptr<Vmm>(std::make_unique<CloudHypervisorVmm>(CloudHypervisorConfig{}));
}

std::shared_ptr<SandboxManager::Sandbox> SandboxManager::Find(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sandboxes_.find(id);
  return it == sandboxes_.end() ? nullptr : it->second;
}

Status SandboxManager::Persist(Sandbox& sb) {
  if (sb.vmm) {
    sb.process = sb.vmm->process_state();
  }
  json record = {{"id", sb.id},
                 {"handler", sb.handler},
                 {"state", SandboxStateName(sb.state)},
                 {"vmm", VmmKindName(sb.kind)},
                 {"spec", LaunchSpecToJson(sb.spec)},
                 {"process", ProcessStateToJson(sb.process)},
                 {"error", sb.error}};
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(SandboxStateDir(sb.id), 0700));
  return base::WriteFileAtomic(SandboxStateDir(sb.id) + "/sandbox.json", record.dump(2), 0600);
}

SandboxStatus SandboxManager::Snapshot(const Sandbox& sb) const {
  SandboxStatus st;
  st.id = sb.id;
  st.state = sb.state;
  st.vmm = sb.kind;
  st.vmm_pid = sb.process.pid;
  st.agent = sb.process.agent;
  st.console_log_path = sb.spec.console_log_path;
  st.error = sb.error;
  st.disks = sb.process.plugged_disks;
  st.launch_time = sb.launch_time;
  st.boot_time = sb.boot_time;
  st.vcpus = sb.spec.vcpus;
  st.memory_mib = sb.spec.memory_mib;
  st.fs_shares = sb.spec.fs_shares;
  st.from_warm_pool = sb.from_warm_pool;
  st.claim_time = sb.claim_time;
  // Every driver serves the serial console on <run_dir>/console.sock; VMs started before that have none.
  std::string console = sb.spec.run_dir + "/console.sock";
  struct stat console_stat {};
  if (!sb.spec.run_dir.empty() && ::stat(console.c_str(), &console_stat) == 0 && S_ISSOCK(console_stat.st_mode)) {
    st.console_socket = console;
  }
  return st;
}

void SandboxManager::CleanupFailedCreate(Sandbox& sb) {
  if (options_.agent) {
    options_.agent->Forget(sb.id);
  }
  if (sb.vmm) {
    (void)sb.vmm->Kill();
  }
  (void)base::RemoveTree(SandboxRunDir(sb.id));
  (void)base::RemoveTree(SandboxStateDir(sb.id));
  std::lock_guard<std::mutex> lock(mu_);
  sandboxes_.erase(sb.id);
}

Result<SandboxStatus> SandboxManager::Create(const SandboxRequest& request) {
  static const std::regex kId("^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$");
  if (!std::regex_match(request.id, kId)) {
    return base::InvalidArgument("sandbox id \"" + request.id + "\" must be 1-64 of [A-Za-z0-9_.-]");
  }
  CHRYS_ASSIGN_OR_RETURN(VmmKind kind, SelectVmmKind(request.handler, options_.ch_usable));
  if (IsWarmId(request.id)) {
    return base::InvalidArgument("sandbox id \"" + request.id + "\" uses the warm pool's prefix " + kWarmIdPrefix);
  }
  if (auto claimed = ClaimWarm(request, kind)) {
    return std::move(*claimed);
  }
  auto sb = std::make_shared<Sandbox>();
  sb->id = request.id;
  sb->handler = request.handler;
  sb->kind = kind;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (sandboxes_.count(request.id) != 0 ||
        ::access((SandboxStateDir(request.id) + "/sandbox.json").c_str(), F_OK) == 0) {
      return base::MakeError(base::ErrorCode::kAlreadyExists, "sandbox " + request.id + " already exists");
    }
    sandboxes_[request.id] = sb;
  }
  std::lock_guard<std::mutex> sandbox_lock(sb->mu);
  CHRYS_RETURN_IF_ERROR(Boot(*sb, request, kind));
  return Snapshot(*sb);
}

void SandboxManager::BootingVmm::Set(const VmmProcessState& process) {
  std::lock_guard lock(mu_);
  process_ = process;
}

void SandboxManager::BootingVmm::Clear() {
  std::lock_guard lock(mu_);
  process_ = VmmProcessState();
}

void SandboxManager::BootingVmm::Kill() {
  std::lock_guard lock(mu_);
  if (process_.pid <= 0) {
    return;
  }
  // Attach succeeds only for the very process (start time and binary), through a pidfd held from then on.
  auto vmm = DetachedProcess::Attach(process_.pid, process_.start_time_ticks, process_.binary);
  if (vmm.ok()) {
    (void)vmm->Signal(SIGKILL);
  }
}

Status SandboxManager::Boot(Sandbox& sb, const SandboxRequest& request, VmmKind kind, BootingVmm* booting) {
  VmLaunchSpec& spec = sb.spec;
  spec.sandbox_id = request.id;
  spec.kernel_path = options_.kernel_path;
  spec.initramfs_path = options_.initramfs_path;
  spec.kernel_cmdline = options_.kernel_cmdline + (request.extra_cmdline.empty() ? "" : " " + request.extra_cmdline);
  spec.vcpus = VcpusFor(request.resources, options_.sizing);
  spec.memory_mib = MemoryMibFor(request.resources, options_.sizing);
  spec.max_vcpus = request.max_vcpus > spec.vcpus ? request.max_vcpus : 0;
  spec.max_memory_mib = request.max_memory_mib > spec.memory_mib ? request.max_memory_mib : 0;
  spec.interfaces = request.interfaces;
  spec.fs_shares = request.fs_shares;
  spec.disks = options_.boot_disks;
  spec.agent_channel = kind == VmmKind::kCloudHypervisor ? AgentChannelKind::kHybridVsock : options_.agent_channel;
  spec.run_dir = SandboxRunDir(request.id);
  spec.console_log_path = SandboxStateDir(request.id) + "/console.log";
  spec.netns_path = request.netns_path;
  spec.cgroup_parent = request.cgroup_parent;
  spec.cgroup_driver = request.cgroup_driver;
  spec.memory_fd = request.memory_fd;
  spec.restore_state_path = request.restore_state_path;

  auto fail = [&](const base::Error& err) -> base::Error {
    CleanupFailedCreate(sb);
    return err;
  };
  Status valid = ValidateLaunchSpec(spec);
  if (!valid.ok()) {
    return fail(valid.error());
  }
  sb.state = SandboxState::kCreating;
  Status persisted = Persist(sb);
  if (!persisted.ok()) {
    return fail(persisted.error().Wrap("recording sandbox " + request.id));
  }
  auto vmm = MakeVmm(kind);
  if (!vmm.ok()) {
    return fail(vmm.error());
  }
  sb.vmm = std::move(vmm).value();
  Status dirs = base::MakeDirs(spec.run_dir, 0700);
  if (!dirs.ok()) {
    return fail(dirs.error());
  }
  sb.state = SandboxState::kBooting;
  auto launch_start = std::chrono::steady_clock::now();
  Status started = sb.vmm->Start(spec);
  if (!started.ok()) {
    return fail(started.error().Wrap("starting the VM of sandbox " + request.id));
  }
  if (booting != nullptr) {
    booting->Set(sb.vmm->process_state());
  }
  // From here a crash leaves a record with the VMM's pid: the next Recover finds and removes it.
  persisted = Persist(sb);
  if (!persisted.ok()) {
    return fail(persisted.error().Wrap("recording sandbox " + request.id));
  }
  AgentEndpoint endpoint = sb.vmm->agent_endpoint();
  std::string id = request.id;
  auto agent = options_.agent;
  auto boot_deadline = std::chrono::steady_clock::now() + options_.boot_timeout;
  ReadinessCheck check = [agent, id, endpoint, boot_deadline]() -> Result<bool> {
    if (!agent) {
      return true;
    }
    // One Ping waits out the whole boot: a guest that dies closes the channel, which fails it at once. A Ping
    // that expired while the guest was still booting made the host dial again just as the agent came up, and
    // that second session could stall until its own deadline: with 10 VMs booting at once under TCG (~11 s
    // each) and a 10 s cap per Ping, 2 of 10 pods became ready ~9 s after the rest.
    auto left = std::chrono::duration_cast<milliseconds>(boot_deadline - std::chrono::steady_clock::now());
    return agent->Probe(id, endpoint, std::max(left, milliseconds(100)));
  };
  auto boot_start = std::chrono::steady_clock::now();
  Status ready = sb.vmm->WaitReady(check, options_.boot_timeout);
  if (!ready.ok()) {
    return fail(ready.error().Wrap("sandbox " + request.id + " did not become ready"));
  }
  if (!spec.restore_state_path.empty() && agent) {
    // A clone resumes the template's clock and random state: both must become its own before anything runs in it.
    Status resumed = agent->Resume(id, endpoint, options_.hotplug_timeout);
    if (!resumed.ok()) {
      return fail(resumed.error().Wrap("sandbox " + request.id + " (restored from the template)"));
    }
  }
  // The fds were the caller's, for the launch only.
  spec.memory_fd = -1;
  sb.launch_time = std::chrono::duration_cast<std::chrono::milliseconds>(boot_start - launch_start);
  sb.boot_time = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - boot_start);
  sb.state = SandboxState::kReady;
  persisted = Persist(sb);
  if (!persisted.ok()) {
    return fail(persisted.error().Wrap("recording sandbox " + request.id));
  }
  return Status::Ok();
}

Status SandboxManager::StopLocked(Sandbox& sb) {
  if (sb.state == SandboxState::kStopped) {
    return Status::Ok();
  }
  sb.state = SandboxState::kStopping;
  (void)Persist(sb);
  auto deadline = std::chrono::steady_clock::now() + options_.graceful_stop_timeout;
  if (sb.vmm && sb.vmm->Alive() && options_.agent) {
    Status asked = options_.agent->Shutdown(sb.id, sb.process.agent, options_.graceful_stop_timeout / 2);
    (void)asked;  // a guest that does not answer is powered down below
  }
  if (options_.agent) {
    options_.agent->Forget(sb.id);
  }
  std::string first_error;
  if (sb.vmm) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    Status down = sb.vmm->Shutdown(/*graceful=*/true, std::max(left, milliseconds(100)));
    if (!down.ok()) {
      first_error = down.error().message();
    }
    sb.process = sb.vmm->process_state();
  }
  // Scratch disks live and die with the sandbox; layer images belong to the image store.
  (void)base::RemoveTree(SandboxStateDir(sb.id) + "/disks");
  Status run = base::RemoveTree(SandboxRunDir(sb.id));
  if (!run.ok() && first_error.empty()) {
    first_error = run.error().message();
  }
  if (!first_error.empty()) {
    sb.error = first_error;
    (void)Persist(sb);
    return base::Internal("stopping sandbox " + sb.id + ": " + first_error);
  }
  sb.state = SandboxState::kStopped;
  sb.process.pid = 0;
  sb.process.helper_pids.clear();
  return Persist(sb);
}

Status SandboxManager::Stop(const std::string& id) {
  auto sb = Find(id);
  if (!sb) {
    return base::NotFound("sandbox " + id + " not found");
  }
  std::lock_guard<std::mutex> lock(sb->mu);
  return StopLocked(*sb);
}

Status SandboxManager::Remove(const std::string& id) {
  auto sb = Find(id);
  if (!sb) {
    return Status::Ok();  // idempotent
  }
  {
    std::lock_guard<std::mutex> lock(sb->mu);
    CHRYS_RETURN_IF_ERROR(StopLocked(*sb));
    CHRYS_RETURN_IF_ERROR(base::RemoveTree(SandboxStateDir(id)));
  }
  std::lock_guard<std::mutex> lock(mu_);
  sandboxes_.erase(id);
  return Status::Ok();
}

Status SandboxManager::AttachLayerDisk(const std::string& id, const std::string& serial,
                                       const std::string& image_path) {
  auto sb = Find(id);
  if (!sb) {
    return base::NotFound("sandbox " + id + " not found");
  }
  std::lock_guard<std::mutex> lock(sb->mu);
  if (sb->state != SandboxState::kReady || !sb->vmm) {
    return base::FailedPrecondition("sandbox " + id + " is " + SandboxStateName(sb->state) + ", not ready");
  }
  CHRYS_RETURN_IF_ERROR(sb->vmm->HotplugDisk({serial, image_path, /*read_only=*/true}, options_.hotplug_timeout));
  return Persist(*sb);
}

Result<std::string> SandboxManager::AttachScratchDisk(const std::string& id, const std::string& serial,
                                                      uint64_t size_bytes) {
  auto sb = Find(id);
  if (!sb) {
    return base::NotFound("sandbox " + id + " not found");
  }
  std::lock_guard<std::mutex> lock(sb->mu);
  if (sb->state != SandboxState::kReady || !sb->vmm) {
    return base::FailedPrecondition("sandbox " + id + " is " + SandboxStateName(sb->state) + ", not ready");
  }
  if (size_bytes < (1 << 20) || size_bytes > (1ULL << 44)) {
    return base::InvalidArgument("scratch disk size " + std::to_string(size_bytes) + " is outside 1MiB..16TiB");
  }
  static const std::regex kSerial("^[A-Za-z0-9_-]{1,20}$");
  if (!std::regex_match(serial, kSerial)) {
    return base::InvalidArgument("disk serial \"" + serial + "\" must be 1-20 of [A-Za-z0-9_-]");
  }
  std::string dir = SandboxStateDir(id) + "/disks";
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(dir, 0700));
  std::string path = dir + "/" + serial + ".img";
  base::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid()) {
    return base::SystemError("creating scratch disk " + path);
  }
  if (::ftruncate(fd.get(), static_cast<off_t>(size_bytes)) != 0) {
    base::Error err = base::SystemError("sizing scratch disk " + path);
    (void)base::RemoveFileIfExists(path);
    return err;
  }
  fd.Reset();
  if (!options_.scratch_mkfs.empty() && ::access(options_.scratch_mkfs.c_str(), X_OK) == 0) {
    base::CommandSpec mkfs;
    mkfs.argv = base::ScratchMkfsArgv(options_.scratch_mkfs, path);
    mkfs.timeout = std::chrono::seconds(30);
    auto formatted = base::RunCommand(mkfs);
    if (!formatted.ok() || !formatted->success()) {
      base::Error err =
          base::Internal("formatting scratch disk " + path + " with " + options_.scratch_mkfs + " failed: " +
                         (formatted.ok() ? formatted->stderr_data.substr(0, 1024) : formatted.error().message()));
      (void)base::RemoveFileIfExists(path);
      return err;
    }
  }
  Status plugged = sb->vmm->HotplugDisk({serial, path, /*read_only=*/false}, options_.hotplug_timeout);
  if (!plugged.ok()) {
    (void)base::RemoveFileIfExists(path);
    return plugged.error();
  }
  CHRYS_RETURN_IF_ERROR(Persist(*sb));
  return path;
}

Status SandboxManager::DetachDisk(const std::string& id, const std::string& serial) {
  auto sb = Find(id);
  if (!sb) {
    return base::NotFound("sandbox " + id + " not found");
  }
  std::lock_guard<std::mutex> lock(sb->mu);
  if (!sb->vmm) {
    return base::FailedPrecondition("sandbox " + id + " has no running VM");
  }
  std::string path;
  for (const auto& d : sb->vmm->process_state().plugged_disks) {
    if (d.serial == serial) {
      path = d.path;
    }
  }
  CHRYS_RETURN_IF_ERROR(sb->vmm->UnplugDisk(serial, options_.hotplug_timeout));
  if (!path.empty() && IsScratchPath(SandboxStateDir(id), path)) {
    CHRYS_RETURN_IF_ERROR(base::RemoveFileIfExists(path));
  }
  return Persist(*sb);
}

Result<SandboxStatus> SandboxManager::Inspect(const std::string& id) {
  auto sb = Find(id);
  if (!sb) {
    return base::NotFound("sandbox " + id + " not found");
  }
  std::lock_guard<std::mutex> lock(sb->mu);
  return Snapshot(*sb);
}

std::vector<SandboxStatus> SandboxManager::List() {
  std::vector<std::shared_ptr<Sandbox>> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, sb] : sandboxes_) {
      all.push_back(sb);
    }
  }
  std::vector<SandboxStatus> out;
  for (auto& sb : all) {
    std::lock_guard<std::mutex> lock(sb->mu);
    out.push_back(Snapshot(*sb));
  }
  return out;
}

Result<SandboxState> SandboxManager::Refresh(const std::string& id) {
  auto sb = Find(id);
  if (!sb) {
    return base::NotFound("sandbox " + id + " not found");
  }
  std::lock_guard<std::mutex> lock(sb->mu);
  if (sb->state != SandboxState::kReady) {
    return sb->state;
  }
  bool dead = !sb->vmm || !sb->vmm->Alive();
  std::string why;
  if (!dead) {
    auto info = sb->vmm->Info();
    if (!info.ok() || info->state == VmRunState::kShutdown) {
      // A broken control socket usually means the VMM is exiting: its sockets close before the process is gone.
      for (int i = 0; i < 20 && !dead; ++i) {
        std::this_thread::sleep_for(milliseconds(100));
        dead = !sb->vmm->Alive();
      }
      if (!dead) {
        why = "the VMM (pid " + std::to_string(sb->process.pid) +
              ") does not answer on its control socket: " + (info.ok() ? "VM is shut down" : info.error().message());
      }
    }
  }
  if (dead || !why.empty()) {
    sb->state = SandboxState::kNotReady;
    sb->error = dead ? "the VMM (pid " + std::to_string(sb->process.pid) + ") exited; console tail:\n" +
                           ConsoleTail(sb->spec.console_log_path, 600)
                     : why;
    if (dead && sb->vmm) {
      (void)sb->vmm->Kill();  // collects sockets and cgroup of the dead VM
    }
    if (options_.agent) {
      options_.agent->Forget(id);
    }
    CHRYS_RETURN_IF_ERROR(Persist(*sb));
  }
  return sb->state;
}

Status SandboxManager::RecoverOne(const std::string& id, RecoveryReport& report) {
  CHRYS_ASSIGN_OR_RETURN(std::string text, base::ReadFile(SandboxStateDir(id) + "/sandbox.json", 1 << 20));
  json record = json::parse(text, nullptr, false);
  if (!record.is_object() || record.value("id", "") != id) {
    // A record we cannot read cannot be trusted to name processes: keep it for an operator, do not act on it.
    return base::Internal("sandbox record " + SandboxStateDir(id) + "/sandbox.json is unreadable");
  }
  auto state = ParseState(record.value("state", ""));
  if (!state) {
    return base::Internal("sandbox record of " + id + " has an unknown state");
  }
  auto sb = std::make_shared<Sandbox>();
  sb->id = id;
  sb->handler = record.value("handler", "chrysalis");
  sb->kind = record.value("vmm", "") == "cloud-hypervisor" ? VmmKind::kCloudHypervisor : VmmKind::kQemu;
  sb->spec = LaunchSpecFromJson(record.value("spec", json::object()));
  sb->process = ProcessStateFromJson(record.value("process", json::object()));
  sb->error = record.value("error", "");
  sb->state = *state;
  {
    std::lock_guard<std::mutex> lock(mu_);
    sandboxes_[id] = sb;
  }
  std::lock_guard<std::mutex> sandbox_lock(sb->mu);
  if (sb->state == SandboxState::kStopped) {
    return Status::Ok();
  }
  CHRYS_ASSIGN_OR_RETURN(sb->vmm, MakeVmm(sb->kind));
  Status adopted =
      sb->process.pid > 0 ? sb->vmm->Adopt(sb->process, sb->spec) : Status(base::NotFound("no VMM was recorded"));
  // A warm VM's share dir is the pool's until a claim completes; nobody else releases it.
  auto release_warm_shares = [this, &sb] {
    const std::string warm_shares = options_.warm_pool.share_root + "/" + kWarmIdPrefix;
    for (const auto& share : sb->spec.fs_shares) {
      if (options_.warm_pool.release_share && !options_.warm_pool.share_root.empty() &&
          share.host_dir.rfind(warm_shares, 0) == 0) {
        (void)options_.warm_pool.release_share(share.host_dir);
      }
    }
  };
  if (IsWarmId(id)) {
    // Warm VMs are not adopted: nobody waits for them, and the pool boots fresh ones.
    CleanupFailedCreate(*sb);
    release_warm_shares();
    report.cleaned_up.push_back(id);
    return Status::Ok();
  }
  switch (sb->state) {
    case SandboxState::kCreating:
    case SandboxState::kBooting:
      // Half-created: the Create that owned it is gone, nobody will finish it.
      CleanupFailedCreate(*sb);
      release_warm_shares();
      report.cleaned_up.push_back(id);
      return Status::Ok();
    case SandboxState::kStopping:
      CHRYS_RETURN_IF_ERROR(StopLocked(*sb));
      report.stopped.push_back(id);
      return Status::Ok();
    default:
      break;
  }
  if (adopted.ok() && options_.agent) {
    // Reconnect the agent: a VM whose agent never answers again is not usable.
    auto deadline = std::chrono::steady_clock::now() + options_.boot_timeout;
    Result<bool> probe = false;
    while (std::chrono::steady_clock::now() < deadline) {
      probe = options_.agent->Probe(id, sb->vmm->agent_endpoint(), milliseconds(1000));
      if (!probe.ok() || *probe) {
        break;
      }
      std::this_thread::sleep_for(milliseconds(100));
    }
    if (!probe.ok() || !*probe) {
      adopted = base::Unavailable("the agent of " + id + " did not answer after adoption" +
                                  (probe.ok() ? "" : ": " + probe.error().message()));
    }
  }
  if (adopted.ok()) {
    sb->state = SandboxState::kReady;
    sb->error.clear();
    report.adopted.push_back(id);
  } else {
    sb->state = SandboxState::kNotReady;
    sb->error = adopted.error().message();
    // Kill only signals a process Adopt verified as ours; otherwise it just collects sockets and cgroups.
    (void)sb->vmm->Kill();
    report.not_ready.push_back(id);
  }
  return Persist(*sb);
}

Result<RecoveryReport> SandboxManager::Recover() {
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(options_.state_dir, 0700));
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(options_.run_dir, 0700));
  RecoveryReport report;
  DIR* dir = ::opendir(options_.state_dir.c_str());
  if (dir == nullptr) {
    return base::SystemError("opening " + options_.state_dir);
  }
  std::vector<std::string> ids;
  while (dirent* e = ::readdir(dir)) {
    std::string name = e->d_name;
    if (name != "." && name != ".." && ::access((SandboxStateDir(name) + "/sandbox.json").c_str(), F_OK) == 0) {
      ids.push_back(name);
    }
  }
  ::closedir(dir);
  std::sort(ids.begin(), ids.end());
  std::string errors;
  for (const auto& id : ids) {
    Status s = RecoverOne(id, report);
    if (!s.ok()) {
      errors += (errors.empty() ? "" : "; ") + s.error().message();
    }
  }
  if (!errors.empty()) {
    return base::Internal("recovering sandboxes: " + errors);
  }
  return report;
}

}  // namespace chrys::runtime
