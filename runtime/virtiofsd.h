// Virtiofsd: starts Debian's virtiofsd for one volume share (detached, in the VMM's cgroup) and waits for its socket.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "base/result.h"
#include "runtime/process.h"
#include "runtime/vmm.h"

namespace chrys::runtime {

base::Result<DetachedProcess> LaunchVirtiofsd(const std::string& binary, const std::string& socket_path,
                                              const FsShareSpec& share,
                                              const std::vector<std::string>& cgroup_procs_files,
                                              const std::string& log_path, std::chrono::milliseconds timeout);

}  // namespace chrys::runtime
