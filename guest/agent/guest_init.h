// Guest early boot done by chrys-agent as PID 1: root switch, base mounts, kernel modules, cgroups.
#pragma once

#include <string>
#include <vector>

#include "base/result.h"

namespace chrys::guest {

// The list of modules the image builder packed, in load order (dependencies first), one path per line
// relative to /lib/modules/<release>/.
inline constexpr const char* kModuleListPath = "/lib/modules/chrys-modules.load";

// Re-roots onto a bind mount of the initramfs so that pivot_root works for containers (it refuses the
// initramfs root itself), then mounts /proc, /sys, /dev, /dev/pts, /dev/shm, /run, /tmp and cgroup2.
base::Status MountBaseFilesystems();

// Loads every module listed in kModuleListPath with finit_module; a module already present is fine.
// Returns the names that failed (logged, not fatal: a missing virtio driver shows later as a missing device).
std::vector<std::string> LoadModules();

// Enables the cpu, memory, pids and io controllers for children of the root cgroup.
base::Status EnableCgroupControllers();

// Parses the modules.dep format: returns `module` and its dependencies, dependencies first, no repeats.
// `deps` maps a module path to its direct dependency paths. Pure; used by the image builder too.
std::vector<std::string> ModuleLoadOrder(const std::vector<std::string>& wanted,
                                         const std::vector<std::pair<std::string, std::vector<std::string>>>& deps);

}  // namespace chrys::guest
