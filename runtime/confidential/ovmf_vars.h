// OvmfVars: gives each confidential VM its own writable copy of the OVMF variable store.
#pragma once

#include <string>

#include "base/result.h"

namespace chrys::runtime::confidential {

// Copies the read-only template (e.g. /usr/share/OVMF/OVMF_VARS_4M.fd) to `dest` (mode 0600, atomically),
// unless `dest` already exists with the template's size (a VM adopted after a chrysd restart keeps its
// variables). Two VMs never share one store: UEFI writes to it at every boot.
base::Status EnsurePerVmOvmfVars(const std::string& template_path, const std::string& dest);

}  // namespace chrys::runtime::confidential
