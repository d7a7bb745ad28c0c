// guest_boot_bench: boot-to-agent-ready of the built guest beside the floor (the same kernel and QEMU flags
// booting a bare busybox initramfs to a shell marker), initramfs size, agent idle RSS. Table + JSON line.
// Usage: guest_boot_bench [[--rounds] N] [--guest DIR]
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "e2e/guest/qemu_guest.h"
#include "guest/image/cpio_writer.h"
#include "runtime/agent/agent_client.h"

using namespace chrys;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kMarker = "CHRYS-FLOOR-READY";

base::Status BuildFloorInitramfs(const std::string& dir, std::string* path) {
  guest::CpioArchive archive;
  CHRYS_ASSIGN_OR_RETURN(std::string busybox, base::ReadFile("/bin/busybox", 64 << 20));
  guest::CpioEntry bb;
  bb.mode = 0755;
  bb.data = busybox;
  CHRYS_RETURN_IF_ERROR(archive.Add("bin/busybox", bb));
  guest::CpioEntry init;
  init.mode = 0755;
  init.data = std::string("#!/bin/busybox sh\n/bin/busybox echo ") + kMarker + "\nexec /bin/busybox sleep 3600\n";
  CHRYS_RETURN_IF_ERROR(archive.Add("init", init));
  guest::CpioEntry console;
  console.type = guest::CpioEntry::Type::kCharDevice;
  console.mode = 0600;
  console.rdev_major = 5;
  console.rdev_minor = 1;
  CHRYS_RETURN_IF_ERROR(archive.Add("dev/console", console));
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(dir + "/floor.cpio", archive.Serialize(0)));
  base::CommandSpec spec;
  spec.argv = {"zstd", "-q", "-f", "-19", "-T1", dir + "/floor.cpio", "-o", dir + "/floor.cpio.zstd"};
  CHRYS_ASSIGN_OR_RETURN(auto r, base::RunCommand(spec));
  if (!r.success()) {
    return base::Internal("zstd: " + r.stderr_data);
  }
  *path = dir + "/floor.cpio.zstd";
  return base::Status::Ok();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  // Flags: N or --rounds N; --guest DIR boots another built guest (an A/B of two agents) instead of this build's.
  int rounds = 3;
  std::string guest_dir = CHRYS_GUEST_DIR;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--rounds" && i + 1 < argc) {
      rounds = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--guest" && i + 1 < argc) {
      guest_dir = argv[++i];
    } else {
      rounds = std::max(1, std::atoi(arg.c_str()));
    }
  }
  char tmpl[] = "/tmp/chrys-guest-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  std::string dir = tmpl;
  auto options = guest::testing::OptionsFromManifest(guest_dir, dir);
  if (!options.ok()) {
    std::fprintf(stderr, "%s\n", options.error().message().c_str());
    return 1;
  }
  // Both boot with the firmware chrysd gives microVMs (vmm.microvm_firmware: qboot when installed).
  if (::access("/usr/share/qemu/qboot.rom", R_OK) == 0) {
    options->firmware = "/usr/share/qemu/qboot.rom";
  }
  std::string floor_initrd;
  auto built = BuildFloorInitramfs(dir, &floor_initrd);
  if (!built.ok()) {
    std::fprintf(stderr, "%s\n", built.error().message().c_str());
    return 1;
  }
  std::vector<double> floor_ms;
  std::vector<double> agent_ms;
  std::vector<double> ready_line_ms;
  uint64_t rss = 0;
  uint64_t guest_ready_ms = 0;
  // One floor boot; false when QEMU did not start.
  auto boot_floor = [&]() -> bool {
    auto o = *options;
    o.initrd = floor_initrd;
    guest::testing::QemuGuest vm;
    auto start = Clock::now();
    if (!vm.Start(o).ok()) {
      return false;
    }
    while (vm.Console().find(kMarker) == std::string::npos) {
      if (Clock::now() - start > std::chrono::seconds(120)) {
        std::fprintf(stderr, "the floor guest printed no %s within 120 s\n", kMarker);
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    floor_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    return true;
  };
  // One boot of our guest to a Ping answered as ready; false when it did not get there.
  auto boot_agent = [&]() -> bool {
    guest::testing::QemuGuest vm;
    auto start = Clock::now();
    if (!vm.Start(*options).ok()) {
      return false;
    }
    // The agent's "ready" console line, watched as the floor's marker is, tells the guest's share apart from the
    // host's detection (a Ping answered over virtio-serial), which is what chrysd waits for.
    double line_ms = -1;
    std::thread line_watcher([&] {
      while (Clock::now() - start < std::chrono::seconds(120)) {
        if (vm.Console().find("chrys-agent info: ready") != std::string::npos) {
          line_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
    auto client = runtime::agent::AgentClient::ConnectWhenReady(
        runtime::agent::AgentEndpoint::VirtioSerial(vm.agent_socket()), std::chrono::seconds(120));
    agent_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    line_watcher.join();
    ready_line_ms.push_back(line_ms);
    if (!client.ok()) {
      std::fprintf(stderr, "agent not ready: %s\n", client.error().message().c_str());
      return false;
    }
    // Idle RSS: let the agent settle, then ask it for its own VmRSS.
    std::this_thread::sleep_for(std::chrono::seconds(1));
    auto ping = (*client)->Ping(std::chrono::seconds(10));
    if (ping.ok()) {
      rss = ping->agent_rss_bytes();
      guest_ready_ms = ping->boot_to_ready_ms();
    }
    return true;
  };
  // Rounds alternate which side boots first (ABBA), and each round's two boots make one paired ratio: this host's
  // speed drifts by tens of percent within minutes, and a pair taken back to back sees the same host.
  std::vector<double> paired;
  for (int i = 0; i < rounds; ++i) {
    bool ok = (i % 2 == 0) ? (boot_floor() && boot_agent()) : (boot_agent() && boot_floor());
    if (!ok) {
      return 1;
    }
    paired.push_back(agent_ms.back() / floor_ms.back());
  }
  struct stat st {};
  ::stat(options->initrd.c_str(), &st);
  double floor = Median(floor_ms);
  double agent = Median(agent_ms);
  double ratio = Median(paired);
  std::printf("%-38s %14s %14s\n", "metric (median of runs)", "chrysalis", "floor/target");
  std::printf("%-38s %14.0f %14.0f\n", "boot to ready, ms (QEMU TCG)", agent, floor);
  std::printf("%-38s %14.3f %14.3f\n", "ready / floor (median of paired rounds)", ratio, 1.15);
  std::printf("%-38s %14.3f %14s\n", "ratio of the medians", floor > 0 ? agent / floor : 0, "-");
  std::printf("%-38s %14.0f %14.0f\n", "agent ready line on console, ms", Median(ready_line_ms), floor);
  std::printf("%-38s %14.2f %14.2f\n", "initramfs, MiB (compressed)", static_cast<double>(st.st_size) / 1048576.0,
              16.0);
  std::printf("%-38s %14.2f %14.2f\n", "agent idle RSS, MiB", static_cast<double>(rss) / 1048576.0, 10.0);
  std::printf("%-38s %14llu %14s\n", "agent ready, guest uptime ms", static_cast<unsigned long long>(guest_ready_ms),
              "-");
  std::printf("QEMU TCG, %d vCPUs, %d MiB, firmware %s; both sides alike\n", options->cpus, options->memory_mib,
              options->firmware.empty() ? "default" : options->firmware.c_str());
  nlohmann::json j{{"bench", "guest_boot"},
                   {"rounds", rounds},
                   {"agent_ready_ms", agent},
                   {"floor_marker_ms", floor},
                   {"ready_over_floor", ratio},
                   {"ready_over_floor_samples", paired},
                   {"initramfs_bytes", st.st_size},
                   {"agent_idle_rss_bytes", rss},
                   {"agent_ready_guest_uptime_ms", guest_ready_ms},
                   {"agent_samples_ms", agent_ms},
                   {"floor_samples_ms", floor_ms},
                   {"ready_line_samples_ms", ready_line_ms},
                   {"firmware", options->firmware}};
  std::printf("%s\n", j.dump().c_str());
  (void)base::RemoveTree(dir);
  return 0;
}
