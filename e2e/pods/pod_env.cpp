#include "e2e/pods/pod_env.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "e2e/fixtures/temp_dir.h"
#include "e2e/fixtures/test_image.h"

namespace chrys::e2e {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kNetworkSlots = 64;

std::string ReadProcFile(pid_t pid, const char* name) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/" + name, std::ios::binary);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

// VMM processes whose command line mentions `needle` (NUL separators turned into spaces).
std::set<pid_t> VmmProcessesMentioning(const std::string& needle) {
  std::set<pid_t> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    pid_t pid = std::stoi(name);
    std::string cmdline = ReadProcFile(pid, "cmdline");
    for (auto& c : cmdline) {
      if (c == '\0') {
        c = ' ';
      }
    }
    bool is_vmm =
        cmdline.find("qemu-system") != std::string::npos || cmdline.find("cloud-hypervisor") != std::string::npos;
    if (is_vmm && cmdline.find(needle) != std::string::npos) {
      out.insert(pid);
    }
  }
  return out;
}

std::map<std::string, std::string> RegularFiles(const std::string& root, const std::string& prefix) {
  std::map<std::string, std::string> out;
  for (const auto& [path, what] : SnapshotTree(root)) {
    if (what.rfind("file", 0) == 0) {
      out[prefix + path] = what;
    }
  }
  return out;
}

base::Status RunQuiet(const std::vector<std::string>& argv) {
  base::CommandSpec spec;
  spec.argv = argv;
  spec.timeout = std::chrono::seconds(30);
  CHRYS_ASSIGN_OR_RETURN(base::CommandResult result, base::RunCommand(spec));
  if (!result.success()) {
    return base::Internal(argv[0] + " " + (argv.size() > 1 ? argv[1] : "") + ": " + result.DescribeExit() + ": " +
                          base::Tail(result.stderr_data, 512));
  }
  return base::Status::Ok();
}

}  // namespace

std::string NewTraces(const HostTraces& before, const HostTraces& after) {
  std::string out;
  for (const auto& ns : after.netns) {
    if (before.netns.count(ns) == 0) {
      out += "netns " + ns + "\n";
    }
  }
  for (pid_t pid : after.vmm_pids) {
    if (before.vmm_pids.count(pid) == 0) {
      out += "VMM process " + std::to_string(pid) + "\n";
    }
  }
  for (const auto& [path, what] : after.records) {
    if (before.records.count(path) == 0) {
      out += "record " + path + "\n";
    }
  }
  for (const auto& mount_point : after.mounts) {
    if (before.mounts.count(mount_point) == 0) {
      out += "mount " + mount_point + "\n";
    }
  }
  return out;
}

std::unique_ptr<grpc::ClientContext> Ctx(std::chrono::milliseconds timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  return ctx;
}

base::Result<std::unique_ptr<PodEnv>> PodEnv::Create(std::vector<std::string> extra_chrysd_args) {
  std::unique_ptr<PodEnv> env(new PodEnv());
  CHRYS_RETURN_IF_ERROR(env->Init(std::move(extra_chrysd_args)));
  return env;
}

