// Sandbox-wide guest setup: hostname, DNS and hosts files, NICs found by MAC, routes, neighbours, sysctls.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "base/result.h"
#include "guest/proto/agent.pb.h"

namespace chrys::guest {

namespace v1 = ::chrys::agent::v1;

inline constexpr const char* kSandboxDir = "/run/chrys/sandbox";

// resolv.conf text for the CRI DNS config. Pure.
std::string RenderResolvConf(const v1::DnsConfig& dns);
// /etc/hosts text: localhost lines, the hostname, then the extra lines. Pure.
std::string RenderHosts(const std::string& hostname, const std::vector<std::string>& extra_hosts);
// The busybox `ip` invocations for one validated request, in order. Pure, so it is unit tested.
// `nic_by_mac` maps each requested MAC to the kernel's current interface name.
base::Result<std::vector<std::vector<std::string>>> NetworkCommands(
    const v1::SetupSandboxRequest& request, const std::vector<std::pair<std::string, std::string>>& nic_by_mac);

// Applies a validated request. Files go to kSandboxDir (bind-mounted into containers) and /etc.
base::Status ApplySandboxSetup(const v1::SetupSandboxRequest& request);

// The sandbox files containers get bind-mounted: {destination, source} for those that exist.
std::vector<std::pair<std::string, std::string>> SandboxFilesForContainers();

}  // namespace chrys::guest
