#include "runtime/confidential/cvm_sandbox.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "runtime/cgroup.h"
#include "runtime/confidential/ovmf_vars.h"
#include "runtime/process.h"

namespace chrys::runtime::confidential {

using base::Result;
using base::Status;
using nlohmann::json;

namespace {

constexpr const char* kAgentPortName = "chrys.agent";

std::string RunDirFile(const VmLaunchSpec& spec, const char* name) {
  return spec.run_dir + "/" + name;
}

}  // namespace

TeeKind TeeKindFromName(const std::string& name) {
  if (name == "sev-snp" || name == "SEV-SNP") {
    return TeeKind::kSevSnp;
  }
  if (name == "tdx" || name == "TDX") {
    return TeeKind::kTdx;
  }
  return TeeKind::kNone;
}

std::string CvmPlanPath(const std::string& plans_dir, const std::string& sandbox_id) {
  return plans_dir + "/" + sandbox_id + "/plan.json";
}

Status SaveCvmPlan(const CvmPlan& p, const std::string& path) {
  std::string tee = p.tee == TeeKind::kSevSnp ? "sev-snp" : p.tee == TeeKind::kTdx ? "tdx" : "none";
  json j = {{"tee", tee},
            {"disk_image", p.disk_image},
            {"vm_dir", p.vm_dir},
            {"ovmf_code", p.ovmf_code},
            {"ovmf_vars", p.ovmf_vars},
            {"firmware_bios", p.firmware_bios},
            {"igvm_file", p.igvm_file},
            {"env_share_dir", p.env_share_dir},
            {"certs_share_dir", p.certs_share_dir},
            {"min_memory_mib", p.min_memory_mib},
            {"boot_timeout_seconds", p.boot_timeout_seconds},
            {"qemu_img", p.qemu_img}};
  size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    CHRYS_RETURN_IF_ERROR(base::MakeDirs(path.substr(0, slash), 0700));
  }
  return base::WriteFileAtomic(path, j.dump(2) + "\n", 0600);
}

Result<CvmPlan> LoadCvmPlan(const std::string& path) {
  CHRYS_ASSIGN_OR_RETURN(std::string text, base::ReadFile(path, 1 << 16));
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) {
    return base::Internal("confidential VM plan " + path + " is not a JSON object");
  }
  auto str = [&](const char* key) {
    return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
  };
  auto num = [&](const char* key, int fallback) {
    return j.contains(key) && j[key].is_number_integer() ? j[key].get<int>() : fallback;
  };
  CvmPlan p;
  p.tee = TeeKindFromName(str("tee"));
  p.disk_image = str("disk_image");
  p.vm_dir = str("vm_dir");
  p.ovmf_code = str("ovmf_code");
  p.ovmf_vars = str("ovmf_vars");
  p.firmware_bios = str("firmware_bios");
  p.igvm_file = str("igvm_file");
  p.env_share_dir = str("env_share_dir");
  p.certs_share_dir = str("certs_share_dir");
  p.min_memory_mib = num("min_memory_mib", p.min_memory_mib);
  p.boot_timeout_seconds = num("boot_timeout_seconds", p.boot_timeout_seconds);
  if (!str("qemu_img").empty()) {
    p.qemu_img = str("qemu_img");
  }
  if (p.disk_image.empty() || p.vm_dir.empty() || p.env_share_dir.empty() || p.certs_share_dir.empty()) {
    return base::Internal("confidential VM plan " + path + " lacks disk_image, vm_dir or a share directory");
  }
  return p;
}

