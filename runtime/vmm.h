// Vmm: the one interface through which a sandbox starts, watches, hot-plugs, stops and re-adopts its VM.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"

namespace chrys::runtime {

enum class VmmKind { kQemu, kCloudHypervisor };
const char* VmmKindName(VmmKind kind);

// How the host reaches the guest agent.
enum class AgentChannelKind {
  kVirtioSerial,  // QEMU virtio-serial port backed by a unix socket (server side in the VMM)
  kVhostVsock,    // AF_VSOCK through /dev/vhost-vsock (QEMU)
  kHybridVsock,   // Cloud Hypervisor hybrid vsock: unix socket + "CONNECT <port>\n"
};
const char* AgentChannelKindName(AgentChannelKind kind);

enum class CgroupDriver { kCgroupfs, kSystemd };

// Hot-plugged memory comes in blocks of this size: the guest kernel adds memory in whole 128 MiB sections (x86-64).
inline constexpr int kHotplugMemoryBlockMib = 128;

// One guest NIC backed by the queue fds of a multi-queue tap. The caller owns the fds; the driver only hands
// copies to the VMM process.
struct NetInterfaceSpec {
  std::vector<int> tap_queue_fds;
  std::string guest_mac;  // "02:xx:..."; required
  int mtu = 1500;
};

// A host directory shared into the guest over virtio-fs (one virtiofsd per share).
struct FsShareSpec {
  std::string tag;
  std::string host_dir;
  bool read_only = false;
};

struct DiskSpec {
  std::string serial;  // guest-visible identifier, [A-Za-z0-9_-]{1,20}
  std::string path;
  bool read_only = true;
};

// Everything needed to launch one VM. Direct kernel boot (kernel + initramfs + cmdline) or disk + firmware.
struct VmLaunchSpec {
  std::string sandbox_id;
  std::string kernel_path;
  std::string initramfs_path;
  std::string kernel_cmdline;
  std::string disk_path;      // disk boot (HAL image); empty for direct kernel boot
  std::string firmware_path;  // OVMF for disk boot
  int vcpus = 1;
  int memory_mib = 512;
  // Room to grow while running (Vmm::Grow): vCPUs and MiB the VM may reach by hot-plug; 0 means none. Warm VMs
  // boot with it so that a pod sized above the pool's shape can still take one.
  int max_vcpus = 0;
  int max_memory_mib = 0;
  bool hugepages = false;
  std::vector<NetInterfaceSpec> interfaces;
  std::vector<FsShareSpec> fs_shares;
  // virtio-blk disks present from the first instruction (the guest image's tools disk); hot-plugged ones
  // come later through Vmm::HotplugDisk.
  std::vector<DiskSpec> disks;
  AgentChannelKind agent_channel = AgentChannelKind::kVirtioSerial;
  uint32_t vsock_cid = 0;  // for vsock channels; 0 lets the driver derive one
  // Directory for this VM's sockets, pid and VMM log (created by the caller, removed on stop).
  std::string run_dir;
  std::string console_log_path;
  std::string netns_path;  // empty: the caller's network namespace
  std::string cgroup_parent;
  CgroupDriver cgroup_driver = CgroupDriver::kCgroupfs;
  // Guest RAM in this shared-memory file (a memfd the caller keeps), which outlives the VM: a template boot, whose
  // RAM clones copy after Vmm::SaveState. -1: the driver's own memory.
  int memory_fd = -1;
  // Start from a template instead of booting: a private copy of `memory_fd`'s pages becomes the guest's RAM and
  // the device state comes from this file (written by SaveState). The template had no fs_shares; they are added
  // after the restore, before the guest runs.
  std::string restore_state_path;
};

// Where the agent is reached, filled in by the driver after Start/Adopt.
struct AgentEndpoint {
  AgentChannelKind kind = AgentChannelKind::kVirtioSerial;
  std::string socket_path;  // unix socket (virtio-serial, hybrid vsock)
  uint32_t vsock_cid = 0;
  uint32_t vsock_port = 1024;
};

// A hot-plugged disk: its serial, the VMM's id for the device, and the hot-plug slot it occupies.
struct PluggedDisk {
  std::string serial;
  std::string device_id;
  int slot = -1;
  bool read_only = true;
  std::string path;
};

// A NIC hot-plugged into a running VM (a warm VM boots without one and gets its pod's NICs when claimed).
struct PluggedNic {
  std::string device_id;
  std::string netdev_id;
  int slot = -1;
  std::string mac;
};

// A virtio-fs device hot-plugged into a VM restored from a template (whose snapshot could not include one).
struct PluggedShare {
  std::string tag;
  std::string device_id;
  int slot = -1;
};

// What a restarted chrysd needs to find and re-check a running VM. Persisted by the sandbox layer.
struct VmmProcessState {
  VmmKind kind = VmmKind::kQemu;
  pid_t pid = 0;
  uint64_t start_time_ticks = 0;   // /proc/<pid>/stat field 22: guards against pid reuse
  std::string binary;              // argv[0] as launched, checked against /proc/<pid>/cmdline
  std::string control_socket;      // QMP or CH API socket
  std::vector<pid_t> helper_pids;  // virtiofsd
  std::vector<uint64_t> helper_start_ticks;
  std::vector<std::string> cgroup_dirs;  // every cgroup directory created for the VMM
  AgentEndpoint agent;
  std::vector<PluggedDisk> plugged_disks;
  std::vector<PluggedNic> plugged_nics;
  // virtio-fs devices added after a restore from a template, by tag, with the hot-plug slot each occupies.
  std::vector<PluggedShare> plugged_shares;
  // QEMU: where hot-plugged disks go. kDiskBusBridge (the slots of one PCI bridge) for VMs started now; records
  // without it are VMs started before it existed, with one PCIe root port per disk (kDiskBusRootPorts).
  std::string disk_hotplug_bus;
};
inline constexpr const char* kDiskBusBridge = "pci-bridge";
inline constexpr const char* kDiskBusRootPorts = "root-ports";

enum class VmRunState { kRunning, kPaused, kShutdown, kUnknown };

struct VmInfo {
  VmRunState state = VmRunState::kUnknown;
  pid_t pid = 0;
  std::string detail;  // driver's raw state name ("running", "Running", ...)
};

// Called repeatedly by WaitReady until it returns true, an error, or the deadline passes.
using ReadinessCheck = std::function<base::Result<bool>()>;

class Vmm {
 public:
  virtual ~Vmm() = default;

