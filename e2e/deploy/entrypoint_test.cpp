// The chart's DaemonSet entrypoint (charts/chrysalis/files/entrypoint.sh) run on this machine against a host
// root directory made by the test: it installs Chrysalis there and starts a chrysd that answers on its socket.
// Every path chrysd uses is redirected into the temp root (nothing touches the real /etc, /run or /var).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "base/subprocess.h"
#include "e2e/fixtures/temp_dir.h"

extern char** environ;

namespace chrys::e2e {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

void WriteText(const std::string& path, const std::string& text, mode_t mode = 0644) {
  std::ofstream(path, std::ios::trunc) << text;
  chmod(path.c_str(), mode);
}

// A process this test started (by posix_spawn, output to a log). Killed by pid and reaped when dropped.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::vector<std::string>& env, const std::string& log) {
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) {
      env_strings.emplace_back(*e);
    }
    env_strings.insert(env_strings.end(), env.begin(), env.end());
    std::vector<char*> args, envp;
    for (const auto& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    for (const auto& e : env_strings)
      envp.push_back(const_cast<char*>(e.c_str()));
    args.push_back(nullptr);
    envp.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    if (posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), envp.data()) != 0) {
      pid_ = -1;
    }
    posix_spawn_file_actions_destroy(&actions);
  }
  ~Process() {
    if (pid_ > 0 && !exit_status_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  // The wait status once the process has exited within `timeout`; nullopt while it still runs.
  std::optional<int> WaitExit(milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!exit_status_) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exit_status_ = status;
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        break;
      }
      std::this_thread::sleep_for(milliseconds(50));
    }
    return exit_status_;
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
};

// A chrysd started by the fake host systemd of the host-mode test; killed by its recorded pid.
class PidFileGuard {
 public:
  explicit PidFileGuard(std::string path) : path_(std::move(path)) {}
  ~PidFileGuard() {
    if (pid_t pid = Pid(); pid > 0) {
      kill(pid, SIGTERM);
      for (int i = 0; i < 100 && kill(pid, 0) == 0; ++i) {
        std::this_thread::sleep_for(milliseconds(50));
      }
      kill(pid, SIGKILL);
    }
  }
  pid_t Pid() const {
    std::string text = ReadText(path_);
    return text.empty() ? -1 : static_cast<pid_t>(std::stol(text));
  }

 private:
  std::string path_;
};

base::CommandResult Chrysctl(const std::string& socket) {
  base::CommandSpec spec;
  spec.argv = {CHRYSCTL_BINARY, "--socket", socket, "version"};
  spec.timeout = seconds(10);
  auto result = base::RunCommand(spec);
  return result.ok() ? *result : base::CommandResult{};
}

class Entrypoint : public ::testing::Test {
 protected:
  void SetUp() override {
    host_ = dir_.path() + "/host";
    bundle_build_ = dir_.path() + "/bundle/build";
    fs::create_directories(host_);
    fs::create_directories(bundle_build_ + "/cri");
    fs::create_directories(dir_.path() + "/configmap");
    fs::create_symlink(CHRYSD_BINARY, bundle_build_ + "/cri/chrysd");
    fs::create_symlink(CHRYSCTL_BINARY, bundle_build_ + "/cri/chrysctl");
    socket_ = host_ + "/run/chrysalis/chrysalis.sock";
    // The ConfigMap's config.yaml, with the host paths redirected into the temp root.
    WriteText(config_path(), "socket: \"" + socket_ + "\"\n" + "state_dir: \"" + host_ + "/var/lib/chrysalis\"\n" +
                                 "run_dir: \"" + host_ + "/run/chrysalis\"\n" + "cni:\n  conf_dir: \"" + host_ +
                                 "/etc/cni/net.d\"\n" + "  bin_dirs: [\"/usr/lib/cni\"]\n" + "vmm:\n  guest_dir: \"" +
                                 host_ + "/var/lib/chrysalis/guest\"\n" + "  warm_pool_size: 0\n");
  }

  std::string config_path() const { return dir_.path() + "/configmap/config.yaml"; }
  std::string log_path() const { return dir_.path() + "/entrypoint.log"; }
  std::vector<std::string> Env(const std::string& mode) const {
    return {"CHRYSALIS_MODE=" + mode,
            "CHRYSALIS_HOST_ROOT=" + host_,
            "CHRYSALIS_INSTALL_SCRIPT=" CHRYS_SOURCE_DIR "/deploy/install.sh",
            "CHRYSALIS_BUILD_DIR=" + bundle_build_,
            "CHRYSALIS_CONFIG=" + config_path(),
            "CHRYSALIS_SOCKET=" + socket_,
            "CHRYSALIS_START_TIMEOUT=60",
            "CHRYSALIS_CHECK_INTERVAL=1"};
  }
  std::unique_ptr<Process> Start(const std::vector<std::string>& env) {
    return std::make_unique<Process>(
        std::vector<std::string>{"/bin/bash", CHRYS_SOURCE_DIR "/charts/chrysalis/files/entrypoint.sh"}, env,
        log_path());
  }
  // Waits until chrysctl gets an answer on the socket; fails early when `process` exits.
  bool WaitForAnswer(Process& process, seconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (Chrysctl(socket_).success()) {
        return true;
      }
      if (process.WaitExit(milliseconds(0))) {
        return false;
      }
      std::this_thread::sleep_for(milliseconds(200));
    }
    return false;
  }

  TempDir dir_{"chrys-deploy-e2e"};
  std::string host_, bundle_build_, socket_;
};