CvmLaunchConfig CvmLaunchConfigFor(const CvmPlan& plan, const VmLaunchSpec& spec, const std::string& qemu_binary,
                                   const std::string& accel) {
  CvmLaunchConfig c;
  c.tee = plan.tee;
  c.boot = BootMode::kDisk;
  c.qemu_binary = qemu_binary;
  c.accel = accel;
  c.vcpus = spec.vcpus;
  c.memory_mib = static_cast<uint64_t>(std::max(spec.memory_mib, plan.min_memory_mib));
  c.disk_image = plan.vm_dir + "/disk.qcow2";
  c.disk_format = "qcow2";
  if (plan.tee == TeeKind::kNone) {
    c.ovmf_code = plan.ovmf_code;
    c.ovmf_vars = plan.vm_dir + "/OVMF_VARS.fd";
  }
  c.firmware_bios = plan.firmware_bios;
  c.igvm_file = plan.igvm_file;
  int next_fd = 3;
  for (size_t i = 0; i < spec.interfaces.size(); ++i) {
    CvmNic nic;
    nic.id = "net" + std::to_string(i);
    nic.kind = CvmNic::Kind::kTap;
    for (size_t q = 0; q < spec.interfaces[i].tap_queue_fds.size(); ++q) {
      nic.tap_queue_fds.push_back(next_fd++);
    }
    nic.mac = spec.interfaces[i].guest_mac;
    c.nics.push_back(std::move(nic));
  }
  c.agent_serial_socket = RunDirFile(spec, "agent.sock");
  c.agent_port_name = kAgentPortName;
  c.env_share_dir = plan.env_share_dir;
  c.certs_share_dir = plan.certs_share_dir;
  c.serial = "file:" + spec.console_log_path;
  c.nodefaults = true;
  c.no_reboot = true;
  c.qmp_socket = RunDirFile(spec, "qmp.sock");
  return c;
}

CvmVmm::CvmVmm(QemuConfig qemu, CvmPlan plan) : qemu_(std::move(qemu)), plan_(std::move(plan)) {}

CvmVmm::~CvmVmm() = default;

Status CvmVmm::PrepareDisk() {
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(plan_.vm_dir, 0700));
  if (::access(plan_.disk_image.c_str(), R_OK) != 0) {
    return base::FailedPrecondition("the HAL disk image " + plan_.disk_image +
                                    " is missing: build it with chrys-hal-build and set confidential.hal_dir");
  }
  // Each VM writes only its own overlay (LUKS header, /cocos data); disk.img stays as built.
  (void)base::RemoveFileIfExists(OverlayPath());
  base::CommandSpec create;
  create.argv = {plan_.qemu_img, "create", "-q", "-f", "qcow2", "-b", plan_.disk_image, "-F", "raw", OverlayPath()};
  create.timeout = std::chrono::seconds(30);
  CHRYS_ASSIGN_OR_RETURN(base::CommandResult made, base::RunCommand(create));
  if (!made.success()) {
    return base::Internal("qemu-img could not create the overlay " + OverlayPath() + ": " +
                          base::Tail(made.stderr_data + made.stdout_data, 600));
  }
  if (plan_.tee == TeeKind::kNone) {
    if (plan_.ovmf_code.empty() || ::access(plan_.ovmf_code.c_str(), R_OK) != 0) {
      return base::FailedPrecondition("OVMF firmware " + plan_.ovmf_code +
                                      " is missing (Debian package ovmf; confidential.ovmf_code)");
    }
    CHRYS_RETURN_IF_ERROR(EnsurePerVmOvmfVars(plan_.ovmf_vars, VarsPath()));
  }
  return Status::Ok();
}

Status CvmVmm::RemoveVmFiles() {
  Status overlay = base::RemoveFileIfExists(OverlayPath());
  Status vars = base::RemoveFileIfExists(VarsPath());
  CHRYS_RETURN_IF_ERROR(overlay);
  return vars;
}

Result<std::vector<std::string>> CvmVmm::CommandLine(const VmLaunchSpec& spec) const {
  CHRYS_RETURN_IF_ERROR(ValidateLaunchSpec(spec));
  CHRYS_ASSIGN_OR_RETURN(std::string accel, ResolveQemuAccel(qemu_, spec.kernel_path));
  if (plan_.tee != TeeKind::kNone && accel != "kvm") {
    return base::FailedPrecondition(std::string(TeeKindName(plan_.tee)) +
                                    " guests need KVM, but QEMU runs under TCG on this host");
  }
  return BuildCvmQemuArgs(CvmLaunchConfigFor(plan_, spec, qemu_.qemu_binary, accel));
}