base::Status PodEnv::Init(std::vector<std::string> extra_chrysd_args) {
  char tmpl[] = "/tmp/chrys-pods-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    return base::SystemError("mkdtemp /tmp/chrys-pods-XXXXXX");
  }
  root_ = tmpl;
  // Each test process takes a free network slot: its own bridge and /24, so parallel test processes never share
  // addresses. The lock dies with the process, even on a crash.
  CHRYS_RETURN_IF_ERROR(base::MakeDirs("/run/lock"));
  for (int slot = 0; slot < kNetworkSlots; ++slot) {
    std::string path = "/run/lock/chrys-e2e-pods-" + std::to_string(slot) + ".lock";
    base::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!fd) {
      return base::SystemError("open " + path);
    }
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) {
      network_lock_ = std::move(fd);
      slot_ = slot;
      break;
    }
  }
  if (slot_ < 0) {
    return base::MakeError(base::ErrorCode::kResourceExhausted,
                           "all " + std::to_string(kNetworkSlots) + " e2e network slots are taken");
  }
  bridge_ = "chrys-e2e" + std::to_string(slot_);
  subnet_ = "10.198." + std::to_string(slot_) + ".0/24";
  // A bridge left by a crashed earlier run of this slot would carry stale ports.
  (void)RunQuiet({"ip", "link", "del", bridge_});
  CHRYS_RETURN_IF_ERROR(WriteCniConfig());

  // VM sockets live under <run dir>/sandboxes/<64-char id>/: the run dir must be short for unix socket paths.
  run_dir_ = "/run/chrys-pods-" + std::to_string(slot_);
  (void)base::RemoveTree(run_dir_);
  std::vector<std::string> args = {"--run-dir", run_dir_,
                                   "--set",     "cni.conf_dir=" + root_ + "/cni",
                                   "--set",     "vmm.guest_dir=" + std::string(CHRYS_GUEST_IMAGE_DIR),
                                   "--set",     "vmm.accel=tcg"};
  args.insert(args.end(), extra_chrysd_args.begin(), extra_chrysd_args.end());
  chrysd_ = std::make_unique<ChrysdProcess>(std::move(args));
  if (!chrysd_->Start(std::chrono::seconds(30))) {
    return base::Internal("chrysd did not start:\n" + base::Tail(chrysd_->Output(), 4096));
  }
  CHRYS_RETURN_IF_ERROR(Connect());
  return BuildAndImportImage();
}

base::Status PodEnv::Connect() {
  CHRYS_ASSIGN_OR_RETURN(cri::CriClient client, cri::CriClient::Connect(chrysd_->socket()));
  client_ = std::make_unique<cri::CriClient>(std::move(client));
  runtime_ = chrysd_->RuntimeStub();
  images_ = chrysd_->ImageStub();
  return base::Status::Ok();
}

base::Status PodEnv::WriteCniConfig() {
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(root_ + "/cni"));
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(root_ + "/ipam"));
  std::string conflist = R"({"cniVersion": "1.0.0", "name": "chrys-e2e-pods", "plugins": [
  {"type": "bridge", "bridge": ")" +
                         bridge_ + R"(", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": ")" +
                         subnet_ + R"("}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": ")" +
                         root_ + R"(/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
)";
  return base::WriteFileAtomic(root_ + "/cni/10-chrys-e2e.conflist", conflist);
}

