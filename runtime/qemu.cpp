#include "runtime/qemu.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <thread>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "runtime/agent/transport.h"
#include "runtime/qemu_cpu.h"
#include "runtime/virtiofsd.h"

namespace chrys::runtime {

using base::Result;
using base::Status;
using nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

constexpr const char* kAgentPortName = agent::kAgentSerialPortName;

// The PCI bridge whose slots take hot-plugged disks: slots 1..30 (addresses 0x01-0x1e) for disks, 0x1f for the
// device that sizes the bridge's windows (see BuildCommandLine).
constexpr const char* kHotplugBridgeId = "hpbr0";
constexpr const char* kBridgeAnchorSlot = "0x1f";
// DIMM slots of a VM booted with room to grow (Grow plugs one DIMM per call).
constexpr int kMemorySlots = 4;
constexpr int kBridgeDiskSlots = 30;
// QMP's name for the template state file's fd, saved (migrate) or loaded (migrate-incoming).
constexpr const char* kTemplateStateFd = "template-state";
// VMs started before the bridge have one PCIe root port per disk, hp0..hp7.
constexpr int kLegacyRootPorts = 8;

std::string BridgeSlotAddr(int slot) {
  std::array<char, 16> addr{};
  std::snprintf(addr.data(), addr.size(), "0x%02x", slot + 1);
  return addr.data();
}

bool PathExists(const std::string& path) {
  return ::access(path.c_str(), F_OK) == 0;
}

std::string Join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    out += (i ? sep : "") + parts[i];
  }
  return out;
}

// QEMU option values use ',' as separator; a literal comma is written twice.
std::string QemuEscape(const std::string& value) {
  std::string out;
  for (char c : value) {
    out += c;
    if (c == ',') {
      out += ',';
    }
  }
  return out;
}

// Some hosts expose /dev/kvm but cannot run an ordinary guest (nested PVM hosts: the guest spins in the host
// kernel). Boots the kernel under KVM with no root and watches its serial console: it works when the kernel
// reaches its "cannot mount root" panic. A kernel that prints no banner within `banner_wait` has hung: a working
// KVM prints it well under a second after start, so a broken host costs seconds, not the whole budget.
enum class ProbeVerdict { kBoots, kFails, kCancelled };

ProbeVerdict KvmBootsKernel(const std::string& qemu_binary, const std::string& kernel, milliseconds banner_wait,
                            const std::atomic<bool>* cancel) {
  constexpr milliseconds kPanicWait{30000};
  constexpr milliseconds kPoll{20};
  // The console comes back on a pipe (-serial stdio): no file to leave behind if chrysd is killed mid-probe.
  int console_pipe[2];
  if (::pipe2(console_pipe, O_CLOEXEC) != 0) {
    return ProbeVerdict::kFails;
  }
  base::UniqueFd console_read(console_pipe[0]);
  base::UniqueFd console_write(console_pipe[1]);
  std::vector<std::string> args = {qemu_binary, "-machine",    "q35,accel=kvm",
                                   "-cpu",      "host",        "-m",
                                   "256",       "-nodefaults", "-no-user-config",
                                   "-display",  "none",        "-no-reboot",
                                   "-serial",   "stdio",       "-kernel",
                                   kernel,      "-append",     "console=ttyS0 panic=-1 root=/dev/nonexistent"};
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  // Our own child, not a detached one: a hung probe guest spins a host core, so it must die with this thread
  // (PR_SET_PDEATHSIG) if chrysd is killed mid-probe.
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    return ProbeVerdict::kFails;
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) {
      ::_exit(127);
    }
    int devnull = ::open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      ::dup2(devnull, 0);
      ::dup2(devnull, 2);
    }
    ::dup2(console_pipe[1], 1);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  console_write.Reset();
  auto started = Clock::now();
  ProbeVerdict verdict = ProbeVerdict::kFails;
  std::string log;
  bool console_open = true;
  while (true) {
    pollfd p{console_read.get(), POLLIN, 0};
    if (console_open && ::poll(&p, 1, static_cast<int>(kPoll.count())) > 0) {
      char buf[4096];
      ssize_t n = ::read(console_read.get(), buf, sizeof(buf));
      if (n > 0 && log.size() < (1U << 20)) {
        log.append(buf, static_cast<size_t>(n));
      } else if (n == 0) {
        console_open = false;  // QEMU exited (or closed its stdout)
      }
    }
    if (log.find("Kernel panic") != std::string::npos || log.find("VFS: Unable to mount") != std::string::npos) {
      verdict = ProbeVerdict::kBoots;
      break;
    }
    if (cancel != nullptr && cancel->load()) {
      verdict = ProbeVerdict::kCancelled;
      break;
    }
    auto waited = Clock::now() - started;
    bool hung = log.find("Linux version") == std::string::npos && waited > banner_wait;
    if (!console_open || hung || waited > kPanicWait) {
      break;
    }
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return verdict;
}

}  // namespace

