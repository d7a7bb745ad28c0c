// HAL image layout and generated text: GPT partitions, kernel command line, grub.cfg, fstab, module order.
// Everything here is pure so it can be unit-tested without the Debian tools.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"

namespace chrys::guest::hal {

inline constexpr uint64_t kSectorBytes = 512;
inline constexpr uint64_t kMiB = 1024 * 1024;

// GPT partition names the initramfs looks for (it falls back to /dev/sda2..4, the seed's fixed names).
inline constexpr const char* kEspLabel = "chrys-esp";
inline constexpr const char* kRootLabel = "chrys-root";
inline constexpr const char* kVerityLabel = "chrys-verity";
inline constexpr const char* kCocosLabel = "chrys-cocos";

// Discoverable-partitions type GUIDs (ESP, x86-64 root, x86-64 root verity, generic Linux data).
inline constexpr const char* kEspType = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
inline constexpr const char* kRootType = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
inline constexpr const char* kVerityType = "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5";
inline constexpr const char* kLinuxDataType = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

// Fixed identities: with the same inputs, the same image (and root hash) comes out.
struct DiskIds {
  std::string disk_guid = "6368A7A0-1A2B-4C3D-8E9F-000000000001";
  std::string esp_guid = "6368A7A0-1A2B-4C3D-8E9F-000000000011";
  std::string root_guid = "6368A7A0-1A2B-4C3D-8E9F-000000000012";
  std::string verity_guid = "6368A7A0-1A2B-4C3D-8E9F-000000000013";
  std::string cocos_guid = "6368A7A0-1A2B-4C3D-8E9F-000000000014";
};

struct PartitionSpec {
  int number = 0;
  std::string label;
  std::string type_guid;
  std::string unique_guid;
  uint64_t first_lba = 0;
  uint64_t last_lba = 0;  // inclusive

  uint64_t offset_bytes() const { return first_lba * kSectorBytes; }
  uint64_t size_bytes() const { return (last_lba - first_lba + 1) * kSectorBytes; }
};

struct DiskLayout {
  std::vector<PartitionSpec> partitions;  // 1 ESP, 2 root, 3 verity, 4 cocos
  uint64_t total_bytes = 0;
};

// Places the four partitions 1 MiB-aligned from 1 MiB on, each rounded up to whole MiB, and leaves 1 MiB
// at the end for the backup GPT. Sizes must be non-zero; the cocos partition needs room for LUKS2's header.
base::Result<DiskLayout> ComputeDiskLayout(uint64_t esp_bytes, uint64_t root_bytes, uint64_t verity_bytes,
                                           uint64_t cocos_bytes, const DiskIds& ids = DiskIds());

// sgdisk arguments (without the program name) that write `layout` to `image`.
std::vector<std::string> SgdiskArgs(const std::string& image, const DiskLayout& layout, const DiskIds& ids);

// The kernel command line: serial console and the dm-verity root hash (must equal
// runtime::confidential::HalKernelCommandLine so disk and measured direct boot hand /init the same words).
std::string HalKernelCommandLine(const std::string& roothash, const std::string& extra);

// grub.cfg on the ESP: boots the kernel at once with `cmdline`; prints a mark for boot-phase timing.
std::string RenderGrubConfig(const std::string& cmdline, const std::string& kernel_path,
                             const std::string& initrd_path);

// /etc/fstab baked into the read-only root: it documents what the initramfs mounts, so nothing has to
// rewrite the root at boot.
std::string RenderRootFstab();

// From a modules.dep text, the paths (relative to /lib/modules/<release>) of the `wanted` modules and all
// their dependencies, dependencies first, each once. Names compare with '-' and '_' as equal. A wanted
// module missing from modules.dep is an error naming it (a built-in one is listed in `builtin` and skipped).
base::Result<std::vector<std::string>> ModuleLoadOrder(const std::string& modules_dep,
                                                       const std::vector<std::string>& wanted,
                                                       const std::string& modules_builtin = "");

// The lines of `modules_dep` that describe the modules in `included` (paths as ModuleLoadOrder returns them),
// in the order of `included`: the initramfs's own modules.dep, so that one `modprobe -a` loads everything.
// Every dependency named on a kept line must itself be included, else the error names it.
base::Result<std::string> FilterModulesDep(const std::string& modules_dep, const std::vector<std::string>& included);

// The absolute library paths in `ldd` output (including the dynamic loader), in order, without vdso.
std::vector<std::string> ParseLddOutput(const std::string& ldd_output);

// The "Root hash:" value printed by `veritysetup format`.
base::Result<std::string> ParseVerityRootHash(const std::string& veritysetup_output);

// Size for the root ext4 image given its content: data rounded to 4 KiB blocks, inode tables and slack.
uint64_t EstimateRootImageBytes(uint64_t content_bytes, uint64_t entries);

}  // namespace chrys::guest::hal