base::Status PodEnv::BuildAndImportImage() {
  base::CommandSpec list;
  list.argv = {"/bin/busybox", "--list"};
  CHRYS_ASSIGN_OR_RETURN(base::CommandResult applets, base::RunCommand(list));
  if (!applets.success()) {
    return base::Internal("busybox --list: " + applets.DescribeExit());
  }
  std::vector<TarEntry> entries = {
      TarEntry::Dir("bin"),
      TarEntry::HostFile("bin/busybox", "/bin/busybox", 0755),
      TarEntry::Dir("etc"),
      TarEntry::File("etc/passwd",
                     "root:x:0:0:root:/root:/bin/sh\n"
                     "nobody:x:65534:65534::/:/bin/false\n"
                     "app:x:1000:1000:app:/tmp:/bin/sh\n"),
      TarEntry::File("etc/group", "root:x:0:\nnobody:x:65534:\napp:x:1000:\nstaff:x:50:app\n"),
      TarEntry::Dir("tmp", 01777),
      TarEntry::Dir("proc"),
      TarEntry::Dir("sys"),
      TarEntry::Dir("dev"),
      TarEntry::Dir("data")};
  std::istringstream names(applets.stdout_data);
  std::string applet;
  while (names >> applet) {
    if (applet != "busybox") {
      entries.push_back(TarEntry::Symlink("bin/" + applet, "busybox"));
    }
  }
  std::string layout = root_ + "/image";
  CHRYS_ASSIGN_OR_RETURN(OciLayoutWriter writer, OciLayoutWriter::Create(layout));
  CHRYS_ASSIGN_OR_RETURN(BlobDesc layer, writer.AddLayer(entries));
  ImageSpec spec;
  spec.cmd = {"/bin/sh", "-c", "echo image default command"};
  CHRYS_ASSIGN_OR_RETURN(BlobDesc manifest, writer.AddImage({layer}, spec));
  // The same layer under an image whose USER is a name (resolved in the guest against its /etc/passwd).
  ImageSpec app_spec = spec;
  app_spec.user = "app:staff";
  CHRYS_ASSIGN_OR_RETURN(BlobDesc app_manifest, writer.AddImage({layer}, app_spec));
  // A sandbox ("pause") image for containerd, the benchmarks' peer: it must keep running. Not imported into chrysd.
  ImageSpec pause_spec = spec;
  pause_spec.cmd = {"/bin/sleep", "2147483647"};
  CHRYS_ASSIGN_OR_RETURN(BlobDesc pause_manifest, writer.AddImage({layer}, pause_spec));
  CHRYS_RETURN_IF_ERROR(writer.WriteIndexJson(
      {{manifest, image_ref_}, {app_manifest, app_image_ref_}, {pause_manifest, pause_image_ref_}}));

  for (const std::string& ref : {image_ref_, app_image_ref_}) {
    chrys::admin::v1::ImportImageRequest req;
    req.set_path(layout);
    req.set_reference(ref);
    chrys::admin::v1::ImportImageResponse resp;
    auto status = client_->admin().ImportImage(Ctx().get(), req, &resp);
    if (!status.ok()) {
      return cri::CriClient::CallError("ImportImage " + ref, status);
    }
  }
  return base::Status::Ok();
}

PodEnv::~PodEnv() {
  if (chrysd_ && chrysd_->pid() > 0 && runtime_) {
    v1::ListPodSandboxResponse list;
    if (runtime_->ListPodSandbox(Ctx(std::chrono::seconds(10)).get(), v1::ListPodSandboxRequest(), &list).ok()) {
      for (const auto& pod : list.items()) {
        pod_ids_.insert(pod.id());
      }
    }
    for (const auto& id : pod_ids_) {
      v1::StopPodSandboxRequest stop;
      stop.set_pod_sandbox_id(id);
      v1::StopPodSandboxResponse stopped;
      (void)runtime_->StopPodSandbox(Ctx(std::chrono::seconds(60)).get(), stop, &stopped);
      v1::RemovePodSandboxRequest remove;
      remove.set_pod_sandbox_id(id);
      v1::RemovePodSandboxResponse removed;
      (void)runtime_->RemovePodSandbox(Ctx(std::chrono::seconds(60)).get(), remove, &removed);
    }
    // Our channels go first: chrysd's graceful stop waits for connected clients up to its grace period.
    runtime_.reset();
    images_.reset();
    client_.reset();
    chrysd_->Stop();
  }
  // Safety net for a failed test: VMs outlive chrysd by design, so anything of ours still running goes now.
  if (!run_dir_.empty()) {
    for (pid_t pid : VmmProcessesMentioning(run_dir_ + "/")) {
      ::kill(pid, SIGKILL);
    }
  }
  for (const auto& id : pod_ids_) {
    if (fs::exists("/run/netns/" + id)) {
      (void)RunQuiet({"ip", "netns", "del", id});
    }
  }
  if (!bridge_.empty()) {
    (void)RunQuiet({"ip", "link", "del", bridge_});
  }
  // Pod shared dirs and volume binds a failed stop left mounted would keep the run dir from going.
  for (const std::string& dir : {chrysd_ ? chrysd_->state_dir() : std::string(), run_dir_}) {
    if (!dir.empty()) {
      for (const auto& mount_point : base::MountPointsAtOrBelow(dir)) {
        (void)::umount2(mount_point.c_str(), MNT_DETACH);
      }
    }
  }
  chrysd_.reset();
  if (!root_.empty()) {
    (void)base::RemoveTree(root_);
  }
  if (!run_dir_.empty()) {
    (void)base::RemoveTree(run_dir_);
  }
}

