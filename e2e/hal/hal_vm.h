// HalVm: e2e/bench helpers that build the HAL image once, boot it under QEMU (TCG) to power-off and collect
// the serial console with host timestamps, the boot marks, the report line and any fatal message.
#pragma once

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "guest/hal/hal_builder.h"
#include "runtime/confidential/cvm_launch.h"

namespace chrys::e2e::hal {

struct ConsoleLine {
  double host_seconds = 0;  // since QEMU was started
  std::string text;
};

struct VmRun {
  bool timed_out = false;
  int exit_status = -1;  // QEMU's wait status, decoded: exit code or 128+signal
  std::vector<ConsoleLine> lines;
  double host_seconds = 0;

  // "CHRYS-HAL-MARK <name> <uptime>" lines: name -> guest uptime seconds.
  std::map<std::string, double> Marks() const;
  // Host time at which a line containing `needle` was first seen.
  std::optional<double> HostTimeOf(const std::string& needle) const;
  std::optional<nlohmann::json> Report() const;
  std::optional<std::string> Fatal() const;
  bool Saw(const std::string& needle) const;
  std::string Tail(size_t lines = 40) const;
};

// Runs argv (QEMU with -serial stdio) until it exits or `timeout` passes (then it is killed). The console is
// also written to `console_log` when not empty.
base::Result<VmRun> RunVmToExit(const std::vector<std::string>& argv, std::chrono::seconds timeout,
                                const std::string& console_log = "");

// A per-boot directory: a sparse copy of disk.img, this VM's OVMF vars copy, the two 9P share directories
// and the init.conf the root init reads from env_share.
struct VmDir {
  std::string dir;
  std::string disk;
  std::string ovmf_vars;
  std::string env_dir;
  std::string certs_dir;
};
base::Result<VmDir> PrepareVmDir(const std::string& dir, const std::string& disk_image, const std::string& init_conf);

inline constexpr const char* kOvmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd";
inline constexpr const char* kOvmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd";

// TCG launch config of the chrysalis-cvm handler for `vm`: OVMF disk boot, or measured direct boot with
// `roothash` (SeaBIOS: the kernel and command line come from QEMU; no firmware phase to wait for).
runtime::confidential::CvmLaunchConfig TcgLaunchConfig(const VmDir& vm, bool direct_boot,
                                                       const guest::hal::HalArtifacts& image,
                                                       const std::string& roothash);

// The LUKS2 header at the start of the cocos partition of `disk` (read into a scratch header file).
struct CocosLuksHeader {
  std::string uuid;
  size_t keyslots = 0;  // anything that could reopen the volume after this boot
};
base::Result<CocosLuksHeader> ReadCocosLuksHeader(const std::string& disk, const guest::hal::DiskLayout& layout,
                                                  const std::string& scratch_dir);

// True when `needle` occurs anywhere in [offset, offset+length) of `file`.
base::Result<bool> FileRangeContains(const std::string& file, uint64_t offset, uint64_t length,
                                     const std::string& needle);

}  // namespace chrys::e2e::hal