TEST_F(Entrypoint, DaemonModeInstallsAndRunsChrysdInTheContainer) {
  auto entry = Start(Env("daemon"));
  ASSERT_GT(entry->pid(), 0);
  ASSERT_TRUE(WaitForAnswer(*entry, seconds(60))) << ReadText(log_path());
  auto version = Chrysctl(socket_);
  EXPECT_NE(version.stdout_data.find("chrysalis"), std::string::npos) << version.stdout_data;
  // The entrypoint exec'ed chrysd: the pid we started is chrysd now, with the ConfigMap's config.
  EXPECT_EQ(fs::read_symlink("/proc/" + std::to_string(entry->pid()) + "/exe"), fs::canonical(CHRYSD_BINARY));
  EXPECT_NE(ReadText("/proc/" + std::to_string(entry->pid()) + "/cmdline").find(config_path()), std::string::npos);
  // Installed into the host root: tools, config, CNI example; no systemd unit in this mode.
  EXPECT_TRUE(fs::exists(host_ + "/usr/local/bin/chrysctl"));
  EXPECT_EQ(ReadText(host_ + "/etc/chrysalis/config.yaml"), ReadText(config_path()));
  EXPECT_TRUE(fs::exists(host_ + "/etc/cni/net.d/10-chrysalis.conflist"));
  EXPECT_FALSE(fs::exists(host_ + "/etc/systemd/system/chrysd.service"));
  // Stops on SIGTERM like a pod's container.
  kill(entry->pid(), SIGTERM);
  auto status = entry->WaitExit(seconds(30));
  ASSERT_TRUE(status.has_value()) << "chrysd did not stop within 30 s of SIGTERM";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << ReadText(log_path());
}

TEST_F(Entrypoint, HostModeInstallsTheUnitAndStartsItThroughTheHost) {
  // Stands in for "nsenter -t 1 -m --" into a host running systemd: records each call and, for
  // "systemctl restart chrysd.service", runs the installed unit's ExecStart with its host paths inside the
  // temp root, detached, recording the pid.
  std::string fake = dir_.path() + "/fake-host-exec";
  WriteText(
      fake,
      "#!/bin/bash\n"
      "set -eu\n"
      "echo \"$*\" >>'" +
          dir_.path() +
          "/host-exec.log'\n"
          "[ \"$1\" = systemctl ] || exit 1\n"
          "case \"$2\" in\n"
          "  daemon-reload | enable) exit 0 ;;\n"
          "  restart)\n"
          "    host='" +
          host_ +
          "'\n"
          "    set -- $(sed -n 's/^ExecStart=//p' \"$host/etc/systemd/system/chrysd.service\")\n"
          "    bin=$host$1; shift; args=()\n"
          "    while [ $# -gt 0 ]; do\n"
          "      if [ \"$1\" = --config ]; then args+=(--config \"$host$2\"); shift 2; else args+=(\"$1\"); shift; fi\n"
          "    done\n"
          "    setsid \"$bin\" \"${args[@]}\" >>'" +
          dir_.path() +
          "/chrysd.log' 2>&1 </dev/null &\n"
          "    echo $! >'" +
          dir_.path() +
          "/chrysd.pid'\n"
          "    exit 0 ;;\n"
          "esac\n"
          "exit 1\n",
      0755);
  PidFileGuard chrysd(dir_.path() + "/chrysd.pid");
  auto env = Env("host");
  env.push_back("CHRYSALIS_HOST_EXEC=" + fake);
  auto entry = Start(env);
  ASSERT_GT(entry->pid(), 0);
  ASSERT_TRUE(WaitForAnswer(*entry, seconds(60))) << ReadText(log_path()) << ReadText(dir_.path() + "/chrysd.log");
  // The chrysd that answers is the one installed into the host root, started from the installed unit.
  pid_t pid = chrysd.Pid();
  ASSERT_GT(pid, 0);
  EXPECT_EQ(fs::read_symlink("/proc/" + std::to_string(pid) + "/exe"), fs::path(host_ + "/usr/local/bin/chrysd"));
  EXPECT_EQ(ReadText(dir_.path() + "/host-exec.log"),
            "systemctl daemon-reload\nsystemctl enable chrysd.service\nsystemctl restart chrysd.service\n");
  EXPECT_TRUE(fs::exists(host_ + "/etc/systemd/system/chrysd.service"));
  // The entrypoint stays up as a health check and leaves chrysd running when the pod stops.
  std::this_thread::sleep_for(seconds(2));
  EXPECT_FALSE(entry->WaitExit(milliseconds(0)).has_value()) << ReadText(log_path());
  kill(entry->pid(), SIGTERM);
  auto status = entry->WaitExit(seconds(10));
  ASSERT_TRUE(status.has_value()) << "the entrypoint did not stop within 10 s of SIGTERM";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << ReadText(log_path());
  EXPECT_TRUE(Chrysctl(socket_).success()) << "chrysd must outlive the pod in host mode";
  EXPECT_NE(ReadText(log_path()).find("chrysd.service keeps running"), std::string::npos);
}

TEST_F(Entrypoint, MissingBuildOutputsStopItWithTheirNames) {
  fs::remove(bundle_build_ + "/cri/chrysctl");
  auto entry = Start(Env("daemon"));
  auto status = entry->WaitExit(seconds(30));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0);
  std::string log = ReadText(log_path());
  EXPECT_NE(log.find("build outputs missing: " + bundle_build_ + "/cri/chrysctl"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(host_ + "/usr/local/bin/chrysd"));
}

TEST_F(Entrypoint, UnknownModeIsNamed) {
  auto entry = Start(Env("sideways"));
  auto status = entry->WaitExit(seconds(10));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0);
  EXPECT_NE(ReadText(log_path()).find("CHRYSALIS_MODE is 'sideways'; expected host or daemon"), std::string::npos);
}

}  // namespace
}  // namespace chrys::e2e
