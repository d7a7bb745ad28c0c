#include "e2e/bench/containerd_cri.h"

#include <dirent.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/mount.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/file_util.h"
#include "base/subprocess.h"

namespace chrys::e2e {
namespace {

using Clock = std::chrono::steady_clock;

std::unique_ptr<grpc::ClientContext> Deadline(std::chrono::seconds timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  return ctx;
}

base::Status RunOk(const std::vector<std::string>& argv, std::chrono::seconds timeout) {
  base::CommandSpec spec;
  spec.argv = argv;
  spec.timeout = timeout;
  CHRYS_ASSIGN_OR_RETURN(base::CommandResult r, base::RunCommand(spec));
  if (!r.success()) {
    return base::Internal(argv[0] + " " + argv[1] + ": " + r.DescribeExit() + ": " + base::Tail(r.stderr_data));
  }
  return base::Status::Ok();
}

base::Error CallError(const std::string& what, const grpc::Status& status) {
  return base::Internal("containerd " + what + ": " + status.error_message());
}

}  // namespace

base::Result<std::unique_ptr<ContainerdCri>> ContainerdCri::Start(const ContainerdCriOptions& options) {
  std::unique_ptr<ContainerdCri> cd(new ContainerdCri(options));
  const std::string& dir = options.dir;
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(dir + "/net.d"));
  cd->socket_ = dir + "/containerd.sock";
  // runc's containers join no cgroup parent of kubelet's; their OOM score may not go below containerd's own
  // (restrict_oom_score_adj): a host without CAP_SYS_RESOURCE refuses the sandbox's default of -998.
  std::string config = "version = 2\nroot = \"" + dir + "/root\"\nstate = \"" + dir + "/state\"\n" +
                       "[grpc]\n  address = \"" + cd->socket_ + "\"\n[ttrpc]\n  address = \"" + cd->socket_ +
                       ".ttrpc\"\n[debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n" +
                       "[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"" + options.pause_image +
                       "\"\n  restrict_oom_score_adj = true\n" +
                       "  [plugins.\"io.containerd.grpc.v1.cri\".cni]\n    bin_dir = \"/usr/lib/cni\"\n"
                       "    conf_dir = \"" +
                       dir + "/net.d\"\n" +
                       "  [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n    snapshotter = \"overlayfs\"\n"
                       "    default_runtime_name = \"runc\"\n"
                       "    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n"
                       "      runtime_type = \"io.containerd.runc.v2\"\n";
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(dir + "/config.toml", config));
  std::string conflist = R"({"cniVersion": "1.0.0", "name": "chrys-bench-containerd", "plugins": [
  {"type": "bridge", "bridge": ")" +
                         options.bridge +
                         R"(", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": ")" +
                         options.subnet + R"("}]], "dataDir": ")" + dir + R"(/ipam"}},
  {"type": "loopback"}]})";
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(dir + "/net.d/10-bench.conflist", conflist));

  CHRYS_ASSIGN_OR_RETURN(
      cd->daemon_, ChildProcess::Start({"containerd", "--config", dir + "/config.toml"}, dir + "/containerd.log"));
  auto until = Clock::now() + std::chrono::seconds(30);
  while (true) {
    base::CommandSpec probe;
    probe.argv = {"ctr", "--address", cd->socket_, "version"};
    probe.timeout = std::chrono::seconds(5);
    auto r = base::RunCommand(probe);
    if (r.ok() && r->success()) {
      std::istringstream lines(r->stdout_data);
      std::string line;
      while (std::getline(lines, line)) {
        if (line.find("Version:") != std::string::npos) {
          std::string number = line.substr(line.find(':') + 1);
          number.erase(0, number.find_first_not_of(" \t"));
          cd->version_ = "containerd " + number;
          break;
        }
      }
      break;
    }
    if (Clock::now() > until || !cd->daemon_.running()) {
      auto log = base::ReadFile(dir + "/containerd.log");
      return base::Unavailable("containerd did not come up: " + (log.ok() ? base::Tail(*log) : ""));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // `ctr images import` reads an OCI archive: the layout as a tar.
  std::string archive = dir + "/images.tar";
  CHRYS_RETURN_IF_ERROR(RunOk({"tar", "-cf", archive, "-C", options.image_layout, "."}, std::chrono::seconds(60)));
  CHRYS_RETURN_IF_ERROR(
      RunOk({"ctr", "--address", cd->socket_, "-n", "k8s.io", "images", "import", archive}, std::chrono::seconds(120)));
  cd->runtime_ =
      v1::RuntimeService::NewStub(grpc::CreateChannel("unix:" + cd->socket_, grpc::InsecureChannelCredentials()));
  return cd;
}

base::Result<std::vector<std::string>> ContainerdCri::RunPodWith(const v1::PodSandboxConfig& pod,
                                                                 const std::vector<v1::ContainerConfig>& containers) {
  if (!pod.log_directory().empty()) {
    CHRYS_RETURN_IF_ERROR(base::MakeDirs(pod.log_directory()));
  }
  v1::RunPodSandboxRequest run;
  *run.mutable_config() = pod;
  v1::RunPodSandboxResponse ran;
  if (auto s = runtime_->RunPodSandbox(Deadline(std::chrono::seconds(120)).get(), run, &ran); !s.ok()) {
    return CallError("RunPodSandbox " + pod.metadata().name(), s);
  }
  std::vector<std::string> ids;
  for (const auto& config : containers) {
    v1::CreateContainerRequest create;
    create.set_pod_sandbox_id(ran.pod_sandbox_id());
    *create.mutable_config() = config;
    *create.mutable_sandbox_config() = pod;
    v1::CreateContainerResponse created;
    if (auto s = runtime_->CreateContainer(Deadline(std::chrono::seconds(60)).get(), create, &created); !s.ok()) {
      return CallError("CreateContainer " + config.metadata().name(), s);
    }
    v1::StartContainerRequest start;
    start.set_container_id(created.container_id());
    v1::StartContainerResponse started;
    if (auto s = runtime_->StartContainer(Deadline(std::chrono::seconds(60)).get(), start, &started); !s.ok()) {
      return CallError("StartContainer " + config.metadata().name(), s);
    }
    ids.push_back(created.container_id());
  }
  return ids;
}

void ContainerdCri::RemoveAllPods() {
  if (!runtime_) {
    return;
  }
  v1::ListPodSandboxResponse list;
  if (!runtime_->ListPodSandbox(Deadline(std::chrono::seconds(10)).get(), v1::ListPodSandboxRequest(), &list).ok()) {
    return;
  }
  for (const auto& pod : list.items()) {
    v1::StopPodSandboxRequest stop;
    stop.set_pod_sandbox_id(pod.id());
    v1::StopPodSandboxResponse stopped;
    (void)runtime_->StopPodSandbox(Deadline(std::chrono::seconds(60)).get(), stop, &stopped);
    v1::RemovePodSandboxRequest remove;
    remove.set_pod_sandbox_id(pod.id());
    v1::RemovePodSandboxResponse removed;
    (void)runtime_->RemovePodSandbox(Deadline(std::chrono::seconds(60)).get(), remove, &removed);
  }
}

// Shims outlive a containerd that stopped while they still had containers: they are ours when they serve our
// containerd's address. Killed by pid.
void ContainerdCri::StopShims() {
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) {
    return;
  }
  while (dirent* entry = ::readdir(proc)) {
    pid_t pid = static_cast<pid_t>(std::strtol(entry->d_name, nullptr, 10));
    if (pid <= 0) {
      continue;
    }
    std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
    std::vector<std::string> argv;
    std::string arg;
    while (std::getline(in, arg, '\0')) {
      argv.push_back(arg);
    }
    if (argv.empty() || argv[0].find("containerd-shim") == std::string::npos) {
      continue;
    }
    for (size_t i = 0; i + 1 < argv.size(); ++i) {
      if (argv[i] == "-address" && argv[i + 1] == socket_) {
        ::kill(pid, SIGKILL);
        break;
      }
    }
  }
  ::closedir(proc);
}

ContainerdCri::~ContainerdCri() {
  RemoveAllPods();
  runtime_.reset();
  daemon_.Stop();
  StopShims();
  for (const auto& mount_point : base::MountPointsAtOrBelow(options_.dir)) {  // deepest first
    (void)::umount2(mount_point.c_str(), MNT_DETACH);
  }
  base::CommandSpec del;
  del.argv = {"ip", "link", "del", options_.bridge};
  del.timeout = std::chrono::seconds(10);
  (void)base::RunCommand(del);  // absent when no pod ever ran
}

}  // namespace chrys::e2e
