// ConfidentialHostProbe: what `chrysctl doctor` reports about SEV-SNP / TDX support of this host and its QEMU.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "runtime/confidential/cvm_launch.h"

namespace chrys::runtime::confidential {

struct QemuVersion {
  int major = 0;
  int minor = 0;
  int micro = 0;
  bool AtLeast(int maj, int min) const { return major > maj || (major == maj && minor >= min); }
  std::string ToString() const;
};

// Where to look. `root` prefixes every host path so tests can point the probe at a fake tree.
struct ProbeOptions {
  std::string root = "/";
  std::string qemu_binary = "qemu-system-x86_64";
  std::string ovmf_code = "/usr/share/OVMF/OVMF_CODE_4M.fd";
  std::string ovmf_vars = "/usr/share/OVMF/OVMF_VARS_4M.fd";
  std::string snp_firmware;  // SNP-capable OVMF (-bios), optional
  std::string tdx_firmware;  // TDVF / OVMF for TDX (-bios), optional
  std::string igvm_file;     // optional
  bool run_qemu = true;      // false: skip running QEMU (tests of the sysfs part)
};

struct FileCheck {
  std::string what;  // "OVMF code", "IGVM", ...
  std::string path;
  bool present = false;
};

struct ConfidentialHostReport {
  bool sev_snp_kvm = false;  // /sys/module/kvm_amd/parameters/sev_snp is Y/1
  bool sev_device = false;   // /dev/sev exists
  bool tdx_kvm = false;      // /sys/module/kvm_intel/parameters/tdx is Y/1
  bool qemu_found = false;
  std::optional<QemuVersion> qemu_version;
  // From `-object help` when QEMU could be run; otherwise inferred from the version (>= 9.1 / >= 10.1).
  bool qemu_sev_snp_guest = false;
  bool qemu_tdx_guest = false;
  bool qemu_objects_listed = false;  // true when the two flags above come from -object help
  std::vector<FileCheck> files;

  bool SevSnpUsable() const;
  bool TdxUsable() const;
  // One actionable sentence per missing piece, e.g. "QEMU 7.2.22 has no sev-snp-guest object (needs >= 9.1)".
  std::vector<std::string> Problems() const;
  // What stops one kind of confidential pod on this host (empty: it can run): the problems above that concern
  // it, plus its firmware. SEV-SNP needs "SEV-SNP firmware" or "IGVM file" present, TDX "TDX firmware"; the
  // plain HAL disk boot (kNone) needs QEMU and the two OVMF files. Used by chrysd per handler and by doctor.
  std::vector<std::string> ProblemsFor(TeeKind tee) const;
  // Human-readable multi-line summary for doctor.
  std::string Describe() const;
};

// Pure parsers, exposed for tests.
bool ParseKvmBoolParam(std::string_view text);  // "Y", "1" (with trailing newline) -> true
std::optional<QemuVersion> ParseQemuVersion(std::string_view version_output);
std::set<std::string> ParseObjectHelp(std::string_view object_help_output);

// Builds the report from an already gathered state (pure): used by ProbeConfidentialHost and by tests.
ConfidentialHostReport AssembleReport(bool sev_snp_kvm, bool sev_device, bool tdx_kvm,
                                      const std::optional<std::string>& version_output,
                                      const std::optional<std::string>& object_help_output,
                                      std::vector<FileCheck> files);

// Reads sysfs, /dev and runs QEMU (-version, -machine none -object help) with short timeouts.
ConfidentialHostReport ProbeConfidentialHost(const ProbeOptions& options);

}  // namespace chrys::runtime::confidential
