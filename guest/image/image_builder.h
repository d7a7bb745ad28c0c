// Builds the microVM guest: kernel from the distro package + initramfs (chrys-agent, crun, busybox, mkfs.ext4,
// their exact shared libraries, the needed kernel modules) + manifest.json, reproducibly.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "base/result.h"

namespace chrys::guest {

// Where chrysd looks for the guest unless configured otherwise.
inline constexpr const char* kDefaultGuestDataDir = "/var/lib/chrysalis/guest";
// The kernel command line the agent expects (also written to the manifest).
inline constexpr const char* kGuestKernelCmdline = "console=ttyS0 quiet panic=-1 cryptomgr.notests";

// Modules the guest needs (file names without .ko); ext4 and crc32c are built into the Debian kernels.
const std::vector<std::string>& GuestModules();

struct ImageOptions {
  std::string output_dir = kDefaultGuestDataDir;
  std::string kernel_release;  // empty: the newest /boot/vmlinuz-*-cloud-amd64, else the newest -amd64
  std::string agent_path;      // the built chrys-agent
  std::string crun_path = "/usr/bin/crun";
  std::string busybox_path = "/bin/busybox";
  std::string mkfs_ext4_path = "/usr/sbin/mkfs.ext4";
  // lz4, zstd, xz or gzip: what the Debian kernel can unpack. lz4 by default: under emulation the kernel
  // unpacked the zstd archive ~200 ms slower (it is on every boot's critical path); lz4 stays well under the
  // 16 MiB size budget.
  std::string compression = "lz4";
  std::string boot_dir = "/boot";
  std::string modules_root = "/lib/modules";
};

struct ImageResult {
  std::string kernel_path;
  std::string initramfs_path;
  std::string manifest_path;
  uint64_t initramfs_bytes = 0;
};

base::Result<ImageResult> BuildGuestImage(const ImageOptions& options);

// The shared objects named in `ldd` output, including the program interpreter, in order of appearance.
// Fails when ldd reports a library "not found". Pure.
base::Result<std::vector<std::string>> ParseLddOutput(const std::string& text);

// modules.dep lines "kernel/a.ko: kernel/b.ko kernel/c.ko" as {module, deps}. Pure.
std::vector<std::pair<std::string, std::vector<std::string>>> ParseModulesDep(const std::string& text);

// Picks the path in modules.dep whose file name is `<name>.ko` (or .ko.xz/.ko.zst). Pure.
base::Result<std::string> FindModulePath(const std::vector<std::pair<std::string, std::vector<std::string>>>& deps,
                                         const std::string& name);

// Lowercase hex SHA-256.
std::string Sha256Hex(const std::string& data);

}  // namespace chrys::guest
