#include "base/capabilities.h"

#include <algorithm>

namespace chrys::base {

const std::vector<std::string>& KnownCapabilities() {
  static const std::vector<std::string> all = {"CAP_CHOWN",
                                               "CAP_DAC_OVERRIDE",
                                               "CAP_DAC_READ_SEARCH",
                                               "CAP_FOWNER",
                                               "CAP_FSETID",
                                               "CAP_KILL",
                                               "CAP_SETGID",
                                               "CAP_SETUID",
                                               "CAP_SETPCAP",
                                               "CAP_LINUX_IMMUTABLE",
                                               "CAP_NET_BIND_SERVICE",
                                               "CAP_NET_BROADCAST",
                                               "CAP_NET_ADMIN",
                                               "CAP_NET_RAW",
                                               "CAP_IPC_LOCK",
                                               "CAP_IPC_OWNER",
                                               "CAP_SYS_MODULE",
                                               "CAP_SYS_RAWIO",
                                               "CAP_SYS_CHROOT",
                                               "CAP_SYS_PTRACE",
                                               "CAP_SYS_PACCT",
                                               "CAP_SYS_ADMIN",
                                               "CAP_SYS_BOOT",
                                               "CAP_SYS_NICE",
                                               "CAP_SYS_RESOURCE",
                                               "CAP_SYS_TIME",
                                               "CAP_SYS_TTY_CONFIG",
                                               "CAP_MKNOD",
                                               "CAP_LEASE",
                                               "CAP_AUDIT_WRITE",
                                               "CAP_AUDIT_CONTROL",
                                               "CAP_SETFCAP",
                                               "CAP_MAC_OVERRIDE",
                                               "CAP_MAC_ADMIN",
                                               "CAP_SYSLOG",
                                               "CAP_WAKE_ALARM",
                                               "CAP_BLOCK_SUSPEND",
                                               "CAP_AUDIT_READ",
                                               "CAP_PERFMON",
                                               "CAP_BPF",
                                               "CAP_CHECKPOINT_RESTORE"};
  return all;
}

bool IsKnownCapability(std::string_view name) {
  const auto& all = KnownCapabilities();
  return std::find(all.begin(), all.end(), name) != all.end();
}

const std::vector<std::string>& DefaultCapabilities() {
  static const std::vector<std::string> defaults = {
      "CAP_CHOWN",   "CAP_DAC_OVERRIDE", "CAP_FSETID",           "CAP_FOWNER",
      "CAP_MKNOD",   "CAP_NET_RAW",      "CAP_SETGID",           "CAP_SETUID",
      "CAP_SETFCAP", "CAP_SETPCAP",      "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
      "CAP_KILL",    "CAP_AUDIT_WRITE"};
  return defaults;
}

}  // namespace chrys::base
