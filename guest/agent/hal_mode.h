// HalMode: chrys-agent as /sbin/init's successor in the disk-backed HAL image (confidential pods).
#pragma once

#include <cstdint>
#include <string>

#include "base/result.h"
#include "guest/proto/agent.pb.h"

namespace chrys::guest {

namespace v1 = ::chrys::agent::v1;

// Written by chrysd into the env_share, mounted read-only-by-convention at /etc/cocos (guest/hal/ENV_SHARE.md).
inline constexpr const char* kHalAgentConfigPath = "/etc/cocos/agent.json";

struct HalAgentConfig {
  std::string sandbox_id;
  std::string channel_kind = "serial";  // "serial" (virtio-serial port chrys.agent) or "vsock"
  uint32_t vsock_port = 1024;
  v1::SetupSandboxRequest setup;  // hostname, DNS, NICs (by MAC) with addresses and routes, sysctls
  std::string container_storage = "/var/lib/chrys";
};

// `--hal` on the command line (the HAL root's /sbin/init passes it when init.conf says mode=agent).
bool HalModeRequested(int argc, char** argv);

// Parses agent.json (format version 1). The host is untrusted: sizes are bounded, every field is type-checked
// and the resulting setup goes through the same validation as a SetupSandbox call. Pure.
base::Result<HalAgentConfig> ParseHalAgentConfig(const std::string& json_text);

// In the booted HAL root: reads agent.json, applies its sandbox setup and enables the cgroup controllers the
// containers need. The initramfs already mounted everything and loaded the drivers.
base::Result<HalAgentConfig> StartHalMode(const std::string& config_path = kHalAgentConfigPath);

}  // namespace chrys::guest
