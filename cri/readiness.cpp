#include "cri/readiness.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>

namespace chrys::cri {

std::string FindExecutable(const std::string& name_or_path) {
  if (name_or_path.empty()) {
    return "";
  }
  if (name_or_path.find('/') != std::string::npos) {
    return ::access(name_or_path.c_str(), X_OK) == 0 ? name_or_path : "";
  }
  const char* path_env = std::getenv("PATH");
  std::stringstream dirs(path_env != nullptr ? path_env : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name_or_path;
    if (::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return "";
}

Condition CheckRuntimeReady(const Config& config) {
  if (::access(config.state_dir.c_str(), W_OK) != 0) {
    return {false, "StateDirNotWritable", "state directory " + config.state_dir + " is not writable"};
  }
  if (FindExecutable(config.vmm.qemu_binary).empty() && FindExecutable(config.vmm.cloud_hypervisor_binary).empty()) {
    return {false, "NoVmm",
            "neither " + config.vmm.qemu_binary + " nor " + config.vmm.cloud_hypervisor_binary +
                " is installed; install qemu-system-x86 (deploy/install-deps.sh)"};
  }
  std::string manifest = config.vmm.guest_dir + "/manifest.json";
  if (!std::filesystem::exists(manifest)) {
    return {false, "GuestImageMissing",
            "no guest image: " + manifest + " is missing; build it with the install step (guest/image)"};
  }
  return {true, "", ""};
}

}  // namespace chrys::cri