base::Status PodEnv::Restart(bool crash) {
  runtime_.reset();
  images_.reset();
  client_.reset();
  if (crash) {
    chrysd_->Kill();
  } else if (int code = chrysd_->Stop(); code != 0) {
    return base::Internal("chrysd exited with " + std::to_string(code) + " on SIGTERM");
  }
  if (!chrysd_->Start(std::chrono::seconds(60))) {
    return base::Internal("chrysd did not start again:\n" + base::Tail(chrysd_->Output(), 4096));
  }
  return Connect();
}

v1::PodSandboxConfig PodEnv::PodConfig(const std::string& name, uint32_t attempt) const {
  v1::PodSandboxConfig config;
  auto* md = config.mutable_metadata();
  md->set_name(name);
  md->set_namespace_("e2e");
  md->set_uid("uid-" + name + "-" + std::to_string(::getpid()));
  md->set_attempt(attempt);
  config.set_hostname(name);
  config.set_log_directory(root_ + "/logs/" + name + "-" + std::to_string(attempt));
  (*config.mutable_labels())["e2e"] = "pods";
  (*config.mutable_labels())["pod"] = name;
  return config;
}

v1::ContainerConfig PodEnv::ContainerConfig(const std::string& name, const std::vector<std::string>& args) const {
  v1::ContainerConfig config;
  config.mutable_metadata()->set_name(name);
  config.mutable_image()->set_image(image_ref_);
  for (const auto& a : args) {
    config.add_command(a);
  }
  config.set_log_path(name + ".log");
  (*config.mutable_labels())["container"] = name;
  return config;
}

std::string PodEnv::LogPath(const v1::PodSandboxConfig& pod_config, const v1::ContainerConfig& config) const {
  return pod_config.log_directory() + "/" + config.log_path();
}

base::Result<std::string> PodEnv::RunPod(const v1::PodSandboxConfig& config, const std::string& handler) {
  if (!config.log_directory().empty()) {
    CHRYS_RETURN_IF_ERROR(base::MakeDirs(config.log_directory()));
  }
  v1::RunPodSandboxRequest req;
  *req.mutable_config() = config;
  req.set_runtime_handler(handler);
  v1::RunPodSandboxResponse resp;
  auto status = runtime_->RunPodSandbox(Ctx(std::chrono::seconds(180)).get(), req, &resp);
  if (!status.ok()) {
    return cri::CriClient::CallError("RunPodSandbox", status);
  }
  std::lock_guard<std::mutex> lock(pod_ids_mutex_);
  pod_ids_.insert(resp.pod_sandbox_id());
  return resp.pod_sandbox_id();
}

base::Result<std::string> PodEnv::CreateContainer(const std::string& pod_id, const v1::ContainerConfig& config,
                                                  const v1::PodSandboxConfig& pod_config) {
  v1::CreateContainerRequest req;
  req.set_pod_sandbox_id(pod_id);
  *req.mutable_config() = config;
  *req.mutable_sandbox_config() = pod_config;
  v1::CreateContainerResponse resp;
  auto status = runtime_->CreateContainer(Ctx(std::chrono::seconds(120)).get(), req, &resp);
  if (!status.ok()) {
    return cri::CriClient::CallError("CreateContainer", status);
  }
  return resp.container_id();
}

base::Status PodEnv::StartContainer(const std::string& id) {
  v1::StartContainerRequest req;
  req.set_container_id(id);
  v1::StartContainerResponse resp;
  auto status = runtime_->StartContainer(Ctx(std::chrono::seconds(120)).get(), req, &resp);
  if (!status.ok()) {
    return cri::CriClient::CallError("StartContainer", status);
  }
  return base::Status::Ok();
}

