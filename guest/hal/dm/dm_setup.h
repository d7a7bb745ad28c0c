// DmSetup: the HAL initramfs's device-mapper work (dm-verity root, LUKS2 /cocos under a per-boot key) done
// through libcryptsetup in one process, so the key never reaches a file and the tools start once.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "base/result.h"

namespace chrys::guest::hal {

struct VerityOpen {
  std::string data_device;  // the ext4 root partition
  std::string hash_device;  // its hash tree (with a verity superblock)
  std::string roothash;     // 64 lower-case hex digits, from the kernel command line
  std::string name;         // /dev/mapper/<name>
};

struct LuksProvision {
  std::string device;  // the partition to format: everything on it is lost
  std::string name;    // /dev/mapper/<name>
  std::string label;   // LUKS2 header label
};

struct DmSetupRequest {
  bool verity = false;
  VerityOpen verity_open;
  bool luks = false;
  LuksProvision luks_provision;
};

// Parses `--verity DATA HASH ROOTHASH NAME` and `--luks DEVICE NAME LABEL` (either or both, each once).
// Every value is checked: device paths absolute, names usable as dm names, the root hash 64 hex digits.
base::Result<DmSetupRequest> ParseDmSetupArgs(const std::vector<std::string>& args);

// Opens the verity mapping read-only (the kernel checks every block against the root hash as it is read).
base::Status OpenVerity(const VerityOpen& request);

// dm-verity checks lazily: reads the mapping's first block, which fails (EIO) unless the hash tree matches the
// root hash. On failure the mapping is removed and the error says the root does not match.
base::Status CheckVerityReadable(const std::string& name);

// Formats the device as LUKS2 (aes-xts-plain64, 512-bit key, 4 KiB sectors) under a key drawn from the kernel's
// random source, with no keyslot: the volume key exists only in this process and in dm-crypt, so no
// passphrase or key file can ever reopen the volume, and no slow KDF runs. Then opens it and wipes the key.
// `formatted` runs between the two steps (phase marks).
base::Status ProvisionLuks(const LuksProvision& request, const std::function<void()>& formatted = {});

}  // namespace chrys::guest::hal