Result<std::string> ResolveQemuAccel(const QemuConfig& config, const std::string& probe_kernel,
                                     const std::atomic<bool>* cancel) {
  if (config.accel == "tcg" || config.accel == "kvm") {
    return config.accel;
  }
  if (config.accel != "auto") {
    return base::InvalidArgument("qemu accel \"" + config.accel + "\" must be auto, kvm or tcg");
  }
  if (!PathExists(config.kvm_device)) {
    return std::string("tcg");
  }
  json key = {{"qemu", config.qemu_binary}, {"kernel", probe_kernel}};
  auto cached_verdict = [&]() -> std::optional<std::string> {
    if (config.accel_cache_path.empty()) {
      return std::nullopt;
    }
    auto cached = base::ReadFile(config.accel_cache_path, 1 << 16);
    if (!cached.ok()) {
      return std::nullopt;
    }
    json c = json::parse(*cached, nullptr, false);
    if (c.is_object() && c.value("key", json()) == key && c.contains("accel") && c["accel"].is_string()) {
      return c["accel"].get<std::string>();
    }
    return std::nullopt;
  };
  if (auto verdict = cached_verdict()) {
    return *verdict;
  }
  // One probe at a time: pods started together while the cache is empty wait for the first one's verdict.
  static std::mutex probe_mutex;
  std::lock_guard<std::mutex> lock(probe_mutex);
  if (auto verdict = cached_verdict()) {
    return *verdict;
  }
  ProbeVerdict verdict = KvmBootsKernel(config.qemu_binary, probe_kernel, config.kvm_probe_banner_wait, cancel);
  if (verdict == ProbeVerdict::kCancelled) {
    return base::MakeError(base::ErrorCode::kCancelled, "KVM probe cancelled");
  }
  std::string accel = verdict == ProbeVerdict::kBoots ? "kvm" : "tcg";
  if (!config.accel_cache_path.empty()) {
    size_t slash = config.accel_cache_path.rfind('/');
    if (slash != std::string::npos && slash > 0) {
      (void)base::MakeDirs(config.accel_cache_path.substr(0, slash));
    }
    (void)base::WriteFileAtomic(config.accel_cache_path, json{{"key", key}, {"accel", accel}}.dump());
  }
  return accel;
}

QemuVmm::QemuVmm(QemuConfig config) : config_(std::move(config)) {}

QemuVmm::~QemuVmm() = default;

AgentChannelKind QemuVmm::EffectiveAgentChannel(const VmLaunchSpec& spec) const {
  if (spec.agent_channel == AgentChannelKind::kVhostVsock && PathExists(config_.vhost_vsock_device)) {
    return AgentChannelKind::kVhostVsock;
  }
  return AgentChannelKind::kVirtioSerial;
}