Status CvmVmm::Start(const VmLaunchSpec& spec) {
  if (qemu_vmm_) {
    return base::FailedPrecondition("VM " + spec.sandbox_id + " is already started");
  }
  CHRYS_ASSIGN_OR_RETURN(std::vector<std::string> argv, CommandLine(spec));
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(spec.run_dir, 0700));
  for (const char* name : {"qmp.sock", "agent.sock"}) {
    (void)base::RemoveFileIfExists(RunDirFile(spec, name));
  }
  Status disk = PrepareDisk();
  if (!disk.ok()) {
    (void)RemoveVmFiles();
    return disk;
  }
  VmmCgroup cgroup;
  if (qemu_.place_in_cgroup) {
    std::vector<CgroupHierarchy> hierarchies = qemu_.cgroup_hierarchies;
    if (hierarchies.empty()) {
      CHRYS_ASSIGN_OR_RETURN(hierarchies, DiscoverCgroupHierarchies());
    }
    CHRYS_ASSIGN_OR_RETURN(std::string rel,
                           VmmCgroupRelativePath(spec.cgroup_parent, spec.cgroup_driver, spec.sandbox_id));
    auto created = VmmCgroup::Create(hierarchies, rel);
    if (!created.ok()) {
      (void)RemoveVmFiles();
      return created.error();
    }
    cgroup = std::move(created).value();
  }
  DetachedLaunchSpec launch;
  launch.argv = argv;
  for (const auto& nic : spec.interfaces) {
    launch.pass_fds.insert(launch.pass_fds.end(), nic.tap_queue_fds.begin(), nic.tap_queue_fds.end());
  }
  launch.netns_path = spec.netns_path;
  launch.cgroup_procs_files = cgroup.procs_files();
  launch.output_log_path = RunDirFile(spec, "vmm.log");
  auto proc = DetachedProcess::Launch(launch);
  if (!proc.ok()) {
    (void)cgroup.Remove(std::chrono::seconds(2));
    (void)RemoveVmFiles();
    return proc.error().Wrap("starting QEMU (HAL disk boot) for " + spec.sandbox_id);
  }
  VmmProcessState state;
  state.kind = VmmKind::kQemu;
  state.pid = proc->pid();
  state.start_time_ticks = proc->start_ticks();
  state.binary = argv[0];
  state.control_socket = RunDirFile(spec, "qmp.sock");
  state.cgroup_dirs = cgroup.created_dirs();
  state.agent.kind = AgentChannelKind::kVirtioSerial;
  state.agent.socket_path = RunDirFile(spec, "agent.sock");
  // From here QemuVmm owns the process: the same checks, QMP control, stop and cleanup as any QEMU VM.
  qemu_vmm_ = std::make_unique<QemuVmm>(qemu_);
  Status attached = qemu_vmm_->Adopt(state, spec);
  if (!attached.ok()) {
    (void)proc->Signal(SIGKILL);
    proc->WaitExit(std::chrono::seconds(10));
    (void)qemu_vmm_->Kill();
    qemu_vmm_.reset();
    (void)RemoveVmFiles();
    std::string log = base::ReadFile(launch.output_log_path, 1 << 16).ok()
                          ? base::Tail(*base::ReadFile(launch.output_log_path, 1 << 16), 800)
                          : std::string();
    return base::Unavailable("VM " + spec.sandbox_id + ": QEMU did not come up for the HAL disk boot (" +
                             attached.error().message() + ")" + (log.empty() ? "" : "\nQEMU said: " + log));
  }
  return Status::Ok();
}

