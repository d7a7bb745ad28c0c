// Doctor: the pre-flight checks behind `chrysctl doctor` (KVM, VMMs, CNI, kernel, firmware, guest, TEE, disk).
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cri/config.h"

namespace chrys::cri::ctl {

enum class CheckLevel { kPass, kWarn, kFail };
const char* CheckLevelName(CheckLevel level);  // "PASS", "WARN", "FAIL"

struct CheckResult {
  std::string group;  // "kvm", "vmm", "cni", "kernel", "firmware", "guest", "tee", "disk", "chrysd", "config"
  std::string name;   // what was checked, e.g. "qemu-system-x86_64"
  CheckLevel level = CheckLevel::kPass;
  std::string detail;  // the finding, and for WARN/FAIL what to do
};

struct DoctorOptions {
  Config config;
  std::string config_note;  // how the config was obtained, for the "config" line
  // Prefix of every host path (devices, /proc, /sys, config paths, binaries found on PATH); "/" on a real host.
  std::string root = "/";
  // PATH used to find binaries (inside root).
  std::string path_env = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  // Runs the VMM binaries (versions, QEMU's object list) and the KVM probe guest; false in pure tests.
  bool run_binaries = true;
  std::chrono::milliseconds socket_timeout{std::chrono::seconds(3)};
  // Below these, free space is a FAIL / WARN.
  uint64_t state_fail_bytes = 1ULL << 30;
  uint64_t state_warn_bytes = 5ULL << 30;
  uint64_t run_fail_bytes = 16ULL << 20;
  uint64_t run_warn_bytes = 64ULL << 20;
};

// Each group on its own, for tests; RunDoctor runs them all in order.
std::vector<CheckResult> CheckKvm(const DoctorOptions& options);
std::vector<CheckResult> CheckVmmBinaries(const DoctorOptions& options);
std::vector<CheckResult> CheckCni(const DoctorOptions& options);
std::vector<CheckResult> CheckKernel(const DoctorOptions& options);
std::vector<CheckResult> CheckFirmware(const DoctorOptions& options);
std::vector<CheckResult> CheckGuestArtifacts(const DoctorOptions& options);
std::vector<CheckResult> CheckTee(const DoctorOptions& options);
std::vector<CheckResult> CheckDisk(const DoctorOptions& options);
std::vector<CheckResult> CheckDaemon(const DoctorOptions& options);
std::vector<CheckResult> RunDoctor(const DoctorOptions& options);

// "PASS  kvm      /dev/kvm: ..." lines, and the JSON form {"checks": [...], "summary": {...}, "ok": bool}.
std::string FormatChecks(const std::vector<CheckResult>& checks);
nlohmann::json ChecksToJson(const std::vector<CheckResult>& checks);
bool AnyFailed(const std::vector<CheckResult>& checks);

// `path` inside `root` ("/" leaves it as it is).
std::string InRoot(const std::string& root, const std::string& path);

}  // namespace chrys::cri::ctl
