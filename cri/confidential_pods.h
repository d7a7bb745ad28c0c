// Confidential pods, CRI side: handler checks, the per-pod HAL launch plan and the two 9P shares' content.
#pragma once

#include <functional>
#include <string>

#include "base/result.h"
#include "cri/config.h"
#include "cri/proto/api.pb.h"
#include "guest/proto/agent.pb.h"
#include "runtime/agent/agent_client.h"
#include "runtime/confidential/cvm_launch.h"
#include "runtime/confidential/host_probe.h"

namespace chrys::cri {

// chrysalis-cvm (HAL disk boot without a TEE), chrysalis-snp, chrysalis-tdx.
bool IsConfidentialHandler(const std::string& handler);
runtime::confidential::TeeKind TeeOfHandler(const std::string& handler);

// Where chrysd keeps each confidential VM's plan, overlay and OVMF vars: <state_dir>/cvm/<pod id>/.
std::string ConfidentialPlansDir(const Config& config);

using HostProbeFn = std::function<runtime::confidential::ConfidentialHostReport()>;
// Probes this host with the configured QEMU and firmware paths (runs QEMU twice, bounded).
HostProbeFn DefaultHostProbe(const Config& config);

// OK when pods of `handler` can start here; otherwise FAILED_PRECONDITION naming everything the host lacks
// (TEE support in the kernel, QEMU objects, firmware) or the missing HAL image.
base::Status CheckConfidentialHandler(const Config& config, const std::string& handler, const HostProbeFn& probe);

// agent.json (format version 1, guest/hal/ENV_SHARE.md) for the agent in the HAL guest: the same hostname,
// DNS, interfaces, routes and sysctls a SetupSandbox call carries, and the virtio-serial channel. Pure.
std::string RenderAgentJson(const std::string& sandbox_id, const ::chrys::agent::v1::SetupSandboxRequest& setup);

// Fills <pod_dir>/env (agent.json, init.conf with mode=agent) and <pod_dir>/certs, and writes the launch plan
// the runtime's CvmVmm picks up. Undone by ReleaseConfidentialPod.
base::Status PrepareConfidentialPod(const Config& config, const std::string& pod_id, const std::string& handler,
                                    const std::string& pod_dir, const ::chrys::agent::v1::SetupSandboxRequest& setup);

// Pulls `image` inside a confidential pod's guest over the pod network onto its encrypted /cocos (never into the
// host store; `insecure` from images.registries[<host>].insecure): the image id, the unpacked layer directories
// the container's overlay is built from, and the image config.
// `auth` (may be null) is passed to the guest for this pull only, never stored; `if_present` uses the guest's
// copy when it has one (CreateContainer after kubelet's PullImage). The registry's ca_file from the config goes
// along, for private registries.
base::Result<::chrys::agent::v1::PullImageResponse> PullImageInConfidentialPod(const Config& config,
                                                                               runtime::agent::AgentClient& agent,
                                                                               const std::string& image,
                                                                               const ::runtime::v1::AuthConfig* auth,
                                                                               bool if_present);

// Removes the plan directory (overlay and vars copy included). Idempotent. The VM must be stopped.
base::Status ReleaseConfidentialPod(const Config& config, const std::string& pod_id);

}  // namespace chrys::cri
