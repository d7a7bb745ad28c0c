// Linux capability names and the container default set, shared by chrysd (which resolves a CRI request's
// add/drop lists) and the guest agent (which writes them into the OCI spec).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace chrys::base {

// Every capability the guest kernel knows, in kernel order ("CAP_CHOWN", ...): a privileged container's set.
const std::vector<std::string>& KnownCapabilities();
bool IsKnownCapability(std::string_view name);

// What a container gets when its request adds and drops nothing (the set containerd and CRI-O grant too).
const std::vector<std::string>& DefaultCapabilities();

}  // namespace chrys::base
