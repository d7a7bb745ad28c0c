// sandbox_bench: VM sandbox create → agent ready through our QEMU driver, beside bare qemu-system-x86_64 booting
// the same kernel + initramfs to the same console marker (same accelerator, same run, interleaved rounds); chrysd
// memory per running sandbox; stop → all resources gone after the guest halts. Prints a table and a JSON line.
// Root needed (cgroups). Usage: sandbox_bench [rounds=3] [concurrent=3]
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/file_util.h"
#include "e2e/runtime/test_guest.h"
#include "runtime/cgroup.h"
#include "runtime/process.h"
#include "runtime/qemu.h"
#include "runtime/qemu_cpu.h"
#include "runtime/sandbox.h"

namespace {

using namespace chrys;
using namespace chrys::runtime;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// Bytes in use on our heap: finer than RSS, which moves in whole pages.
long HeapInUseBytes() {
  return static_cast<long>(::mallinfo2().uordblks);
}

long SelfRssKiB() {
  auto status = base::ReadFile("/proc/self/status");
  if (!status.ok()) {
    return -1;
  }
  size_t pos = status->find("VmRSS:");
  return pos == std::string::npos ? -1 : std::atol(status->c_str() + pos + 6);
}

// Bare QEMU: the same kernel, initramfs, memory, vCPUs and accelerator; time until the guest prints the marker.
// The firmware chrysd boots microVMs with (vmm.microvm_firmware's default) when installed; both sides use it.
std::string Firmware() {
  const char* qboot = "/usr/share/qemu/qboot.rom";
  return ::access(qboot, R_OK) == 0 ? qboot : "";
}

double BareBootMs(const std::string& kernel, const std::string& initramfs, const std::string& accel,
                  const std::string& dir) {
  std::string console = dir + "/bare-console.log";
  (void)base::RemoveFileIfExists(console);
  std::vector<std::string> args = {"/usr/bin/qemu-system-x86_64",
                                   "-machine",
                                   "q35,accel=" + accel,
                                   "-cpu",
                                   accel == "kvm" ? "host" : runtime::kTcgCpuModel,
                                   "-smp",
                                   "1",
                                   "-m",
                                   "256M",
                                   "-nodefaults",
                                   "-no-user-config",
                                   "-nographic",
                                   "-no-reboot",
                                   "-chardev",
                                   "file,id=console,path=" + console,
                                   "-serial",
                                   "chardev:console",
                                   "-kernel",
                                   kernel,
                                   "-initrd",
                                   initramfs,
                                   "-append",
                                   "console=ttyS0 panic=-1 quiet"};
  if (!Firmware().empty()) {
    args.insert(args.end(), {"-bios", Firmware()});
  }
  auto start = Clock::now();
  pid_t pid = ::fork();
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_RDWR);
    ::dup2(devnull, 0);
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
    std::vector<char*> argv;
    for (auto& a : args) {
      argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  double took = -1;
  while (Clock::now() - start < 120s) {
    auto text = base::ReadFile(console);
    if (text.ok() && text->find(runtime::testing::kGuestUpMarker) != std::string::npos) {
      took = Ms(Clock::now() - start);
      break;
    }
    std::this_thread::sleep_for(5ms);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return took;
}

SandboxManagerOptions Options(const std::string& root, const std::string& kernel, const std::string& initramfs,
                              std::shared_ptr<AgentConnector> agent) {
  SandboxManagerOptions o;
  o.state_dir = root + "/state";
  o.run_dir = root + "/run";
  o.kernel_path = kernel;
  o.initramfs_path = initramfs;
  o.kernel_cmdline = "console=ttyS0 panic=-1 quiet";
  o.sizing.default_vcpus = 1;
  o.sizing.default_memory_mib = 256;
  o.sizing.overhead_memory_mib = 0;
  o.boot_timeout = 120s;
  o.agent = std::move(agent);
  o.vmm_factory = [](VmmKind) -> base::Result<std::unique_ptr<Vmm>> {
    QemuConfig c;
    c.accel_cache_path = "";
    c.hotplug_ports = 4;
    c.direct_boot_firmware = Firmware();
    return std::unique_ptr<Vmm>(std::make_unique<QemuVmm>(c));
  };
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 3;
  int concurrent = argc > 2 ? std::max(1, std::atoi(argv[2])) : 3;
  if (::geteuid() != 0) {
    std::cerr << "sandbox_bench: needs root (cgroups)\n";
    return 2;
  }
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  std::string kernel = runtime::testing::FindCloudKernel();
  if (kernel.empty()) {
    std::cerr << "sandbox_bench: no /boot/vmlinuz-*-cloud-amd64\n";
    return 2;
  }
  std::string version = kernel.substr(std::string("/boot/vmlinuz-").size());
  std::string root = "/tmp/sbench-" + std::to_string(::getpid());
  (void)base::MakeDirs(root + "/guest");
  auto initramfs =
      runtime::testing::BuildTestInitramfs(root + "/guest", version, runtime::testing::GuestFlavor::kAgent);
  if (!initramfs.ok()) {
    std::cerr << initramfs.error().message() << "\n";
    return 1;
  }
  QemuConfig probe;
  probe.accel_cache_path = "";
  std::string accel = ResolveQemuAccel(probe, kernel).ok() ? *ResolveQemuAccel(probe, kernel) : "tcg";
  auto agent = std::make_shared<runtime::testing::LineAgentConnector>();
  auto options = Options(root, kernel, *initramfs, agent);
  SandboxManager manager(options);
  if (!manager.Recover().ok()) {
    std::cerr << "recover failed\n";
    return 1;
  }

  // Interleaved rounds: bare boot to the marker, then our create → agent ready, then our stop.
  std::vector<double> bare, ours, stop_total, cleanup_after_halt;
  int failures = 0;
  std::vector<double> round_ratios;
  for (int r = 0; r < rounds; ++r) {
    // Alternate which of the pair goes first, so load drifting during a round does not favour one side.
    double bare_ms_round = -1;
    if (r % 2 == 0) {
      bare_ms_round = BareBootMs(kernel, *initramfs, accel, root);
    }
    SandboxRequest req;
    req.id = "b" + std::to_string(r);
    req.handler = "chrysalis-qemu";
    req.cgroup_parent = "chrys-bench-" + std::to_string(::getpid());
    auto start = Clock::now();
    auto created = manager.Create(req);
    if (!created.ok()) {
      std::cerr << "create failed: " << created.error().message() << "\n";
      ++failures;
      continue;
    }
    ours.push_back(Ms(Clock::now() - start));

    // Watch for the VMM to disappear while Stop runs: the moment the guest has halted and QEMU exited.
    pid_t vmm = created->vmm_pid;
    std::atomic<bool> done{false};
    Clock::time_point halted{};
    std::thread watcher([&] {
      while (!done) {
        if (!ProcessRunning(vmm)) {
          halted = Clock::now();
          return;
        }
        std::this_thread::sleep_for(1ms);
      }
    });
    auto stop_start = Clock::now();
    auto stopped = manager.Stop(req.id);
    auto stop_end = Clock::now();
    done = true;
    watcher.join();
    if (!stopped.ok()) {
      std::cerr << "stop failed: " << stopped.error().message() << "\n";
      ++failures;
    }
    bool gone = !ProcessRunning(vmm) && ::access((options.run_dir + "/" + req.id).c_str(), F_OK) != 0;
    if (!gone) {
      std::cerr << "resources left after stop of " << req.id << "\n";
      ++failures;
    }
    stop_total.push_back(Ms(stop_end - stop_start));
    if (halted != Clock::time_point{}) {
      cleanup_after_halt.push_back(Ms(stop_end - std::min(halted, stop_end)));
    }
    (void)manager.Remove(req.id);
    ::rmdir(("/sys/fs/cgroup/unified/" + req.cgroup_parent).c_str());
    // The peer runs with our VM gone, as the even rounds' bare boot ran before ours existed.
    if (r % 2 == 1) {
      bare_ms_round = BareBootMs(kernel, *initramfs, accel, root);
    }
    bare.push_back(bare_ms_round);
    if (bare_ms_round > 0) {
      round_ratios.push_back(ours.back() / bare_ms_round);
    }
  }

  // Memory of this process (playing chrysd) per running sandbox, after one warm-up sandbox.
  long rss_before = -1, rss_after = -1, heap_before = -1, heap_after = -1;
  int running = 0;
  {
    SandboxRequest warm;
    warm.id = "warm";
    warm.handler = "chrysalis-qemu";
    if (manager.Create(warm).ok()) {
      rss_before = SelfRssKiB();
      heap_before = HeapInUseBytes();
      for (int i = 0; i < concurrent; ++i) {
        SandboxRequest req;
        req.id = "m" + std::to_string(i);
        req.handler = "chrysalis-qemu";
        if (manager.Create(req).ok()) {
          ++running;
        } else {
          ++failures;
        }
      }
      rss_after = SelfRssKiB();
      heap_after = HeapInUseBytes();
    } else {
      ++failures;
    }
    for (const auto& st : manager.List()) {
      (void)manager.Remove(st.id);
    }
  }
  (void)base::RemoveTree(root);

  double bare_ms = Median(bare), ours_ms = Median(ours);
  double ratio = bare_ms > 0 ? ours_ms / bare_ms : 0;
  double rss_per = running > 0 && rss_before >= 0 ? double(rss_after - rss_before) / running : -1;
  double heap_per = running > 0 && heap_before >= 0 ? double(heap_after - heap_before) / running / 1024 : -1;
  std::printf("%-44s %12s %12s\n", "metric (median of rounds)", "value", "peer/target");
  std::printf("%-44s %12.0f %12s\n", "bare qemu boot to marker (ms)", bare_ms, "-");
  std::printf("%-44s %12.0f %12.0f\n", "sandbox create -> agent ready (ms)", ours_ms, bare_ms);
  std::printf("%-44s %12.3f %12s\n", "ratio ours/bare (medians)", ratio, "<= 1.10");
  std::printf("%-44s %12.3f %12s\n", "ratio ours/bare (median of rounds)", Median(round_ratios), "<= 1.10");
  std::printf("%-44s %12.1f %12s\n", "chrysd RSS per running sandbox (KiB)", rss_per, "<= 1024");
  std::printf("%-44s %12.1f %12s\n", "chrysd heap in use per sandbox (KiB)", heap_per, "<= 1024");
  std::printf("%-44s %12.0f %12s\n", "stop total incl. guest shutdown (ms)", Median(stop_total), "-");
  std::printf("%-44s %12.0f %12s\n", "stop: resources gone after halt (ms)", Median(cleanup_after_halt), "<= 2000");
  std::printf("accel=%s firmware=%s rounds=%d concurrent=%d failures=%d\n", accel.c_str(),
              Firmware().empty() ? "default" : Firmware().c_str(), rounds, running, failures);
  nlohmann::json j = {{"bench", "sandbox"},
                      {"accel", accel},
                      {"rounds", rounds},
                      {"bare_boot_ms", bare},
                      {"create_ready_ms", ours},
                      {"bare_boot_median_ms", bare_ms},
                      {"create_ready_median_ms", ours_ms},
                      {"ratio", ratio},
                      {"round_ratios", round_ratios},
                      {"median_round_ratio", Median(round_ratios)},
                      {"rss_kib_per_sandbox", rss_per},
                      {"heap_kib_per_sandbox", heap_per},
                      {"rss_before_kib", rss_before},
                      {"rss_after_kib", rss_after},
                      {"sandboxes_measured", running},
                      {"stop_total_ms", stop_total},
                      {"cleanup_after_halt_ms", cleanup_after_halt},
                      {"firmware", Firmware()},
                      {"failures", failures}};
  std::cout << j.dump() << std::endl;
  return failures == 0 ? 0 : 1;
}
