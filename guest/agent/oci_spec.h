// OCI runtime spec generation: turns a validated ContainerConfig into the config.json crun runs. Pure.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

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

// The capabilities a container gets when the request names none (the usual container default set).
const std::vector<std::string>& DefaultCapabilities();

// The "process" object. terminal stays false: for tty processes the agent itself owns the pty and hands its
// slave side to crun as stdio, so no console socket is needed.
nlohmann::json BuildOciProcess(const v1::ProcessSpec& process, bool privileged);

// The whole config.json, ociVersion 1.0.2.
nlohmann::json BuildOciSpec(const v1::ContainerConfig& config, const SpecContext& context);

}  // namespace chrys::guest
