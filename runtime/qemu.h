// QemuVmm: the Vmm driver for QEMU (q35 with a PCI bridge for disk hot-plug, direct kernel boot, QMP control).
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/cgroup.h"
#include "runtime/process.h"
#include "runtime/qmp_client.h"
#include "runtime/vmm.h"

namespace chrys::runtime {

struct QemuConfig {
  std::string qemu_binary = "/usr/bin/qemu-system-x86_64";
  std::string virtiofsd_binary = "/usr/lib/qemu/virtiofsd";
  // "auto" (KVM only when the cached probe shows it boots a guest), "kvm" or "tcg".
  std::string accel = "auto";
  // Where the KVM probe result is cached (keyed by QEMU binary + kernel); empty disables the cache.
  std::string accel_cache_path = "/run/chrysalis/kvm-probe.json";
  std::string kvm_device = "/dev/kvm";
  // The KVM probe guest must print its kernel banner within this long, or KVM counts as unable to run guests.
  std::chrono::milliseconds kvm_probe_banner_wait{5000};
  // When set, ends a KVM probe this VMM waits for (its owner's shutdown): the boot then fails as cancelled.
  const std::atomic<bool>* accel_probe_cancel = nullptr;
  std::string vhost_vsock_device = "/dev/vhost-vsock";
  // Disks that may be hot-plugged into one VM (layers and scratch disks), 1..30: the slots of one PCI bridge.
  int hotplug_ports = 30;
  // -bios for direct kernel boot (e.g. qboot); empty, or a missing file, keeps QEMU's default firmware.
  std::string direct_boot_firmware;
  std::chrono::milliseconds qmp_timeout{std::chrono::seconds(10)};
  // Cgroup hierarchies to place the VMM in; empty means discover them from /proc/self/mountinfo.
  std::vector<CgroupHierarchy> cgroup_hierarchies;
  bool place_in_cgroup = true;
};

// Decides TCG or KVM for `accel` = auto/kvm/tcg. auto runs (once, cached) a probe guest under KVM: the kernel
// with no initramfs must get as far as its "no root filesystem" panic. Setting `*cancel` ends a probe in
// flight (a kCancelled error, nothing cached).
base::Result<std::string> ResolveQemuAccel(const QemuConfig& config, const std::string& probe_kernel,
                                           const std::atomic<bool>* cancel = nullptr);

class QemuVmm : public Vmm {
 public:
  explicit QemuVmm(QemuConfig config);
  ~QemuVmm() override;

  VmmKind kind() const override { return VmmKind::kQemu; }
  base::Status Start(const VmLaunchSpec& spec) override;
  base::Status WaitReady(const ReadinessCheck& check, std::chrono::milliseconds timeout) override;
  base::Status HotplugDisk(const DiskSpec& disk, std::chrono::milliseconds timeout) override;
  base::Status UnplugDisk(const std::string& serial, std::chrono::milliseconds timeout) override;
  base::Status HotplugNic(const NetInterfaceSpec& nic, std::chrono::milliseconds timeout) override;
  base::Status Rehome(const VmLaunchSpec& target) override;
  base::Status Grow(int vcpus, int memory_mib, std::chrono::milliseconds timeout) override;
  base::Status SaveState(const std::string& state_path, std::chrono::milliseconds timeout) override;
  base::Status Shutdown(bool graceful, std::chrono::milliseconds timeout) override;
  base::Status Kill() override;
  base::Result<VmInfo> Info() override;
  base::Status Adopt(const VmmProcessState& state, const VmLaunchSpec& spec) override;
  bool Alive() const override;
  const VmmProcessState& process_state() const override { return state_; }
  AgentEndpoint agent_endpoint() const override { return state_.agent; }
  base::Result<std::vector<std::string>> CommandLine(const VmLaunchSpec& spec) const override;

  // The command line for a resolved accelerator; tap fds are numbered as the VMM will see them (3, 4, ...).
  std::vector<std::string> BuildCommandLine(const VmLaunchSpec& spec, const std::string& accel) const;

  static std::string QmpSocketPath(const VmLaunchSpec& spec) { return spec.run_dir + "/qmp.sock"; }
  static std::string AgentSocketPath(const VmLaunchSpec& spec) { return spec.run_dir + "/agent.sock"; }
  // The serial console, for `chrysctl console`; everything it carries is also appended to the console log.
  static std::string ConsoleSocketPath(const VmLaunchSpec& spec) { return spec.run_dir + "/console.sock"; }
  static std::string FsSocketPath(const VmLaunchSpec& spec, size_t i) {
    return spec.run_dir + "/fs" + std::to_string(i) + ".sock";
  }
  static std::string VmmLogPath(const VmLaunchSpec& spec) { return spec.run_dir + "/vmm.log"; }

  // Test hook: the QMP connection (e.g. to inject failures or inspect events).
  QmpClient* qmp() { return qmp_.get(); }

 private:
  AgentChannelKind EffectiveAgentChannel(const VmLaunchSpec& spec) const;
  base::Status StartHelpers(const VmLaunchSpec& spec);
  // Loads spec_.restore_state_path into the paused VM, adds its shares, and lets it run.
  base::Status RestoreFromTemplate();
  // The sandbox's cgroup (in every hierarchy) under spec.cgroup_parent.
  base::Result<VmmCgroup> CreateCgroup(const VmLaunchSpec& spec) const;
  // True when a hot-plugged disk, NIC or share occupies bridge slot `slot`.
  bool SlotTaken(int slot) const;
  // The highest free bridge slot (NICs and shares fill from the top), or -1.
  int TopFreeSlot() const;
  // Sets up migration of the device state only (x-ignore-shared) through `state_fd`, passed to QEMU by name.
  base::Status PassTemplateState(int state_fd, std::chrono::milliseconds timeout);
  base::Result<nlohmann::json> Qmp(const std::string& command, const nlohmann::json& args,
                                   std::chrono::milliseconds timeout);
  // Stops helpers, removes sockets and cgroups; the VMM process must be gone already.
  base::Status Cleanup();
  base::Error BootFailure(const std::string& what);

  QemuConfig config_;
  VmLaunchSpec spec_;
  VmmProcessState state_;
  DetachedProcess process_;
  std::vector<DetachedProcess> helpers_;
  std::unique_ptr<QmpClient> qmp_;
  VmmCgroup cgroup_;
  std::string accel_;
};

}  // namespace chrys::runtime
