// SharedDir is a pod's host directory exported to its VM over virtio-fs; container volumes are bind-mounted into it.
#pragma once

#include <string>

#include "base/result.h"

namespace chrys::cri {

// virtio-fs tag of the per-pod shared directory.
inline constexpr const char* kPodShareTag = "chrys-pod";

// The directory is a shared mount of itself, so bind mounts added under it after virtiofsd started (which sees
// the host's mounts as a slave) appear in the guest.
base::Status PrepareSharedDir(const std::string& dir);
// Unmounts everything below and the directory itself, then removes it. Missing directory is not an error.
base::Status ReleaseSharedDir(const std::string& dir);

// Bind-mounts host `source` (file or directory, which must exist) at `target` below a shared dir, read-only when
// asked. The target is created to match the source's type.
base::Status BindIntoSharedDir(const std::string& source, const std::string& target, bool read_only);
// Unmounts and removes one target made by BindIntoSharedDir.
base::Status UnbindFromSharedDir(const std::string& target);

}  // namespace chrys::cri