base::Result<v1::ContainerStatus> PodEnv::ContainerStatus(const std::string& id) {
  v1::ContainerStatusRequest req;
  req.set_container_id(id);
  v1::ContainerStatusResponse resp;
  auto status = runtime_->ContainerStatus(Ctx(std::chrono::seconds(30)).get(), req, &resp);
  if (!status.ok()) {
    return cri::CriClient::CallError("ContainerStatus", status);
  }
  return resp.status();
}

base::Result<v1::PodSandboxStatus> PodEnv::PodStatus(const std::string& id) {
  v1::PodSandboxStatusRequest req;
  req.set_pod_sandbox_id(id);
  req.set_verbose(true);
  v1::PodSandboxStatusResponse resp;
  auto status = runtime_->PodSandboxStatus(Ctx(std::chrono::seconds(30)).get(), req, &resp);
  if (!status.ok()) {
    return cri::CriClient::CallError("PodSandboxStatus", status);
  }
  return resp.status();
}

base::Result<v1::ContainerStatus> PodEnv::WaitExited(const std::string& id, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (true) {
    CHRYS_ASSIGN_OR_RETURN(v1::ContainerStatus status, ContainerStatus(id));
    if (status.state() == v1::CONTAINER_EXITED) {
      return status;
    }
    if (Clock::now() > deadline) {
      return base::DeadlineExceeded("container " + id + " still " + v1::ContainerState_Name(status.state()) +
                                    " after " + std::to_string(timeout.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

base::Status PodEnv::WaitRunning(const std::string& id, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (true) {
    CHRYS_ASSIGN_OR_RETURN(v1::ContainerStatus status, ContainerStatus(id));
    if (status.state() == v1::CONTAINER_RUNNING) {
      return base::Status::Ok();
    }
    if (status.state() == v1::CONTAINER_EXITED) {
      return base::FailedPrecondition("container " + id + " exited (code " + std::to_string(status.exit_code()) + ", " +
                                      status.reason() + ") instead of running");
    }
    if (Clock::now() > deadline) {
      return base::DeadlineExceeded("container " + id + " not running after " + std::to_string(timeout.count()) +
                                    " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

base::Status PodEnv::StopPod(const std::string& id) {
  v1::StopPodSandboxRequest req;
  req.set_pod_sandbox_id(id);
  v1::StopPodSandboxResponse resp;
  auto status = runtime_->StopPodSandbox(Ctx(std::chrono::seconds(90)).get(), req, &resp);
  if (!status.ok()) {
    return cri::CriClient::CallError("StopPodSandbox", status);
  }
  return base::Status::Ok();
}

base::Status PodEnv::RemovePod(const std::string& id) {
  v1::RemovePodSandboxRequest req;
  req.set_pod_sandbox_id(id);
  v1::RemovePodSandboxResponse resp;
  auto status = runtime_->RemovePodSandbox(Ctx(std::chrono::seconds(90)).get(), req, &resp);
  if (!status.ok()) {
    return cri::CriClient::CallError("RemovePodSandbox", status);
  }
  std::lock_guard<std::mutex> lock(pod_ids_mutex_);
  pod_ids_.erase(id);
  return base::Status::Ok();
}

namespace {

// Interface indexes in "N: name@ifM: ..." lines of `ip -o link`: N (own) or M (peer).
std::set<int> LinkIndexes(const std::vector<std::string>& argv, bool peer) {
  std::set<int> out;
  base::CommandSpec spec;
  spec.argv = argv;
  spec.timeout = std::chrono::seconds(10);
  auto result = base::RunCommand(spec);
  if (!result.ok() || !result->success()) {
    return out;
  }
  std::istringstream lines(result->stdout_data);
  std::string line;
  while (std::getline(lines, line)) {
    if (!peer) {
      out.insert(std::atoi(line.c_str()));
    } else if (auto at = line.find("@if"); at != std::string::npos) {
      out.insert(std::atoi(line.c_str() + at + 3));
    }
  }
  return out;
}

}  // namespace

HostTraces PodEnv::Traces() const {
  HostTraces traces;
  // Other test processes make netns too: ours are those named after our pods or wired to our bridge.
  std::set<int> bridge_ports = LinkIndexes({"ip", "-o", "link", "show", "master", bridge_}, false);
  std::set<std::string> known_pods;
  {
    std::lock_guard<std::mutex> lock(pod_ids_mutex_);
    known_pods = pod_ids_;
  }
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/run/netns", ec)) {
    std::string name = entry.path().filename();
    bool ours = known_pods.count(name) > 0;
    if (!ours && !bridge_ports.empty()) {
      for (int peer : LinkIndexes({"ip", "-n", name, "-o", "link", "show", "type", "veth"}, true)) {
        ours |= bridge_ports.count(peer) > 0;
      }
    }
    if (ours) {
      traces.netns.insert(name);
    }
  }
  traces.vmm_pids = VmmProcessesMentioning(run_dir_ + "/");
  auto state = RegularFiles(chrysd_->state_dir() + "/state", "state/");
  traces.records.insert(state.begin(), state.end());
  auto sandboxes = RegularFiles(chrysd_->state_dir() + "/sandboxes", "sandboxes/");
  traces.records.insert(sandboxes.begin(), sandboxes.end());
  auto run = RegularFiles(run_dir_ + "/sandboxes", "run/sandboxes/");
  traces.records.insert(run.begin(), run.end());
  for (const std::string& dir : {chrysd_->state_dir(), run_dir_}) {
    for (auto& mount_point : base::MountPointsAtOrBelow(dir)) {
      traces.mounts.insert(std::move(mount_point));
    }
  }
  return traces;
}

std::vector<pid_t> PodEnv::VmmPidsOf(const std::string& pod_id) const {
  auto pids = VmmProcessesMentioning(pod_id);
  return {pids.begin(), pids.end()};
}

base::Result<std::vector<CriLogLine>> ReadCriLog(const std::string& path) {
  CHRYS_ASSIGN_OR_RETURN(std::string text, base::ReadFile(path, 64 << 20));
  std::vector<CriLogLine> out;
  std::istringstream in(text);
  std::string line;
  size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    CriLogLine parsed;
    size_t a = line.find(' ');
    size_t b = a == std::string::npos ? a : line.find(' ', a + 1);
    size_t c = b == std::string::npos ? b : line.find(' ', b + 1);
    if (c == std::string::npos) {
      // "<ts> <stream> <tag>" with empty text has no trailing space in some writers; accept it only then.
      if (b != std::string::npos && line.size() == b + 2) {
        c = line.size();
      } else {
        return base::InvalidArgument(path + ":" + std::to_string(number) +
                                     ": not a CRI log line: " + line.substr(0, 120));
      }
    }
    parsed.timestamp = line.substr(0, a);
    parsed.stream = line.substr(a + 1, b - a - 1);
    parsed.tag = line.substr(b + 1, c - b - 1);
    parsed.text = c < line.size() ? line.substr(c + 1) : "";
    out.push_back(std::move(parsed));
  }
  return out;
}

std::vector<std::string> JoinedLines(const std::vector<CriLogLine>& lines, const std::string& stream) {
  std::vector<std::string> out;
  std::string pending;
  for (const auto& line : lines) {
    if (line.stream != stream) {
      continue;
    }
    pending += line.text;
    if (line.tag == "F") {
      out.push_back(pending);
      pending.clear();
    }
  }
  if (!pending.empty()) {
    out.push_back(pending);
  }
  return out;
}

}  // namespace chrys::e2e
