// HalImageBuilder: builds the disk-backed HAL image (GPT: ESP with GRUB, dm-verity root, hash tree, cocos)
// with Debian tools only, without loop devices or mounts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "guest/hal/hal_layout.h"

namespace chrys::guest::hal {

inline constexpr int64_t kDefaultSourceDateEpoch = 1700000000;
inline constexpr const char* kDefaultVeritySalt = "6368727973616c69732d68616c2d7665726974792d73616c742d76312d303031";
inline constexpr const char* kDefaultRootFsUuid = "6368a7a0-1a2b-4c3d-8e9f-0000000000a1";
inline constexpr const char* kDefaultVerityUuid = "6368a7a0-1a2b-4c3d-8e9f-0000000000a2";
inline constexpr const char* kDefaultEspVolumeId = "63680001";

// Modules the initramfs loads (with their dependencies): what it needs to verify the root and provision /cocos
// (disk, dm-verity, dm-crypt + XTS, ext4), the 9P shares, overlayfs for /etc, configfs.
std::vector<std::string> DefaultInitramfsModules();
// Modules the root's /sbin/init loads before the agent (with dependencies not loaded already): virtio-net,
// virtio-serial, vsock, the SEV guest driver. Keeping them out of the initramfs keeps its phase short.
std::vector<std::string> DefaultRootModules();
// chrys-hal-dm as this build made it (the initramfs's dm-verity and LUKS2 step).
std::string DefaultDmHelper();

struct HalImageConfig {
  std::string output_dir;
  std::string work_dir;  // scratch; empty: <output_dir>/.work (removed after the build)
  std::string kernel;    // empty: the newest /boot/vmlinuz-*-amd64 that is not a -cloud- kernel
  std::string modules_root = "/lib/modules";
  std::string busybox = "/bin/busybox";
  std::string agent_binary;                   // empty: an image without chrys-agent (boot checks only)
  std::string crun_binary = "/usr/bin/crun";  // empty: none
  std::string dm_helper = DefaultDmHelper();
  std::vector<std::string> modules = DefaultInitramfsModules();
  std::vector<std::string> root_modules = DefaultRootModules();
  // Drop the modules' appended signatures (see kmod::StripModuleSignature: ~0.3 s of TCG boot). Keep them
  // (false) for a guest that boots with Secure Boot and kernel lockdown, which refuses unsigned modules.
  bool strip_module_signatures = true;

  uint64_t esp_mib = 64;
  uint64_t root_mib = 0;  // 0: sized from the content
  uint64_t cocos_mib = 1024;

  // Reproducibility inputs. source_date_epoch < 0 takes $SOURCE_DATE_EPOCH, else kDefaultSourceDateEpoch.
  int64_t source_date_epoch = -1;
  std::string verity_salt = kDefaultVeritySalt;
  std::string root_fs_uuid = kDefaultRootFsUuid;
  std::string verity_uuid = kDefaultVerityUuid;
  std::string esp_volume_id = kDefaultEspVolumeId;
  DiskIds disk_ids;
  std::string extra_cmdline;
};

struct BuildStep {
  std::string name;
  double seconds = 0;
};

struct HalArtifacts {
  std::string disk_image;     // disk.img
  std::string rootfs_ext4;    // rootfs.ext4
  std::string rootfs_verity;  // rootfs.verity
  std::string roothash_file;  // rootfs.roothash
  std::string initramfs;      // rootfs.cpio.gz
  std::string kernel;         // vmlinuz (copy, for measured direct boot)
  std::string build_info;     // build-info.json
  std::string roothash;
  std::string kernel_release;
  std::string kernel_cmdline;  // as in grub.cfg
  bool has_agent = false;
  DiskLayout layout;
  std::vector<BuildStep> steps;
  double total_seconds = 0;
};

// Runs the whole build. Outputs land in config.output_dir (created); the scratch directory is removed
// whether the build succeeds or not. Needs root only so that files in the images are owned by root.
base::Result<HalArtifacts> BuildHalImage(const HalImageConfig& config);

// The newest generic (non-cloud) Debian kernel under /boot, for the default configuration.
base::Result<std::string> FindDefaultKernel(const std::string& boot_dir = "/boot");

}  // namespace chrys::guest::hal