  virtual VmmKind kind() const = 0;

  // Launches the VMM process (own session, inside spec.netns_path, in the sandbox cgroup) and boots the guest.
  // On failure everything started so far is killed and removed.
  virtual base::Status Start(const VmLaunchSpec& spec) = 0;

  // Polls `check` until it reports ready. Fails early when the VMM dies; on timeout or failure the VMM is killed
  // and the error quotes the tail of the console log.
  virtual base::Status WaitReady(const ReadinessCheck& check, std::chrono::milliseconds timeout) = 0;

  virtual base::Status HotplugDisk(const DiskSpec& disk, std::chrono::milliseconds timeout) = 0;
  virtual base::Status UnplugDisk(const std::string& serial, std::chrono::milliseconds timeout) = 0;

  // Hot-plugs a NIC backed by `nic`'s tap queue fds (the VMM gets its own copies).
  virtual base::Status HotplugNic(const NetInterfaceSpec& nic, std::chrono::milliseconds timeout) = 0;

  // Gives a running VM another sandbox's identity (a warm VM claimed by a pod): its run dir and console log are
  // renamed to `target`'s, and the VMM and its helpers move into `target`'s cgroup. Listening sockets and open
  // files follow a rename, so the VM never notices. On failure nothing has moved.
  virtual base::Status Rehome(const VmLaunchSpec& target) = 0;

  // Grows a running VM to `vcpus` and `memory_mib` by hot-plug, within the room it booted with (max_vcpus,
  // max_memory_mib); memory grows in whole kHotplugMemoryBlockMib blocks. The guest still has to bring the new
  // CPUs and memory online (the agent's OnlineResources). On failure the VM keeps what was plugged before the
  // step that failed, and the error says how far it got.
  virtual base::Status Grow(int vcpus, int memory_mib, std::chrono::milliseconds timeout) = 0;

  // Pauses the guest and writes its device state to `state_path`, for clones of this VM (VmLaunchSpec::
  // restore_state_path). The VM must have been started with memory_fd (its RAM stays there) and no fs_shares. The
  // VM stays paused: the caller kills it.
  virtual base::Status SaveState(const std::string& state_path, std::chrono::milliseconds timeout) = 0;

  // graceful: power button first and wait up to `timeout` for the guest to halt; then SIGTERM, then SIGKILL.
  // Returns once the VMM and its helpers are gone and their sockets and cgroups removed.
  virtual base::Status Shutdown(bool graceful, std::chrono::milliseconds timeout) = 0;
  // SIGKILL to the VMM and helpers, then the same cleanup as Shutdown.
  virtual base::Status Kill() = 0;

  virtual base::Result<VmInfo> Info() = 0;

  // Re-attaches to a VMM started by an earlier chrysd: checks pid + start time + command line, reconnects the
  // control socket. Errors mean the VM is gone or is not ours.
  virtual base::Status Adopt(const VmmProcessState& state, const VmLaunchSpec& spec) = 0;

  // True while the VMM process exists.
  virtual bool Alive() const = 0;

  virtual const VmmProcessState& process_state() const = 0;
  virtual AgentEndpoint agent_endpoint() const = 0;
  // The command line Start uses (for `chrysctl debug` and tests).
  virtual base::Result<std::vector<std::string>> CommandLine(const VmLaunchSpec& spec) const = 0;
};

}  // namespace chrys::runtime

namespace chrys::runtime {

// Checks what every driver needs from a launch spec (ids, sizes, MACs, fds, paths); errors name the field.
base::Status ValidateLaunchSpec(const VmLaunchSpec& spec);
// A disk serial must be 1..20 characters of [A-Za-z0-9_-] (virtio-blk serials are at most 20 bytes).
base::Status ValidateDiskSpec(const DiskSpec& disk);
// The last `max_bytes` of a console log, for error messages; "(console log empty)" when there is none.
std::string ConsoleTail(const std::string& console_log_path, size_t max_bytes = 1500);

}  // namespace chrys::runtime