std::vector<std::string> QemuVmm::BuildCommandLine(const VmLaunchSpec& spec, const std::string& accel) const {
  std::vector<std::string> a = {config_.qemu_binary};
  auto add = [&a](std::initializer_list<std::string> items) { a.insert(a.end(), items); };
  add({"-name", "chrys-" + spec.sandbox_id + ",debug-threads=on"});
  add({"-machine", "q35,accel=" + accel});
  add({"-cpu", accel == "kvm" ? "host" : kTcgCpuModel});
  add({"-smp",
       std::to_string(spec.vcpus) + (spec.max_vcpus > spec.vcpus ? ",maxcpus=" + std::to_string(spec.max_vcpus) : "")});
  add({"-nodefaults", "-no-user-config", "-nographic", "-no-reboot"});
  bool shared_memory = !spec.fs_shares.empty();
  bool restoring = !spec.restore_state_path.empty();
  size_t tap_fds = 0;
  for (const auto& nic : spec.interfaces) {
    tap_fds += nic.tap_queue_fds.size();
  }
  std::string memory = std::to_string(spec.memory_mib) + "M";
  if (spec.max_memory_mib > spec.memory_mib) {
    // DIMM slots for Grow: one per growth, a few spare.
    memory += ",slots=" + std::to_string(kMemorySlots) + ",maxmem=" + std::to_string(spec.max_memory_mib) + "M";
  }
  if (spec.memory_fd >= 0) {
    // A template's RAM (memory_fd) or a clone's copy of it: the fd after the tap fds (see Start). Shared, so
    // virtiofsd can map it and migration with x-ignore-shared leaves it out of the saved state.
    add({"-m", memory});
    add({"-object", "memory-backend-file,id=mem0,size=" + std::to_string(spec.memory_mib) +
                        "M,share=on,mem-path=/proc/self/fd/" + std::to_string(3 + tap_fds)});
    add({"-numa", "node,memdev=mem0"});
  } else if (shared_memory) {
    // vhost-user-fs needs guest RAM the daemon can map: a shared memfd backend.
    add({"-m", memory});
    add({"-object", "memory-backend-memfd,id=mem0,size=" + std::to_string(spec.memory_mib) + "M,share=on" +
                        (spec.hugepages ? ",hugetlb=on" : "")});
    add({"-numa", "node,memdev=mem0"});
  } else {
    add({"-m", memory});
  }
  add({"-chardev", "socket,id=qmp,path=" + QemuEscape(QmpSocketPath(spec)) + ",server=on,wait=off"});
  add({"-mon", "chardev=qmp,mode=control"});
  // A socket an operator can attach to (chrysctl console), logging all output to the console log whether or not
  // anyone is attached: readiness and boot-failure reports read that log.
  add({"-chardev", "socket,id=console,path=" + QemuEscape(ConsoleSocketPath(spec)) +
                       ",server=on,wait=off,logfile=" + QemuEscape(spec.console_log_path) + ",logappend=on"});
  add({"-serial", "chardev:console"});
  if (spec.disk_path.empty()) {
    if (!config_.direct_boot_firmware.empty() && ::access(config_.direct_boot_firmware.c_str(), R_OK) == 0) {
      add({"-bios", config_.direct_boot_firmware});
    }
    add({"-kernel", spec.kernel_path});
    if (!spec.initramfs_path.empty()) {
      add({"-initrd", spec.initramfs_path});
    }
    add({"-append", spec.kernel_cmdline});
  } else {
    if (!spec.firmware_path.empty()) {
      add({"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + QemuEscape(spec.firmware_path)});
    }
    add({"-drive", "if=none,id=bootdisk,format=raw,file=" + QemuEscape(spec.disk_path)});
    add({"-device", "virtio-blk-pci,drive=bootdisk,bootindex=0"});
  }
  for (size_t i = 0; i < spec.disks.size(); ++i) {
    const DiskSpec& disk = spec.disks[i];
    std::string id = "cdisk" + std::to_string(i);
    add({"-drive",
         "if=none,id=" + id + ",format=raw,file=" + QemuEscape(disk.path) + (disk.read_only ? ",readonly=on" : "")});
    add({"-device", "virtio-blk-pci,drive=" + id + ",serial=" + disk.serial});
  }
  // No virtio-rng: the guest image does not load its driver (the kernel seeds from RDRAND/jitter), so the device
  // only cost firmware and kernel enumeration time on every boot.
  int next_fd = 3;
  for (size_t i = 0; i < spec.interfaces.size(); ++i) {
    const auto& nic = spec.interfaces[i];
    std::vector<std::string> fds;
    for (size_t q = 0; q < nic.tap_queue_fds.size(); ++q) {
      fds.push_back(std::to_string(next_fd++));
    }
    std::string id = "net" + std::to_string(i);
    add({"-netdev", "tap,id=" + id + ",fds=" + Join(fds, ":") + ",vhost=off"});
    size_t queues = nic.tap_queue_fds.size();
    std::string dev = "virtio-net-pci,netdev=" + id + ",mac=" + nic.guest_mac + ",host_mtu=" + std::to_string(nic.mtu);
    if (queues > 1) {
      dev += ",mq=on,vectors=" + std::to_string(2 * queues + 2);
    }
    add({"-device", dev});
  }
  if (EffectiveAgentChannel(spec) == AgentChannelKind::kVhostVsock) {
    add({"-device", "vhost-vsock-pci,id=vsock0,guest-cid=" + std::to_string(spec.vsock_cid)});
  } else {
    add({"-device", "virtio-serial-pci,id=vser0"});
    add({"-chardev", "socket,id=agent,path=" + QemuEscape(AgentSocketPath(spec)) + ",server=on,wait=off"});
    add({"-device", std::string("virtserialport,bus=vser0.0,chardev=agent,name=") + kAgentPortName});
  }
  // A clone gets its shares after the restore (AddSharesAfterRestore): vhost-user-fs devices cannot be migrated.
  for (size_t i = 0; i < spec.fs_shares.size() && !restoring; ++i) {
    std::string id = "fs" + std::to_string(i);
    add({"-chardev", "socket,id=" + id + ",path=" + QemuEscape(FsSocketPath(spec, i))});
    add({"-device", "vhost-user-fs-pci,chardev=" + id + ",tag=" + spec.fs_shares[i].tag});
  }
  // Hot-plugged disks go into the slots of one PCI bridge (ACPI hot-plug): 31 slots for one device on the boot
  // bus. One empty PCIe root port per disk cost a bus, a port driver and boot time each (16 more: ~1 s under a loaded
  // TCG host), and capped a pod at 8 disks, which one image of many layers fills. Firmware (qboot) leaves bridge
  // windows to Linux, which sizes them from the devices present at boot and does not grow them for an empty bridge: the
  // entropy device in the last slot gives the bridge its windows (1 MiB memory, 1 MiB prefetchable, 4 KiB I/O: room for
  // every slot's virtio-blk), and gives the guest a seed for its RNG.
  add({"-device", std::string("pcie-pci-bridge,id=") + kHotplugBridgeId + ",bus=pcie.0"});
  add({"-device", std::string("virtio-rng-pci,bus=") + kHotplugBridgeId + ",addr=" + kBridgeAnchorSlot});
  if (restoring) {
    add({"-incoming", "defer"});  // the state file comes over QMP (migrate-incoming), see Start
  }
  return a;
}

Result<std::vector<std::string>> QemuVmm::CommandLine(const VmLaunchSpec& spec) const {
  CHRYS_RETURN_IF_ERROR(ValidateLaunchSpec(spec));
  CHRYS_ASSIGN_OR_RETURN(std::string accel, ResolveQemuAccel(config_, spec.kernel_path, config_.accel_probe_cancel));
  return BuildCommandLine(spec, accel);
}

Result<VmmCgroup> QemuVmm::CreateCgroup(const VmLaunchSpec& spec) const {
  std::vector<CgroupHierarchy> hierarchies = config_.cgroup_hierarchies;
  if (hierarchies.empty()) {
    CHRYS_ASSIGN_OR_RETURN(hierarchies, DiscoverCgroupHierarchies());
  }
  CHRYS_ASSIGN_OR_RETURN(std::string rel,
                         VmmCgroupRelativePath(spec.cgroup_parent, spec.cgroup_driver, spec.sandbox_id));
  return VmmCgroup::Create(hierarchies, rel);
}

Status QemuVmm::StartHelpers(const VmLaunchSpec& spec) {
  for (size_t i = 0; i < spec.fs_shares.size(); ++i) {
    CHRYS_ASSIGN_OR_RETURN(
        DetachedProcess proc,
        LaunchVirtiofsd(config_.virtiofsd_binary, FsSocketPath(spec, i), spec.fs_shares[i], cgroup_.procs_files(),
                        spec.run_dir + "/virtiofsd-" + std::to_string(i) + ".log", std::chrono::seconds(5)));
    state_.helper_pids.push_back(proc.pid());
    state_.helper_start_ticks.push_back(proc.start_ticks());
    helpers_.push_back(std::move(proc));
  }
  return Status::Ok();
}

Status QemuVmm::Start(const VmLaunchSpec& spec) {
  if (process_.valid()) {
    return base::FailedPrecondition("VM " + spec.sandbox_id + " is already started");
  }
  CHRYS_RETURN_IF_ERROR(ValidateLaunchSpec(spec));
  spec_ = spec;
  if (spec_.vsock_cid == 0) {
    spec_.vsock_cid = 3 + static_cast<uint32_t>(std::hash<std::string>{}(spec.sandbox_id) % 0x7fff0000u);
  }
  CHRYS_ASSIGN_OR_RETURN(accel_, ResolveQemuAccel(config_, spec_.kernel_path, config_.accel_probe_cancel));
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(spec_.run_dir, 0700));
  state_ = VmmProcessState{};
  state_.kind = VmmKind::kQemu;
  state_.disk_hotplug_bus = kDiskBusBridge;
  state_.binary = config_.qemu_binary;
  state_.control_socket = QmpSocketPath(spec_);
  state_.agent.kind = EffectiveAgentChannel(spec_);
  state_.agent.socket_path = state_.agent.kind == AgentChannelKind::kVirtioSerial ? AgentSocketPath(spec_) : "";
  state_.agent.vsock_cid = spec_.vsock_cid;

  auto fail = [this](base::Error err) -> Status {
    (void)Kill();
    return err;
  };
  if (config_.place_in_cgroup) {
    CHRYS_ASSIGN_OR_RETURN(cgroup_, CreateCgroup(spec_));
    state_.cgroup_dirs = cgroup_.created_dirs();
  }
  for (const auto& path : {QmpSocketPath(spec_), AgentSocketPath(spec_), ConsoleSocketPath(spec_)}) {
    (void)base::RemoveFileIfExists(path);
  }
  Status helpers = StartHelpers(spec_);
  if (!helpers.ok()) {
    return fail(helpers.error().Wrap("starting virtiofsd for " + spec_.sandbox_id));
  }
  DetachedLaunchSpec launch;
  launch.argv = BuildCommandLine(spec_, accel_);
  for (const auto& nic : spec_.interfaces) {
    launch.pass_fds.insert(launch.pass_fds.end(), nic.tap_queue_fds.begin(), nic.tap_queue_fds.end());
  }
  if (!spec_.restore_state_path.empty()) {
    launch.copy_memory_from_fd = spec_.memory_fd;  // the clone's own copy, made inside its cgroup
  } else if (spec_.memory_fd >= 0) {
    launch.pass_fds.push_back(spec_.memory_fd);
  }
  launch.netns_path = spec_.netns_path;
  launch.cgroup_procs_files = cgroup_.procs_files();
  launch.output_log_path = VmmLogPath(spec_);
  auto proc = DetachedProcess::Launch(launch);
  if (!proc.ok()) {
    return fail(proc.error().Wrap("starting QEMU for " + spec_.sandbox_id));
  }
  process_ = std::move(proc).value();
  state_.pid = process_.pid();
  state_.start_time_ticks = process_.start_ticks();

  auto qmp = QmpClient::Connect(QmpSocketPath(spec_), config_.qmp_timeout);
  if (!qmp.ok()) {
    return fail(BootFailure("QEMU did not answer on QMP (" + qmp.error().message() + ")"));
  }
  qmp_ = std::make_unique<QmpClient>(std::move(qmp).value());
  auto status = Qmp("query-status", json::object(), config_.qmp_timeout);
  if (!status.ok()) {
    return fail(BootFailure("query-status failed: " + status.error().message()));
  }
  if (!spec_.restore_state_path.empty()) {
    if (Status restored = RestoreFromTemplate(); !restored.ok()) {
      return fail(BootFailure("restoring from the template: " + restored.error().message()));
    }
  }
  return Status::Ok();
}

namespace {

// Polls `query` until `done` says the answer is final; bounded by `timeout`.
Result<json> PollQmp(const std::function<Result<json>()>& query, const std::function<bool(const json&)>& done,
                     milliseconds timeout, const std::string& what) {
  auto deadline = Clock::now() + timeout;
  while (true) {
    CHRYS_ASSIGN_OR_RETURN(json answer, query());
    if (done(answer)) {
      return answer;
    }
    if (Clock::now() >= deadline) {
      return base::DeadlineExceeded(what + " did not finish within " + std::to_string(timeout.count()) +
                                    " ms (last: " + answer.dump() + ")");
    }
    std::this_thread::sleep_for(milliseconds(5));
  }
}

}  // namespace

Status QemuVmm::PassTemplateState(int state_fd, milliseconds timeout) {
  // The RAM is not in the state (x-ignore-shared): it stays in the template's memfd, which a clone runs on a copy of.
  CHRYS_RETURN_IF_ERROR(Qmp("migrate-set-capabilities",
                            {{"capabilities", json::array({{{"capability", "x-ignore-shared"}, {"state", true}}})}},
                            timeout));
  CHRYS_RETURN_IF_ERROR(qmp_->ExecuteWithFd("getfd", {{"fdname", kTemplateStateFd}}, state_fd, timeout));
  return Status::Ok();
}

Status QemuVmm::RestoreFromTemplate() {
  const milliseconds timeout = config_.qmp_timeout;
  base::UniqueFd state(::open(spec_.restore_state_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!state.valid()) {
    return base::SystemError("opening the template state " + spec_.restore_state_path);
  }
  CHRYS_RETURN_IF_ERROR(PassTemplateState(state.get(), timeout));
  CHRYS_RETURN_IF_ERROR(Qmp("migrate-incoming", {{"uri", std::string("fd:") + kTemplateStateFd}}, timeout));
  CHRYS_ASSIGN_OR_RETURN(
      json status, PollQmp([&] { return Qmp("query-status", json::object(), timeout); },
                           [](const json& s) { return s.value("status", "") != "inmigrate"; }, timeout, "loading"));
  if (status.value("status", "") != "paused") {
    auto migration = Qmp("query-migrate", json::object(), timeout);
    return base::Internal("the VM is " + status.value("status", "?") + " after loading the template state" +
                          (migration.ok() ? " (migration: " + migration->dump() + ")" : ""));
  }
  // The shares the template could not carry, in the bridge's top slots (below any NIC plugged later).
  for (size_t i = 0; i < spec_.fs_shares.size(); ++i) {
    int slot = TopFreeSlot();
    if (slot < 0) {
      return base::MakeError(base::ErrorCode::kResourceExhausted, "no hot-plug slot is free for a share");
    }
    std::string id = "fs" + std::to_string(i);
    CHRYS_RETURN_IF_ERROR(Qmp(
        "chardev-add",
        {{"id", id},
         {"backend",
          {{"type", "socket"},
           {"data", {{"addr", {{"type", "unix"}, {"data", {{"path", FsSocketPath(spec_, i)}}}}}, {"server", false}}}}}},
        timeout));
    std::string device = "hfs" + std::to_string(i);
    CHRYS_RETURN_IF_ERROR(Qmp("device_add",
                              {{"driver", "vhost-user-fs-pci"},
                               {"id", device},
                               {"chardev", id},
                               {"tag", spec_.fs_shares[i].tag},
                               {"bus", kHotplugBridgeId},
                               {"addr", BridgeSlotAddr(slot)}},
                              timeout));
    state_.plugged_shares.push_back({spec_.fs_shares[i].tag, device, slot});
  }
  CHRYS_RETURN_IF_ERROR(Qmp("cont", json::object(), timeout));
  return Status::Ok();
}

Status QemuVmm::SaveState(const std::string& state_path, milliseconds timeout) {
  if (!Alive() || !qmp_) {
    return base::FailedPrecondition("VM " + spec_.sandbox_id + " is not running");
  }
  if (spec_.memory_fd < 0 || !spec_.fs_shares.empty()) {
    return base::FailedPrecondition("VM " + spec_.sandbox_id +
                                    " cannot be saved as a template: it needs its RAM in memory_fd and no shares");
  }
  base::UniqueFd out(::open(state_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!out.valid()) {
    return base::SystemError("creating " + state_path);
  }
  // Paused first, so the RAM left in memory_fd and the device state written here are of the same instant.
  CHRYS_RETURN_IF_ERROR(Qmp("stop", json::object(), timeout));
  CHRYS_RETURN_IF_ERROR(PassTemplateState(out.get(), timeout));
  CHRYS_RETURN_IF_ERROR(Qmp("migrate", {{"uri", std::string("fd:") + kTemplateStateFd}}, timeout));
  CHRYS_ASSIGN_OR_RETURN(json migration, PollQmp([&] { return Qmp("query-migrate", json::object(), timeout); },
                                                 [](const json& m) {
                                                   std::string s = m.value("status", "");
                                                   return s == "completed" || s == "failed" || s == "cancelled";
                                                 },
                                                 timeout, "saving the VM state"));
  if (migration.value("status", "") != "completed") {
    (void)base::RemoveFileIfExists(state_path);
    return base::Internal("saving the state of " + spec_.sandbox_id + " failed: " + migration.dump());
  }
  return Status::Ok();
}

base::Error QemuVmm::BootFailure(const std::string& what) {
  auto vmm_log = base::ReadFile(VmmLogPath(spec_), 1 << 20);
  std::string msg = "VM " + spec_.sandbox_id + ": " + what;
  if (vmm_log.ok() && !vmm_log->empty()) {
    msg += "\nQEMU said: " + base::Tail(*vmm_log, 800);
  }
  msg += "\nconsole tail:\n" + ConsoleTail(spec_.console_log_path);
  return base::Unavailable(msg);
}

Result<json> QemuVmm::Qmp(const std::string& command, const json& args, milliseconds timeout) {
  if (!qmp_ || !qmp_->connected()) {
    // A dropped connection (garbage, EOF, timeout) is re-established once; the VMM may simply have restarted its
    // monitor side. If the VMM itself is gone this fails fast.
    if (!Alive()) {
      return base::Unavailable("VMM of " + spec_.sandbox_id + " is not running");
    }
    CHRYS_ASSIGN_OR_RETURN(QmpClient fresh, QmpClient::Connect(state_.control_socket, timeout));
    qmp_ = std::make_unique<QmpClient>(std::move(fresh));
  }
  return qmp_->Execute(command, args, timeout);
}

Status QemuVmm::WaitReady(const ReadinessCheck& check, milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (true) {
    if (!Alive()) {
      base::Error err = BootFailure("the VMM exited while the guest was booting");
      (void)Kill();
      return err;
    }
    std::string tail = ConsoleTail(spec_.console_log_path, 4096);
    if (tail.find("Kernel panic") != std::string::npos) {
      base::Error err = BootFailure("the guest kernel panicked");
      (void)Kill();
      return err;
    }
    auto ready = check();
    if (!ready.ok()) {
      base::Error err = BootFailure("readiness check failed: " + ready.error().message());
      (void)Kill();
      return err;
    }
    if (*ready) {
      return Status::Ok();
    }
    if (Clock::now() >= deadline) {
      base::Error err = BootFailure("the guest did not become ready within " + std::to_string(timeout.count()) + "ms");
      (void)Kill();
      return base::DeadlineExceeded(err.message());
    }
    std::this_thread::sleep_for(milliseconds(50));
  }
}

Status QemuVmm::HotplugDisk(const DiskSpec& disk, milliseconds timeout) {
  CHRYS_RETURN_IF_ERROR(ValidateDiskSpec(disk));
  for (const auto& d : state_.plugged_disks) {
    if (d.serial == disk.serial) {
      return base::MakeError(base::ErrorCode::kAlreadyExists, "a disk with serial " + disk.serial + " is plugged");
    }
  }
  bool root_ports = state_.disk_hotplug_bus == kDiskBusRootPorts;
  // A VM adopted from before the bridge has the 8 root ports it was started with.
  int slots = root_ports ? kLegacyRootPorts : std::clamp(config_.hotplug_ports, 0, kBridgeDiskSlots);
  int slot = -1;
  for (int p = 0; p < slots && slot < 0; ++p) {
    if (!SlotTaken(p)) {
      slot = p;
    }
  }
  if (slot < 0) {
    return base::MakeError(base::ErrorCode::kResourceExhausted,
                           "all " + std::to_string(slots) + " disk hot-plug slots of " + spec_.sandbox_id +
                               " are in use (each image layer in use and each container's writable layer takes one)");
  }
  std::string node = "blk-" + disk.serial;
  std::string dev = "disk-" + disk.serial;
  json blockdev = {{"driver", "raw"},
                   {"node-name", node},
                   {"read-only", disk.read_only},
                   {"file", {{"driver", "file"}, {"filename", disk.path}, {"read-only", disk.read_only}}}};
  CHRYS_RETURN_IF_ERROR(Qmp("blockdev-add", blockdev, timeout));
  json device = {{"driver", "virtio-blk-pci"}, {"id", dev}, {"drive", node}, {"serial", disk.serial}};
  if (root_ports) {
    device["bus"] = "hp" + std::to_string(slot);
  } else {
    device["bus"] = kHotplugBridgeId;
    device["addr"] = BridgeSlotAddr(slot);
  }
  auto added = Qmp("device_add", device, timeout);
  if (!added.ok()) {
    // Roll back the half: the block node must not outlive a failed plug.
    auto undo = Qmp("blockdev-del", {{"node-name", node}}, timeout);
    std::string extra =
        undo.ok() ? "" : " (and removing block node " + node + " failed: " + undo.error().message() + ")";
    return base::Internal("hot-plugging disk " + disk.serial + " into " + spec_.sandbox_id + ": " +
                          added.error().message() + extra);
  }
  state_.plugged_disks.push_back({disk.serial, dev, slot, disk.read_only, disk.path});
  return Status::Ok();
}

int QemuVmm::TopFreeSlot() const {
  for (int p = kBridgeDiskSlots - 1; p >= 0; --p) {
    if (!SlotTaken(p)) {
      return p;
    }
  }
  return -1;
}

bool QemuVmm::SlotTaken(int slot) const {
  return std::any_of(state_.plugged_disks.begin(), state_.plugged_disks.end(),
                     [slot](const PluggedDisk& d) { return d.slot == slot; }) ||
         std::any_of(state_.plugged_nics.begin(), state_.plugged_nics.end(),
                     [slot](const PluggedNic& n) { return n.slot == slot; }) ||
         std::any_of(state_.plugged_shares.begin(), state_.plugged_shares.end(),
                     [slot](const PluggedShare& s) { return s.slot == slot; });
}

Status QemuVmm::HotplugNic(const NetInterfaceSpec& nic, milliseconds timeout) {
  if (nic.guest_mac.empty() || nic.tap_queue_fds.empty()) {
    return base::InvalidArgument("NIC hot-plug needs a guest MAC and at least one tap queue fd");
  }
  if (state_.disk_hotplug_bus != kDiskBusBridge) {
    return base::FailedPrecondition("VM " + spec_.sandbox_id + " has no hot-plug bridge for a NIC");
  }
  // NICs take the bridge's slots from the top, disks from the bottom.
  int slot = TopFreeSlot();
  if (slot < 0) {
    return base::MakeError(base::ErrorCode::kResourceExhausted,
                           "no hot-plug slot of " + spec_.sandbox_id + " is free for NIC " + nic.guest_mac);
  }
  auto deadline = Clock::now() + timeout;
  auto left = [&] {
    return std::max(milliseconds(1), std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
  };
  std::string netdev = "hnet" + std::to_string(slot);
  std::string device = "hnic" + std::to_string(slot);
  // QEMU takes each queue's fd by name (getfd); netdev_add consumes the names it uses.
  std::vector<std::string> fd_names;
  auto close_names = [&] {
    for (const auto& name : fd_names) {
      (void)Qmp("closefd", {{"fdname", name}}, left());
    }
  };
  for (size_t q = 0; q < nic.tap_queue_fds.size(); ++q) {
    std::string name = netdev + "q" + std::to_string(q);
    if (!qmp_ || !qmp_->connected()) {
      close_names();
      return base::Unavailable("QMP connection of " + spec_.sandbox_id + " is closed");
    }
    auto passed = qmp_->ExecuteWithFd("getfd", {{"fdname", name}}, nic.tap_queue_fds[q], left());
    if (!passed.ok()) {
      close_names();
      return passed.error().Wrap("passing tap queue " + std::to_string(q) + " of NIC " + nic.guest_mac);
    }
    fd_names.push_back(name);
  }
  auto added =
      Qmp("netdev_add", {{"type", "tap"}, {"id", netdev}, {"fds", Join(fd_names, ":")}, {"vhost", false}}, left());
  if (!added.ok()) {
    close_names();
    return added.error().Wrap("adding the tap backend of NIC " + nic.guest_mac);
  }
  size_t queues = nic.tap_queue_fds.size();
  json dev = {{"driver", "virtio-net-pci"},  {"id", device},        {"netdev", netdev},
              {"mac", nic.guest_mac},        {"host_mtu", nic.mtu}, {"bus", kHotplugBridgeId},
              {"addr", BridgeSlotAddr(slot)}};
  if (queues > 1) {
    dev["mq"] = true;
    dev["vectors"] = 2 * queues + 2;
  }
  auto plugged = Qmp("device_add", dev, left());
  if (!plugged.ok()) {
    auto undo = Qmp("netdev_del", {{"id", netdev}}, left());
    return base::Internal("hot-plugging NIC " + nic.guest_mac + " into " + spec_.sandbox_id + ": " +
                          plugged.error().message() +
                          (undo.ok() ? "" : " (and removing its backend failed: " + undo.error().message() + ")"));
  }
  state_.plugged_nics.push_back({device, netdev, slot, nic.guest_mac});
  return Status::Ok();
}

Status QemuVmm::Rehome(const VmLaunchSpec& target) {
  if (!Alive()) {
    return base::FailedPrecondition("VM " + spec_.sandbox_id + " is not running");
  }
  if (target.run_dir.empty() || target.console_log_path.empty()) {
    return base::InvalidArgument("rehoming " + spec_.sandbox_id + ": the target needs a run dir and a console log");
  }
  VmmCgroup moved;
  if (config_.place_in_cgroup) {
    CHRYS_ASSIGN_OR_RETURN(moved, CreateCgroup(target));
    if (Status m = cgroup_.MoveProcessesTo(moved); !m.ok()) {
      (void)moved.MoveProcessesTo(cgroup_);
      (void)moved.Remove(std::chrono::seconds(1));
      return m.error().Wrap("moving VM " + spec_.sandbox_id + " into the cgroup of " + target.sandbox_id);
    }
  }
  auto undo_cgroup = [&] {
    (void)moved.MoveProcessesTo(cgroup_);
    (void)moved.Remove(std::chrono::seconds(1));
  };
  if (::rename(spec_.run_dir.c_str(), target.run_dir.c_str()) != 0) {
    base::Error err = base::SystemError("renaming " + spec_.run_dir + " to " + target.run_dir);
    undo_cgroup();
    return err;
  }
  if (::rename(spec_.console_log_path.c_str(), target.console_log_path.c_str()) != 0) {
    base::Error err = base::SystemError("renaming " + spec_.console_log_path + " to " + target.console_log_path);
    (void)::rename(target.run_dir.c_str(), spec_.run_dir.c_str());
    undo_cgroup();
    return err;
  }
  if (config_.place_in_cgroup) {
    (void)cgroup_.Remove(std::chrono::seconds(1));  // empty now
    cgroup_ = std::move(moved);
    state_.cgroup_dirs = cgroup_.created_dirs();
  }
  uint32_t cid = spec_.vsock_cid;  // the device keeps the CID it booted with
  spec_ = target;
  spec_.vsock_cid = cid;
  state_.control_socket = QmpSocketPath(spec_);
  if (state_.agent.kind == AgentChannelKind::kVirtioSerial) {
    state_.agent.socket_path = AgentSocketPath(spec_);
  }
  return Status::Ok();
}

Status QemuVmm::Grow(int vcpus, int memory_mib, milliseconds timeout) {
  const std::string vm = "VM " + spec_.sandbox_id;
  if (vcpus < spec_.vcpus || memory_mib < spec_.memory_mib) {
    return base::InvalidArgument(vm + " has " + std::to_string(spec_.vcpus) + " vCPUs and " +
                                 std::to_string(spec_.memory_mib) + " MiB: it can grow, not shrink, to " +
                                 std::to_string(vcpus) + " vCPUs and " + std::to_string(memory_mib) + " MiB");
  }
  int max_vcpus = std::max(spec_.vcpus, spec_.max_vcpus);
  int max_memory = std::max(spec_.memory_mib, spec_.max_memory_mib);
  if (vcpus > max_vcpus || memory_mib > max_memory) {
    return base::MakeError(base::ErrorCode::kResourceExhausted,
                           vm + " booted with room for " + std::to_string(max_vcpus) + " vCPUs and " +
                               std::to_string(max_memory) + " MiB, not " + std::to_string(vcpus) + " and " +
                               std::to_string(memory_mib));
  }
  int added_memory = memory_mib - spec_.memory_mib;
  if (vcpus == spec_.vcpus && added_memory == 0) {
    return Status::Ok();
  }
  if (added_memory % kHotplugMemoryBlockMib != 0) {
    return base::InvalidArgument(vm + ": memory grows in " + std::to_string(kHotplugMemoryBlockMib) + " MiB blocks; " +
                                 std::to_string(added_memory) + " MiB is not a whole number of them");
  }
  if (!Alive()) {
    return base::FailedPrecondition(vm + " is not running");
  }
  auto deadline = Clock::now() + timeout;
  auto left = [&] {
    return std::max(milliseconds(1), std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
  };
  if (vcpus > spec_.vcpus) {
    // QEMU lists every CPU slot with the properties that address it; the free ones have no QOM path yet.
    CHRYS_ASSIGN_OR_RETURN(json slots, Qmp("query-hotpluggable-cpus", json::object(), left()));
    std::vector<json> free;
    for (const json& slot : slots) {
      if (slot.is_object() && !slot.contains("qom-path") && slot.contains("props") && slot.contains("type")) {
        free.push_back(slot);
      }
    }
    // Lowest socket first, so that guest CPU numbers follow the order they were added in.
    std::sort(free.begin(), free.end(), [](const json& a, const json& b) {
      return a["props"].value("socket-id", 0) < b["props"].value("socket-id", 0);
    });
    size_t wanted = static_cast<size_t>(vcpus - spec_.vcpus);
    if (free.size() < wanted) {
      return base::MakeError(
          base::ErrorCode::kResourceExhausted,
          vm + " has " + std::to_string(free.size()) + " free CPU slots, " + std::to_string(wanted) + " wanted");
    }
    for (size_t i = 0; i < wanted; ++i) {
      json device = free[i]["props"];
      device["driver"] = free[i]["type"];
      device["id"] = "vcpu" + std::to_string(free[i]["props"].value("socket-id", 0)) + "-" +
                     std::to_string(free[i]["props"].value("core-id", 0)) + "-" +
                     std::to_string(free[i]["props"].value("thread-id", 0));
      auto plugged = Qmp("device_add", device, left());
      if (!plugged.ok()) {
        return plugged.error().Wrap(vm + ": hot-plugging vCPU " + std::to_string(spec_.vcpus + 1) + " of " +
                                    std::to_string(vcpus));
      }
      ++spec_.vcpus;
    }
  }
  if (added_memory > 0) {
    // One DIMM per growth; its backend is shared like the boot memory when virtiofsd has to map guest RAM.
    std::string id = std::to_string(spec_.memory_mib);
    json backend = {{"qom-type", spec_.fs_shares.empty() ? "memory-backend-ram" : "memory-backend-memfd"},
                    {"id", "hmem" + id},
                    {"size", static_cast<uint64_t>(added_memory) << 20}};
    if (!spec_.fs_shares.empty()) {
      backend["share"] = true;
      if (spec_.hugepages) {
        backend["hugetlb"] = true;
      }
    }
    auto made = Qmp("object-add", backend, left());
    if (!made.ok()) {
      return made.error().Wrap(vm + ": making " + std::to_string(added_memory) + " MiB of memory to hot-plug");
    }
    auto plugged = Qmp("device_add", {{"driver", "pc-dimm"}, {"id", "dimm" + id}, {"memdev", "hmem" + id}}, left());
    if (!plugged.ok()) {
      auto undo = Qmp("object-del", {{"id", "hmem" + id}}, left());
      return base::Internal(vm + ": hot-plugging " + std::to_string(added_memory) +
                            " MiB of memory: " + plugged.error().message() +
                            (undo.ok() ? "" : " (and removing its backend failed: " + undo.error().message() + ")"));
    }
    spec_.memory_mib = memory_mib;
  }
  return Status::Ok();
}

Status QemuVmm::UnplugDisk(const std::string& serial, milliseconds timeout) {
  auto it = std::find_if(state_.plugged_disks.begin(), state_.plugged_disks.end(),
                         [&](const PluggedDisk& d) { return d.serial == serial; });
  if (it == state_.plugged_disks.end()) {
    return base::NotFound("no disk with serial " + serial + " is plugged into " + spec_.sandbox_id);
  }
  auto deadline = Clock::now() + timeout;
  auto left = [&] {
    return std::max(milliseconds(1), std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
  };
  std::string dev = it->device_id;
  auto del = Qmp("device_del", {{"id", dev}}, left());
  if (!del.ok() && del.error().message().find("not found") == std::string::npos) {
    return del.error().Wrap("unplugging disk " + serial);
  }
  if (del.ok()) {
    // The guest has to release the device (ACPI/PCIe hot-unplug); only then may the block node go.
    CHRYS_RETURN_IF_ERROR(qmp_->WaitEvent(
        "DEVICE_DELETED", [&](const json& data) { return data.value("device", std::string()) == dev; }, left()));
  }
  auto bd = Qmp("blockdev-del", {{"node-name", "blk-" + serial}}, left());
  if (!bd.ok() && bd.error().message().find("not found") == std::string::npos) {
    return bd.error().Wrap("removing the block node of disk " + serial);
  }
  state_.plugged_disks.erase(it);
  return Status::Ok();
}

Status QemuVmm::Shutdown(bool graceful, milliseconds timeout) {
  if (process_.valid() && Alive() && graceful) {
    auto pressed = Qmp("system_powerdown", json::object(), std::min(timeout, config_.qmp_timeout));
    if (pressed.ok()) {
      process_.WaitExit(timeout);
    }
  }
  if (process_.valid() && Alive()) {
    // QEMU stops cleanly on SIGTERM; a VMM that ignores it is killed.
    CHRYS_RETURN_IF_ERROR(process_.Terminate(std::chrono::seconds(2)));
  }
  process_.WaitExit(milliseconds(0));
  return Cleanup();
}

Status QemuVmm::Kill() {
  if (process_.valid()) {
    (void)process_.Signal(SIGKILL);
    process_.WaitExit(std::chrono::seconds(10));
  }
  return Cleanup();
}

Status QemuVmm::Cleanup() {
  qmp_.reset();
  std::string first_error;
  for (auto& helper : helpers_) {
    Status s = helper.Terminate(std::chrono::seconds(2));
    if (!s.ok() && first_error.empty()) {
      first_error = s.error().message();
    }
  }
  helpers_.clear();
  std::vector<std::string> sockets = {QmpSocketPath(spec_), AgentSocketPath(spec_), ConsoleSocketPath(spec_)};
  for (size_t i = 0; i < spec_.fs_shares.size(); ++i) {
    sockets.push_back(FsSocketPath(spec_, i));
  }
  if (!spec_.run_dir.empty()) {
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
  state_.plugged_nics.clear();
  if (!first_error.empty()) {
    return base::Internal("cleaning up VM " + spec_.sandbox_id + ": " + first_error);
  }
  return Status::Ok();
}

Result<VmInfo> QemuVmm::Info() {
  VmInfo info;
  info.pid = state_.pid;
  if (!Alive()) {
    info.state = VmRunState::kShutdown;
    info.detail = "exited";
    return info;
  }
  CHRYS_ASSIGN_OR_RETURN(json status, Qmp("query-status", json::object(), config_.qmp_timeout));
  if (!status.is_object() || !status.contains("status") || !status["status"].is_string()) {
    return base::Internal("query-status returned an unexpected shape: " + status.dump().substr(0, 200));
  }
  info.detail = status["status"].get<std::string>();
  if (info.detail == "running") {
    info.state = VmRunState::kRunning;
  } else if (info.detail == "paused" || info.detail == "suspended" || info.detail == "prelaunch") {
    info.state = VmRunState::kPaused;
  } else if (info.detail == "shutdown") {
    info.state = VmRunState::kShutdown;
  }
  return info;
}

Status QemuVmm::Adopt(const VmmProcessState& state, const VmLaunchSpec& spec) {
  if (state.kind != VmmKind::kQemu) {
    return base::InvalidArgument("adopt: state is not a QEMU VM");
  }
  spec_ = spec;
  state_ = state;
  cgroup_ = VmmCgroup::FromCreatedDirs(state.cgroup_dirs);
  CHRYS_ASSIGN_OR_RETURN(process_, DetachedProcess::Attach(state.pid, state.start_time_ticks, state.binary));
  for (size_t i = 0; i < state.helper_pids.size(); ++i) {
    uint64_t ticks = i < state.helper_start_ticks.size() ? state.helper_start_ticks[i] : 0;
    auto helper = DetachedProcess::Attach(state.helper_pids[i], ticks, config_.virtiofsd_binary);
    if (!helper.ok()) {
      return helper.error().Wrap("virtiofsd of " + spec.sandbox_id + " is gone");
    }
    helpers_.push_back(std::move(helper).value());
  }
  CHRYS_ASSIGN_OR_RETURN(QmpClient qmp, QmpClient::Connect(state.control_socket, config_.qmp_timeout));
  qmp_ = std::make_unique<QmpClient>(std::move(qmp));
  CHRYS_ASSIGN_OR_RETURN(VmInfo info, Info());
  if (info.state == VmRunState::kShutdown) {
    return base::Unavailable("VM " + spec.sandbox_id + " is shut down (" + info.detail + ")");
  }
  return Status::Ok();
}

bool QemuVmm::Alive() const {
  return process_.valid() && process_.Alive();
}

}  // namespace chrys::runtime
