// Kernel module files as the guest images carry them: the appended module signature and its removal.
#pragma once

#include <string>

#include "base/result.h"

namespace chrys::guest::kmod {

// The trailer the kernel's sign-file appends after a module's signature.
inline constexpr std::string_view kSignatureMagic = "~Module signature appended~\n";

// True when `module` ends with an appended signature.
bool HasModuleSignature(const std::string& module);

// `module` without its appended signature (unsigned modules come back unchanged). The guest images drop the
// signatures because the kernel would otherwise hash every module it loads (SHA-256 over ~5 MiB of ext4,
// dm and SCSI modules costs ~0.3 s of boot under TCG) to check a signature that adds nothing there: the
// modules sit in the same initramfs or verity root as the init that loads them, and that whole image is what
// the launch measurement or dm-verity already covers. `what` names the module in errors.
base::Result<std::string> StripModuleSignature(std::string module, const std::string& what);

}  // namespace chrys::guest::kmod
