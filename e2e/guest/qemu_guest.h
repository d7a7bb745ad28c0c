// QemuGuest: test fixture that boots the built guest in QEMU (TCG) with the agent channel and disks.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"

namespace chrys::guest::testing {

struct GuestDisk {
  std::string path;
  std::string serial;
  bool read_only = false;
};

struct QemuGuestOptions {
  std::string kernel;
  std::string initrd;
  std::string cmdline;
  std::string work_dir;                 // sockets and the console log go here
  std::optional<GuestDisk> tools_disk;  // the image's read-only tools disk (crun), plugged first
  std::vector<GuestDisk> disks;
  std::string nic_mac;  // empty: no NIC
  int memory_mib = 512;
  int cpus = 2;
  bool agent_channel = true;  // the virtio-serial port
  std::string firmware;       // -bios (e.g. qboot); empty: QEMU's default
};

// Reads manifest.json from the build-tree guest dir (CHRYS_GUEST_DIR) into options.
base::Result<QemuGuestOptions> OptionsFromManifest(const std::string& guest_dir, const std::string& work_dir);

// A tiny rootfs (static busybox and applet links) packed as an EROFS image with mkfs.erofs.
base::Status MakeBusyboxErofs(const std::string& staging_dir, const std::string& image_path);

class QemuGuest {
 public:
  QemuGuest() = default;
  ~QemuGuest();  // kills QEMU by pid if it still runs
  QemuGuest(const QemuGuest&) = delete;
  QemuGuest& operator=(const QemuGuest&) = delete;

  base::Status Start(const QemuGuestOptions& options);
  // Waits for QEMU to exit on its own (guest power-off); true if it did within `timeout`.
  bool WaitExit(std::chrono::milliseconds timeout);
  void Kill();

  pid_t pid() const { return pid_; }
  const std::string& agent_socket() const { return agent_socket_; }
  const std::string& console_log() const { return console_log_; }
  std::string Console() const;
  std::vector<std::string> CommandLine() const { return argv_; }

 private:
  pid_t pid_ = -1;
  std::string agent_socket_;
  std::string console_log_;
  std::vector<std::string> argv_;
};

}  // namespace chrys::guest::testing
