// Readiness checks behind the RuntimeReady and NetworkReady conditions of the CRI Status RPC.
#pragma once

#include <string>

#include "cri/config.h"

namespace chrys::cri {

struct Condition {
  bool ready = false;
  std::string reason;   // CamelCase, set when not ready
  std::string message;  // what is wrong and what to do, set when not ready
};

// The runtime can run pods when its state directory is writable, a VMM binary is installed and the guest
// artifacts (kernel + initramfs, listed in <vmm.guest_dir>/manifest.json) are present.
Condition CheckRuntimeReady(const Config& config);

// Finds an executable by name on PATH, or checks an absolute path. Empty when not found.
std::string FindExecutable(const std::string& name_or_path);

}  // namespace chrys::cri
