// SandboxManager::Sandbox: one sandbox's in-memory record (internal to the sandbox manager's sources).
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "runtime/sandbox.h"
#include "runtime/vmm.h"

namespace chrys::runtime {

struct SandboxManager::Sandbox {
  std::mutex mu;
  std::string id;
  std::string handler;
  SandboxState state = SandboxState::kCreating;
  VmmKind kind = VmmKind::kQemu;
  VmLaunchSpec spec;
  VmmProcessState process;
  std::unique_ptr<Vmm> vmm;
  std::string error;
  std::chrono::milliseconds launch_time{0};
  std::chrono::milliseconds boot_time{0};
  bool from_warm_pool = false;
  std::chrono::milliseconds claim_time{0};
};

}  // namespace chrys::runtime
