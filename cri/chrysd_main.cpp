// chrysd: the Chrysalis CRI daemon. Parses flags and config, sets up logging, serves until SIGTERM/SIGINT.
#include <absl/synchronization/mutex.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>

#include <cstring>
#include <iostream>
#include <thread>

#include "base/file_util.h"
#include "cri/config.h"
#include "cri/daemon.h"
#include "cri/logging.h"

namespace {

constexpr const char* kDefaultConfigPath = "/etc/chrysalis/config.yaml";

constexpr const char* kUsage = R"(Usage: chrysd [flags]

Chrysalis CRI runtime daemon: serves the Kubernetes CRI v1 RuntimeService and ImageService on a unix socket
and runs every pod sandbox in its own virtual machine.

Configuration is layered: embedded defaults, then the config file, then flags.

Flags:
  --config PATH          config file (default /etc/chrysalis/config.yaml; a missing default file is fine)
  --socket PATH          CRI socket (config key: socket)
  --state-dir PATH       persistent state root (config key: state_dir)
  --run-dir PATH         runtime directory for sockets and pids (config key: run_dir)
  --cgroup-driver NAME   cgroupfs or systemd (config key: cgroup_driver)
  --log-level LEVEL      trace, debug, info, warn, error, critical, off (config key: log.level)
  --log-file PATH        log to this file with size-based rotation (config key: log.file)
  --set KEY=VALUE        set any config key, e.g. --set cni.conf_dir=/etc/cni/net.d (repeatable)
  --print-config         print the effective configuration as YAML and exit
  --version              print the version and exit
  -h, --help             print this help and exit
)";

struct Flags {
  std::string config_path = kDefaultConfigPath;
  bool config_explicit = false;
  std::vector<std::string> overrides;
  bool print_config = false;
};

// Returns 0 to continue, or an exit code (after printing) for --help, --version and usage errors.
int ParseFlags(int argc, char** argv, Flags& flags) {
  auto need_value = [&](int& i, const char* name) -> const char* {
    if (i + 1 >= argc) {
      std::cerr << "chrysd: " << name << " needs a value\n";
      return nullptr;
    }
    return argv[++i];
  };
  static const std::pair<const char*, const char*> kShortcuts[] = {
      {"--socket", "socket"},       {"--state-dir", "state_dir"},
      {"--run-dir", "run_dir"},     {"--cgroup-driver", "cgroup_driver"},
      {"--log-level", "log.level"}, {"--log-file", "log.file"},
  };
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      return -1;
    }
    if (arg == "--version") {
      std::cout << "chrysd " << chrys::cri::ChrysalisVersion() << " (CRI runtime.v1)\n";
      return -1;
    }
    if (arg == "--print-config") {
      flags.print_config = true;
      continue;
    }
    if (arg == "--config" || arg == "--set") {
      const char* value = need_value(i, arg.c_str());
      if (value == nullptr) {
        return 2;
      }
      if (arg == "--config") {
        flags.config_path = value;
        flags.config_explicit = true;
      } else {
        flags.overrides.emplace_back(value);
      }
      continue;
    }
    bool matched = false;
    for (const auto& [flag, key] : kShortcuts) {
      if (arg == flag) {
        const char* value = need_value(i, flag);
        if (value == nullptr) {
          return 2;
        }
        flags.overrides.push_back(std::string(key) + "=" + value);
        matched = true;
      }
    }
    if (!matched) {
      std::cerr << "chrysd: unknown flag '" << arg << "' (see chrysd --help)\n";
      return 2;
    }
  }
  return 0;
}

chrys::base::Status LoadConfig(const Flags& flags, chrys::cri::Config& config) {
  auto text = chrys::base::ReadFile(flags.config_path, 1 << 20);
  if (text.ok()) {
    CHRYS_RETURN_IF_ERROR(chrys::cri::ApplyYaml(config, *text, flags.config_path));
  } else if (flags.config_explicit || text.error().code() != chrys::base::ErrorCode::kNotFound) {
    return text.error().Wrap("read config file");
  }
  for (const auto& assignment : flags.overrides) {
    CHRYS_RETURN_IF_ERROR(chrys::cri::ApplyOverride(config, assignment));
  }
  return chrys::cri::Validate(config);
}

}  // namespace

int main(int argc, char** argv) {
  // Debian builds absl without NDEBUG, so every absl::Mutex lock (gRPC takes many per call) also updates a global
  // lock-order graph for deadlock detection: ~3 % of chrysd's CPU in a tight CRI loop, and a global lock. That is a
  // debugging aid; release binaries of absl ship with it off.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  Flags flags;
  if (int rc = ParseFlags(argc, argv, flags); rc != 0) {
    return rc < 0 ? 0 : rc;
  }
  chrys::cri::Config config;
  if (auto loaded = LoadConfig(flags, config); !loaded.ok()) {
    std::cerr << "chrysd: " << loaded.error().message() << "\n";
    return 2;
  }
  if (flags.print_config) {
    std::cout << config.ToYaml();
    return 0;
  }
  if (auto logging = chrys::cri::SetUpLogging(config.log); !logging.ok()) {
    std::cerr << "chrysd: " << logging.error().message() << "\n";
    return 1;
  }

  // Block the stop signals in every thread (gRPC's included) so only the waiter below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // VMMs double-fork away from us; as subreaper we still get their exit and the runtime reaps them by pidfd,
  // so no zombie VMMs pile up where PID 1 does not reap.
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    spdlog::warn("cannot become child subreaper: {}", strerror(errno));
  }

  chrys::cri::Daemon daemon(config);
  if (auto started = daemon.Start(); !started.ok()) {
    spdlog::critical("chrysd cannot start: {}", started.error().message());
    return 1;
  }
  std::thread waiter([&] {
    int signo = 0;
    sigwait(&stop_signals, &signo);
    spdlog::info("received {}", strsignal(signo));
    daemon.RequestShutdown();
  });
  daemon.Wait();
  daemon.Close();
  // The waiter has returned unless the server stopped on its own; wake it so it can be joined.
  // SIGTERM is blocked in every thread and only sigwait()ed by the waiter: this ends its wait, not the process.
  pthread_kill(waiter.native_handle(), SIGTERM);  // NOLINT(bugprone-bad-signal-to-kill-thread)
  waiter.join();
  spdlog::info("chrysd stopped");
  return 0;
}
