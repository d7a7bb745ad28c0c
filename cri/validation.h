// Validation of CRI requests: names, metadata, log paths and handlers, with errors that name the field.
#pragma once

#include <string>
#include <vector>

#include "base/result.h"
#include "cri/proto/api.pb.h"

namespace chrys::cri {

// Kubernetes DNS-1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric, ≤ 63.
base::Status ValidateDnsLabel(const std::string& field, const std::string& value);
// DNS-1123 subdomain: labels joined by '.', ≤ 253 (pod names).
base::Status ValidateDnsSubdomain(const std::string& field, const std::string& value);

// metadata.name (subdomain), metadata.namespace (label), metadata.uid (non-empty, printable).
base::Status ValidatePodSandboxConfig(const ::runtime::v1::PodSandboxConfig& config);
// metadata.name (label), image, log path relative to the pod's log directory without escaping it.
base::Status ValidateContainerConfig(const ::runtime::v1::ContainerConfig& config,
                                     const ::runtime::v1::PodSandboxConfig& sandbox_config);

// A non-privileged container's capability set from its security context, as Kubernetes means it: the default
// set (every capability when add_capabilities holds "ALL", none when drop_capabilities does), then the other
// adds, then the other drops, then the ambient ones (which must be granted to be raised); names with or without
// "CAP_", any case; the result in kernel order. An unknown name is an error naming the list and the name.
base::Result<std::vector<std::string>> ResolveCapabilities(const ::runtime::v1::Capability& requested);

// add_ambient_capabilities in canonical form ("CAP_NET_BIND_SERVICE"), in request order without repeats; an unknown
// name, or "ALL", is an error naming the entry.
base::Result<std::vector<std::string>> ResolveAmbientCapabilities(const ::runtime::v1::Capability& requested);

// Joins the pod's log directory and the container's relative log path, refusing absolute paths and any path
// that leaves the directory (.. components). Empty log path → empty result (no log file).
base::Result<std::string> ResolveLogPath(const std::string& log_directory, const std::string& log_path);

// The handler kubelet asked for ("" = the default, chrysalis), or an error listing the handlers we serve.
base::Result<std::string> ResolveHandler(const std::string& requested);

// Container resources as CRI carries them: no negative sizes, shares or periods (memory_swap_limit_in_bytes may be
// -1, unlimited), oom_score_adj within -1000..1000; errors name the field below `field`.
base::Status ValidateLinuxResources(const ::runtime::v1::LinuxContainerResources& resources, const std::string& field);

// The resources after an UpdateContainerResources: the update's set fields (non-zero, non-empty) replace the
// current ones, hugepage limits by page size, unified keys one by one; oom_score_adj stays (it cannot change once
// the process runs).
::runtime::v1::LinuxContainerResources MergeLinuxResources(const ::runtime::v1::LinuxContainerResources& current,
                                                           const ::runtime::v1::LinuxContainerResources& update);

// CPU shares (cgroup v1 units, 2..262144) as a cgroup v2 cpu.weight (1..10000), on the linear map runtimes use;
// 0 stays 0 (unset).
uint64_t CpuSharesToWeight(int64_t shares);

// A fresh 64-hex-character id, as kubelet expects of CRI ids.
std::string NewId();

}  // namespace chrys::cri
