// hal_bench: HAL image build time and boot phases under QEMU/TCG, disk boot (OVMF -> GRUB) beside measured
// direct boot of the same image, timed from the console marks the initramfs prints with /proc/uptime.
// Usage: hal_bench [ROUNDS] (boots of each kind, default 3; phases are medians). Prints a table and one JSON
// line. Needs root.
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "base/file_util.h"
#include "e2e/hal/hal_vm.h"

namespace {

using chrys::e2e::hal::VmRun;

// Phase name -> seconds, from one boot's console.
std::map<std::string, double> Phases(const VmRun& run) {
  std::map<std::string, double> p;
  auto m = run.Marks();
  auto diff = [&](const char* name, const char* from, const char* to) {
    if (m.count(from) && m.count(to)) {
      p[name] = m[to] - m[from];
    }
  };
  auto grub = run.HostTimeOf("CHRYS-HAL-MARK grub");
  auto init_line = run.HostTimeOf("CHRYS-HAL-MARK init ");
  if (init_line && m.count("init")) {
    double kernel_start_host = *init_line - m["init"];  // guest uptime counts from kernel start
    p["firmware+bootloader"] = kernel_start_host;
    if (grub) {
      p["firmware"] = *grub;
      p["grub_load"] = kernel_start_host - *grub;
    }
    p["kernel"] = m["init"];
  }
  diff("modules", "init", "modules");
  diff("disk_wait", "modules", "disk");
  diff("verity_open", "disk", "verity-open");
  diff("luks_format", "verity-open", "luks-format");
  diff("luks_open", "luks-format", "luks-open");
  diff("root_mount", "luks-open", "root-mounted");
  diff("mkfs", "root-mounted", "mkfs");
  diff("cocos_mount", "mkfs", "cocos-mounted");
  diff("shares", "cocos-mounted", "shares");
  diff("switch_root", "switch-root", "root-init");
  diff("root_modules", "root-init", "root-modules");
  diff("initramfs_total", "init", "switch-root");
  diff("initramfs_after_modules", "modules", "switch-root");
  if (auto report = run.HostTimeOf("CHRYS-HAL-REPORT")) {
    p["boot_to_report_host"] = *report;
  }
  p["qemu_total_host"] = run.host_seconds;
  return p;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  using namespace chrys;
  // Boots per kind (disk, direct), interleaved; phases are reported as medians (a shared machine is noisy).
  int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 3;
  if (::geteuid() != 0) {
    std::fprintf(stderr, "hal_bench needs root\n");
    return 2;
  }
  char tmpl[] = "/var/tmp/chrys-hal-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  std::string root = tmpl;
  guest::hal::HalImageConfig config;
  config.output_dir = root + "/image";
  config.cocos_mib = 1024;
  // CHRYS_HAL_BENCH_CMDLINE adds kernel command line words to both boots (experiments).
  if (const char* extra = std::getenv("CHRYS_HAL_BENCH_CMDLINE")) {
    config.extra_cmdline = extra;
  }
  auto image = guest::hal::BuildHalImage(config);
  if (!image.ok()) {
    std::fprintf(stderr, "build failed: %s\n", image.error().message().c_str());
    (void)base::RemoveTree(root);
    return 1;
  }
  std::map<std::string, std::map<std::string, std::vector<double>>> samples;  // boot kind -> phase -> seconds
  for (int round = 0; round < rounds; ++round) {
    for (bool direct : {false, true}) {
      std::string name = direct ? "direct" : "disk";
      (void)base::RemoveTree(root + "/vm-" + name);  // a fresh disk copy: every boot formats cocos anew
      auto vm = e2e::hal::PrepareVmDir(root + "/vm-" + name, image->disk_image, "mode=selftest\n");
      if (!vm.ok()) {
        std::fprintf(stderr, "%s\n", vm.error().message().c_str());
        (void)base::RemoveTree(root);
        return 1;
      }
      auto launch = e2e::hal::TcgLaunchConfig(*vm, direct, *image, image->roothash);
      launch.extra_cmdline = config.extra_cmdline;
      auto qemu_argv = runtime::confidential::BuildCvmQemuArgs(launch);
      // CHRYS_HAL_BENCH_CONSOLE_DIR keeps each boot's console (with every mark) for a closer look.
      const char* console_dir = std::getenv("CHRYS_HAL_BENCH_CONSOLE_DIR");
      std::string console_log = console_dir != nullptr ? std::string(console_dir) + "/console-" + name + ".log" : "";
      auto run = qemu_argv.ok() ? e2e::hal::RunVmToExit(*qemu_argv, std::chrono::seconds(300), console_log)
                                : base::Result<e2e::hal::VmRun>(qemu_argv.error());
      if (!run.ok() || run->timed_out || !run->Report()) {
        std::fprintf(stderr, "%s boot failed: %s\n", name.c_str(),
                     run.ok() ? run->Tail().c_str() : run.error().message().c_str());
        (void)base::RemoveTree(root);
        return 1;
      }
      for (const auto& [phase, seconds] : Phases(*run)) {
        samples[name][phase].push_back(seconds);
      }
    }
  }
  std::map<std::string, std::map<std::string, double>> boots;  // medians
  for (const auto& [name, phases] : samples) {
    for (const auto& [phase, values] : phases) {
      boots[name][phase] = Median(values);
    }
  }

  std::printf("HAL image build (cocos %llu MiB, agent %s)\n", static_cast<unsigned long long>(config.cocos_mib),
              image->has_agent ? "yes" : "no");
  std::printf("  %-24s %8.2f s  (target <= 60 s)\n", "total", image->total_seconds);
  for (const auto& step : image->steps) {
    std::printf("  %-24s %8.2f s\n", step.name.c_str(), step.seconds);
  }
  std::printf("\nBoot phases under TCG, 1 vCPU, 1 GiB (seconds, median of %d boots each)\n", rounds);
  std::printf("  %-26s %12s %14s\n", "phase", "disk boot", "direct boot");
  const char* order[] = {"firmware",
                         "grub_load",
                         "firmware+bootloader",
                         "kernel",
                         "modules",
                         "disk_wait",
                         "verity_open",
                         "luks_format",
                         "luks_open",
                         "root_mount",
                         "mkfs",
                         "cocos_mount",
                         "shares",
                         "switch_root",
                         "root_modules",
                         "initramfs_total",
                         "initramfs_after_modules",
                         "boot_to_report_host",
                         "qemu_total_host"};
  for (const char* phase : order) {
    auto cell = [&](const std::string& boot) {
      auto it = boots[boot].find(phase);
      return it == boots[boot].end() ? std::string("-") : std::to_string(it->second).substr(0, 6);
    };
    std::printf("  %-26s %12s %14s\n", phase, cell("disk").c_str(), cell("direct").c_str());
  }
  std::printf("  (initramfs target <= 2 s for a 1 GiB cocos partition; 'agent ready' = the root init report)\n");

  nlohmann::json json;
  json["bench"] = "hal";
  json["build_seconds"] = image->total_seconds;
  for (const auto& step : image->steps) {
    json["build_steps"][step.name] = step.seconds;
  }
  json["cocos_mib"] = config.cocos_mib;
  json["has_agent"] = image->has_agent;
  json["boot"] = boots;
  json["boot_samples"] = samples;
  json["rounds"] = rounds;
  std::printf("%s\n", json.dump().c_str());
  (void)base::RemoveTree(root);
  return 0;
}
