#include "runtime/vmm.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <regex>

#include "base/subprocess.h"

namespace chrys::runtime {

using base::Status;

const char* VmmKindName(VmmKind kind) {
  switch (kind) {
    case VmmKind::kQemu:
      return "qemu";
    case VmmKind::kCloudHypervisor:
      return "cloud-hypervisor";
  }
  return "unknown";
}

const char* AgentChannelKindName(AgentChannelKind kind) {
  switch (kind) {
    case AgentChannelKind::kVirtioSerial:
      return "virtio-serial";
    case AgentChannelKind::kVhostVsock:
      return "vhost-vsock";
    case AgentChannelKind::kHybridVsock:
      return "hybrid-vsock";
  }
  return "unknown";
}

namespace {

bool IsRegularFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

Status ValidateLaunchSpec(const VmLaunchSpec& spec) {
  static const std::regex kId("^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$");
  static const std::regex kMac("^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$");
  if (!std::regex_match(spec.sandbox_id, kId)) {
    return base::InvalidArgument("sandbox_id \"" + spec.sandbox_id + "\" must be 1-64 of [A-Za-z0-9_.-]");
  }
  if (spec.vcpus < 1 || spec.vcpus > 255) {
    return base::InvalidArgument("vcpus " + std::to_string(spec.vcpus) + " is outside 1..255");
  }
  if (spec.memory_mib < 64 || spec.memory_mib > (1 << 22)) {
    return base::InvalidArgument("memory_mib " + std::to_string(spec.memory_mib) + " is outside 64..4194304");
  }
  if (spec.max_vcpus != 0 && (spec.max_vcpus < spec.vcpus || spec.max_vcpus > 255)) {
    return base::InvalidArgument("max_vcpus " + std::to_string(spec.max_vcpus) + " is outside vcpus (" +
                                 std::to_string(spec.vcpus) + ")..255");
  }
  if (spec.max_memory_mib != 0 && (spec.max_memory_mib < spec.memory_mib || spec.max_memory_mib > (1 << 22))) {
    return base::InvalidArgument("max_memory_mib " + std::to_string(spec.max_memory_mib) + " is outside memory_mib (" +
                                 std::to_string(spec.memory_mib) + ")..4194304");
  }
  if (!spec.restore_state_path.empty() && spec.memory_fd < 0) {
    return base::InvalidArgument("restore_state_path needs memory_fd: the template's memory to copy");
  }
  if (!spec.restore_state_path.empty() && !IsRegularFile(spec.restore_state_path)) {
    return base::InvalidArgument("restore_state_path \"" + spec.restore_state_path + "\" is not a readable file");
  }
  if (spec.memory_fd >= 0 && (spec.hugepages || !spec.disk_path.empty())) {
    return base::InvalidArgument("memory_fd is for direct-boot VMs without huge pages");
  }
  if (spec.disk_path.empty()) {
    if (spec.kernel_path.empty() || !IsRegularFile(spec.kernel_path)) {
      return base::InvalidArgument("kernel_path \"" + spec.kernel_path + "\" is not a readable file");
    }
    if (!spec.initramfs_path.empty() && !IsRegularFile(spec.initramfs_path)) {
      return base::InvalidArgument("initramfs_path \"" + spec.initramfs_path + "\" is not a readable file");
    }
  } else if (!IsRegularFile(spec.disk_path)) {
    return base::InvalidArgument("disk_path \"" + spec.disk_path + "\" is not a readable file");
  }
  for (size_t i = 0; i < spec.disks.size(); ++i) {
    Status disk = ValidateDiskSpec(spec.disks[i]);
    if (!disk.ok()) {
      return disk.error().Wrap("disks[" + std::to_string(i) + "]");
    }
    for (size_t j = 0; j < i; ++j) {
      if (spec.disks[j].serial == spec.disks[i].serial) {
        return base::InvalidArgument("disks[" + std::to_string(i) + "]: serial \"" + spec.disks[i].serial +
                                     "\" is used twice");
      }
    }
  }
  if (spec.run_dir.empty() || spec.run_dir[0] != '/') {
    return base::InvalidArgument("run_dir must be an absolute path");
  }
  // The longest socket the drivers create there ("/fsNN.sock") must fit in sockaddr_un.sun_path (108 bytes).
  if (spec.run_dir.size() + 12 >= 108) {
    return base::InvalidArgument("run_dir \"" + spec.run_dir + "\" is too long for unix socket paths (max 95 bytes)");
  }
  if (spec.console_log_path.empty() || spec.console_log_path[0] != '/') {
    return base::InvalidArgument("console_log_path must be an absolute path");
  }
  for (size_t i = 0; i < spec.interfaces.size(); ++i) {
    const auto& nic = spec.interfaces[i];
    std::string field = "interfaces[" + std::to_string(i) + "]";
    if (nic.tap_queue_fds.empty()) {
      return base::InvalidArgument(field + ".tap_queue_fds is empty");
    }
    for (int fd : nic.tap_queue_fds) {
      if (fd < 0 || ::fcntl(fd, F_GETFD) < 0) {
        return base::InvalidArgument(field + ".tap_queue_fds: fd " + std::to_string(fd) + " is not open");
      }
    }
    if (!std::regex_match(nic.guest_mac, kMac)) {
      return base::InvalidArgument(field + ".guest_mac \"" + nic.guest_mac + "\" is not a MAC address");
    }
    if (nic.mtu < 68 || nic.mtu > 65535) {
      return base::InvalidArgument(field + ".mtu " + std::to_string(nic.mtu) + " is outside 68..65535");
    }
  }
  static const std::regex kTag("^[A-Za-z0-9_.-]{1,36}$");
  for (size_t i = 0; i < spec.fs_shares.size(); ++i) {
    const auto& share = spec.fs_shares[i];
    std::string field = "fs_shares[" + std::to_string(i) + "]";
    if (!std::regex_match(share.tag, kTag)) {
      return base::InvalidArgument(field + ".tag \"" + share.tag + "\" must be 1-36 of [A-Za-z0-9_.-]");
    }
    struct stat st {};
    if (share.host_dir.empty() || share.host_dir[0] != '/' || ::stat(share.host_dir.c_str(), &st) != 0 ||
        !S_ISDIR(st.st_mode)) {
      return base::InvalidArgument(field + ".host_dir \"" + share.host_dir + "\" is not a directory");
    }
  }
  return Status::Ok();
}

Status ValidateDiskSpec(const DiskSpec& disk) {
  static const std::regex kSerial("^[A-Za-z0-9_-]{1,20}$");
  if (!std::regex_match(disk.serial, kSerial)) {
    return base::InvalidArgument("disk serial \"" + disk.serial + "\" must be 1-20 of [A-Za-z0-9_-]");
  }
  if (disk.path.empty() || disk.path[0] != '/' || !IsRegularFile(disk.path)) {
    return base::InvalidArgument("disk path \"" + disk.path + "\" is not an existing regular file");
  }
  return Status::Ok();
}

std::string ConsoleTail(const std::string& console_log_path, size_t max_bytes) {
  int fd = ::open(console_log_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return "(no console log at " + console_log_path + ")";
  }
  off_t size = ::lseek(fd, 0, SEEK_END);
  off_t start = size > static_cast<off_t>(max_bytes) ? size - static_cast<off_t>(max_bytes) : 0;
  std::string data(static_cast<size_t>(size - start), '\0');
  ssize_t n = ::pread(fd, data.data(), data.size(), start);
  ::close(fd);
  data.resize(n > 0 ? static_cast<size_t>(n) : 0);
  // Consoles carry escape sequences and stray control bytes; keep the text readable in an error.
  std::string clean;
  for (char c : data) {
    if (c == '\n' || c == '\t' || (c >= 0x20 && c < 0x7f)) {
      clean += c;
    }
  }
  clean = base::Tail(clean, max_bytes);
  return clean.empty() ? "(console log empty)" : clean;
}

}  // namespace chrys::runtime