Status CvmVmm::WaitReady(const ReadinessCheck& check, std::chrono::milliseconds timeout) {
  if (!qemu_vmm_) {
    return base::FailedPrecondition("the confidential VM is not started");
  }
  auto floor = std::chrono::milliseconds(std::chrono::seconds(plan_.boot_timeout_seconds));
  Status ready = qemu_vmm_->WaitReady(check, std::max(timeout, floor));
  if (!ready.ok()) {
    (void)RemoveVmFiles();  // WaitReady killed the VM
  }
  return ready;
}

Status CvmVmm::HotplugDisk(const DiskSpec& disk, std::chrono::milliseconds) {
  return base::MakeError(base::ErrorCode::kUnimplemented,
                         "disk " + disk.serial +
                             ": confidential pods take no host disks (images are pulled inside the guest onto /cocos)");
}

Status CvmVmm::UnplugDisk(const std::string& serial, std::chrono::milliseconds) {
  return base::NotFound("no disk " + serial + " is plugged into a confidential VM");
}

Status CvmVmm::HotplugNic(const NetInterfaceSpec& nic, std::chrono::milliseconds) {
  return base::MakeError(
      base::ErrorCode::kUnimplemented,
      "NIC " + nic.guest_mac + ": a confidential VM gets its NICs at launch (its device model is measured)");
}

Status CvmVmm::Grow(int vcpus, int memory_mib, std::chrono::milliseconds) {
  return base::MakeError(base::ErrorCode::kUnimplemented, "growing a confidential VM to " + std::to_string(vcpus) +
                                                              " vCPUs and " + std::to_string(memory_mib) +
                                                              " MiB: its shape is part of its launch measurement");
}

Status CvmVmm::Rehome(const VmLaunchSpec& target) {
  return base::MakeError(
      base::ErrorCode::kUnimplemented,
      "sandbox " + target.sandbox_id + ": confidential VMs are launched for their pod, never pooled");
}

Status CvmVmm::SaveState(const std::string& /*state_path*/, std::chrono::milliseconds /*timeout*/) {
  return base::MakeError(base::ErrorCode::kUnimplemented,
                         "a confidential VM cannot be cloned: its memory is encrypted for its own launch");
}

Status CvmVmm::Shutdown(bool graceful, std::chrono::milliseconds timeout) {
  Status down = qemu_vmm_ ? qemu_vmm_->Shutdown(graceful, timeout) : Status::Ok();
  if (!down.ok()) {
    return down;
  }
  return RemoveVmFiles();
}

Status CvmVmm::Kill() {
  Status killed = qemu_vmm_ ? qemu_vmm_->Kill() : Status::Ok();
  Status files = RemoveVmFiles();
  CHRYS_RETURN_IF_ERROR(killed);
  return files;
}

Result<VmInfo> CvmVmm::Info() {
  if (!qemu_vmm_) {
    return VmInfo{VmRunState::kShutdown, 0, "not started"};
  }
  return qemu_vmm_->Info();
}

Status CvmVmm::Adopt(const VmmProcessState& state, const VmLaunchSpec& spec) {
  qemu_vmm_ = std::make_unique<QemuVmm>(qemu_);
  return qemu_vmm_->Adopt(state, spec);
}

bool CvmVmm::Alive() const {
  return qemu_vmm_ && qemu_vmm_->Alive();
}

const VmmProcessState& CvmVmm::process_state() const {
  return qemu_vmm_ ? qemu_vmm_->process_state() : empty_state_;
}

AgentEndpoint CvmVmm::agent_endpoint() const {
  return qemu_vmm_ ? qemu_vmm_->agent_endpoint() : AgentEndpoint{};
}

namespace {

// Picks the driver at Start/Adopt, when the sandbox id is known: a plan file means a confidential VM.
class QemuOrCvmVmm : public Vmm {
 public:
  QemuOrCvmVmm(QemuConfig qemu, std::string plans_dir) : qemu_(std::move(qemu)), plans_dir_(std::move(plans_dir)) {}

