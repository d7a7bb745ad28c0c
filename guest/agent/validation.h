// Request validation for chrys-agent: pure checks that name the offending field, run before any side effect.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "base/capabilities.h"
#include "base/result.h"
#include "guest/proto/agent.pb.h"

namespace chrys::guest {

namespace v1 = ::chrys::agent::v1;

// Limits on what one request may carry. Messages as a whole are capped by the server (kMaxRequestBytes).
inline constexpr size_t kMaxRequestBytes = 1 << 20;
inline constexpr size_t kMaxIdLength = 64;
inline constexpr size_t kMaxArgs = 1024;
inline constexpr size_t kMaxEnv = 4096;
inline constexpr size_t kMaxArgvBytes = 256 << 10;
inline constexpr size_t kMaxLayers = 64;
inline constexpr size_t kMaxSerialLength = 20;  // virtio-blk serials are at most 20 bytes
inline constexpr size_t kMaxMounts = 128;
inline constexpr size_t kMaxStdinChunk = 64 << 10;
inline constexpr size_t kMaxInterfaces = 16;
inline constexpr size_t kMaxRoutes = 256;

// Ids of containers and execs: 1..64 of [A-Za-z0-9_.-], not starting with '.' or '-'.
base::Status ValidateId(std::string_view id, const std::string& field);
// A virtio-blk serial (layer digest prefix): 1..20 of [A-Za-z0-9_.:-].
base::Status ValidateSerial(std::string_view serial, const std::string& field);
// An absolute, normalised path without "..", "." components, NUL or doubled slashes.
base::Status ValidateAbsolutePath(std::string_view path, const std::string& field);

base::Status ValidateProcessSpec(const v1::ProcessSpec& process, const std::string& field);
base::Status ValidateContainerConfig(const v1::ContainerConfig& config);
base::Status ValidateSetupSandbox(const v1::SetupSandboxRequest& request);
base::Status ValidateMountShare(const v1::MountShareRequest& request);
base::Status ValidateResume(const v1::ResumeRequest& request);
base::Status ValidatePrepareTemplate(const v1::PrepareTemplateRequest& request);
// vcpus 1..255, added_memory_mib at most 4 TiB, timeout_ms at most 60000 (0: the default).
base::Status ValidateOnlineResources(const v1::OnlineResourcesRequest& request);
base::Status ValidateProcessRef(const v1::ProcessRef& ref, const std::string& field);
base::Status ValidateSignal(int signal);
base::Status ValidateWriteStdin(const v1::WriteStdinRequest& request);
// Cgroup limits: no negative sizes, periods and weights in range, cpu lists, hugepage sizes like "2MB", unified
// keys that name a controller file of the cgroup itself.
base::Status ValidateResources(const v1::Resources& resources, const std::string& field);
base::Status ValidateUpdateResources(const v1::UpdateContainerResourcesRequest& request);
// Empty, or a mode with its profile (Localhost only, at most 512 KiB).
base::Status ValidateSeccomp(const v1::Seccomp& seccomp, const std::string& field);
// A user or group name as found in /etc/passwd (or a number): no ':', '/', control characters.
base::Status ValidateUserName(std::string_view name, const std::string& field);

// The capability tables live in base/ so that chrysd resolves a request's add/drop lists against the same names.
using base::IsKnownCapability;
using base::KnownCapabilities;
// Whether an rlimit name is one OCI knows ("RLIMIT_NOFILE").
bool IsKnownRlimit(std::string_view name);

}  // namespace chrys::guest
