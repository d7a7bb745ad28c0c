// GuestManifest: reads the guest image's manifest.json (written by chrys-guest-image) into the files a
// microVM boots with: kernel, initramfs, command line and the tools disk.
#pragma once

#include <optional>
#include <string>

#include "base/result.h"
#include "runtime/vmm.h"

namespace chrys::runtime {

struct GuestImageFiles {
  std::string kernel;     // absolute: <guest_dir>/<file>
  std::string initramfs;  // absolute
  std::string cmdline;
  std::optional<DiskSpec> tools_disk;  // read-only; absent in images older than the tools disk
};

// Reads <guest_dir>/manifest.json. Fails with a message naming the file when it is missing, not JSON, or names
// no kernel and initramfs; paths are the manifest's file names under `guest_dir` (the directory may have been
// copied since the build).
base::Result<GuestImageFiles> ReadGuestManifest(const std::string& guest_dir);

}  // namespace chrys::runtime
