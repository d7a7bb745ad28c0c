// ScratchMkfsArgv: how a container's scratch disk is formatted, the same whether chrysd formats it on the host or
// the guest agent formats a blank one.
#pragma once

#include <string>
#include <vector>

namespace chrys::base {

// ext4 with lazy inode tables and no journal: only metadata blocks are written, so a new sparse file stays
// sparse (the guest then mounts it with noinit_itable). The disk lives and dies with its container, which a VM
// crash ends too, so a journal would only cost writes (and, under emulation, ~17 ms of the guest's mount on the
// container's start).
inline std::vector<std::string> ScratchMkfsArgv(const std::string& mkfs_ext4, const std::string& device) {
  return {mkfs_ext4,       "-q",  "-F", "-m", "0", "-O", "^has_journal", "-E", "lazy_itable_init=1", "-L",
          "chrys-scratch", device};
}

}  // namespace chrys::base
