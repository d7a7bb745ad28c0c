// OCI runtime spec generation: turns a validated ContainerConfig into the config.json crun runs. Pure.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/capabilities.h"
#include "base/result.h"
#include "guest/proto/agent.pb.h"

namespace chrys::guest {

namespace v1 = ::chrys::agent::v1;

// What the agent adds around the request: where the rootfs is, the cgroup, the sandbox's shared files.
struct SpecContext {
  std::string rootfs_path;   // absolute guest path of the mounted overlay
  std::string cgroups_path;  // "/chrys/<id>"
  // Read-only bind mounts of sandbox-wide files: {destination in container, source in guest}.
  std::vector<std::pair<std::string, std::string>> sandbox_files;
};

// One line of /etc/passwd or /etc/group, as far as user resolution needs it.
struct PasswdEntry {
  std::string name;
  uint32_t uid = 0;
  uint32_t gid = 0;
};
struct GroupEntry {
  std::string name;
  uint32_t gid = 0;
  std::vector<std::string> members;
};
// Parses the files' text; malformed lines are skipped (as libc does). Pure.
std::vector<PasswdEntry> ParsePasswd(const std::string& text);
std::vector<GroupEntry> ParseGroup(const std::string& text);

// Resolves `user.name` ("app" or "1000") and `user.group` ("staff" or "50") against the container's own
// /etc/passwd and /etc/group text (nullopt: the file does not exist): uid, primary gid (the passwd entry's, unless
// a group is given; gid 0 for a number with no entry), and the user's groups from /etc/group followed by the
// requested additional gids, without repeats. A name that is not there is an error naming it and the file. With
// no name, `user` comes back as it is. Pure.
base::Result<v1::User> ResolveUser(const v1::User& user, const std::optional<std::string>& passwd,
                                   const std::optional<std::string>& group);

// The RuntimeDefault seccomp filter (OCI linux.seccomp): every syscall is allowed except a deny list of
// calls that reach kernel-wide state a container has no business with; each refused call fails with EPERM.
// Calls that a capability in `capabilities` legitimately grants (CAP_SYS_ADMIN: mount; CAP_SYS_PTRACE:
// ptrace, ...) stay allowed for a container that was given it. Pure.
nlohmann::json RuntimeDefaultSeccomp(const std::vector<std::string>& capabilities);

// A Localhost profile (JSON text read on the host) as the OCI linux.seccomp object: defaultAction,
// architectures (from a Docker-style archMap when absent), syscalls with names/action/errnoRet/args, flags.
// Docker's conditional entries (includes/excludes) are refused rather than applied unconditionally. Pure.
base::Result<nlohmann::json> LocalhostSeccomp(const std::string& profile_json);

using base::DefaultCapabilities;

// An exec's process: the container's own (environment, working directory, capabilities, no_new_privileges,
// rlimits), as with other runtimes, so that `kubectl exec` sees what the container sees and gains no privilege
// it lacks. The request brings the command and its stdio; its env entries override the container's by name, and
// its cwd, user and rlimits replace the container's when set. Pure.
v1::ProcessSpec ExecProcessSpec(const v1::ProcessSpec& container, const v1::ProcessSpec& request);

// The "process" object. terminal stays false: for tty processes the agent itself owns the pty and hands its
// slave side to crun as stdio, so no console socket is needed.
nlohmann::json BuildOciProcess(const v1::ProcessSpec& process, bool privileged);

// The whole config.json, ociVersion 1.0.2.
nlohmann::json BuildOciSpec(const v1::ContainerConfig& config, const SpecContext& context);

}  // namespace chrys::guest