  VmmKind kind() const override { return VmmKind::kQemu; }
  Status Start(const VmLaunchSpec& spec) override {
    CHRYS_ASSIGN_OR_RETURN(impl_, Pick(spec.sandbox_id));
    return impl_->Start(spec);
  }
  Status WaitReady(const ReadinessCheck& check, std::chrono::milliseconds timeout) override {
    return impl_ ? impl_->WaitReady(check, timeout) : NotStarted();
  }
  Status HotplugDisk(const DiskSpec& disk, std::chrono::milliseconds timeout) override {
    return impl_ ? impl_->HotplugDisk(disk, timeout) : NotStarted();
  }
  Status UnplugDisk(const std::string& serial, std::chrono::milliseconds timeout) override {
    return impl_ ? impl_->UnplugDisk(serial, timeout) : NotStarted();
  }
  Status HotplugNic(const NetInterfaceSpec& nic, std::chrono::milliseconds timeout) override {
    return impl_ ? impl_->HotplugNic(nic, timeout) : NotStarted();
  }
  Status Rehome(const VmLaunchSpec& target) override { return impl_ ? impl_->Rehome(target) : NotStarted(); }
  Status SaveState(const std::string& state_path, std::chrono::milliseconds timeout) override {
    return impl_ ? impl_->SaveState(state_path, timeout) : NotStarted();
  }
  Status Grow(int vcpus, int memory_mib, std::chrono::milliseconds timeout) override {
    return impl_ ? impl_->Grow(vcpus, memory_mib, timeout) : NotStarted();
  }
  Status Shutdown(bool graceful, std::chrono::milliseconds timeout) override {
    return impl_ ? impl_->Shutdown(graceful, timeout) : Status::Ok();
  }
  Status Kill() override { return impl_ ? impl_->Kill() : Status::Ok(); }
  Result<VmInfo> Info() override {
    if (!impl_) {
      return VmInfo{VmRunState::kShutdown, 0, "not started"};
    }
    return impl_->Info();
  }
  Status Adopt(const VmmProcessState& state, const VmLaunchSpec& spec) override {
    CHRYS_ASSIGN_OR_RETURN(impl_, Pick(spec.sandbox_id));
    return impl_->Adopt(state, spec);
  }
  bool Alive() const override { return impl_ && impl_->Alive(); }
  const VmmProcessState& process_state() const override { return impl_ ? impl_->process_state() : empty_; }
  AgentEndpoint agent_endpoint() const override { return impl_ ? impl_->agent_endpoint() : AgentEndpoint{}; }
  Result<std::vector<std::string>> CommandLine(const VmLaunchSpec& spec) const override {
    CHRYS_ASSIGN_OR_RETURN(std::unique_ptr<Vmm> impl, Pick(spec.sandbox_id));
    return impl->CommandLine(spec);
  }

 private:
  static Status NotStarted() { return base::FailedPrecondition("the VM is not started"); }

  Result<std::unique_ptr<Vmm>> Pick(const std::string& sandbox_id) const {
    std::string path = CvmPlanPath(plans_dir_, sandbox_id);
    if (plans_dir_.empty() || ::access(path.c_str(), F_OK) != 0) {
      return std::unique_ptr<Vmm>(std::make_unique<QemuVmm>(qemu_));
    }
    CHRYS_ASSIGN_OR_RETURN(CvmPlan plan, LoadCvmPlan(path));
    return std::unique_ptr<Vmm>(std::make_unique<CvmVmm>(qemu_, std::move(plan)));
  }

  QemuConfig qemu_;
  std::string plans_dir_;
  VmmProcessState empty_;
  std::unique_ptr<Vmm> impl_;
};

}  // namespace

std::unique_ptr<Vmm> MakeQemuOrCvmVmm(QemuConfig qemu, std::string plans_dir) {
  return std::make_unique<QemuOrCvmVmm>(std::move(qemu), std::move(plans_dir));
}

}  // namespace chrys::runtime::confidential
