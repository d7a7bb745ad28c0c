// SandboxManager: one VM per pod sandbox — lifecycle, crash-safe records, hot-plug, stop, adoption on restart,
// and a pool of warm VMs that pods claim instead of booting their own.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "runtime/vmm.h"

namespace chrys::runtime {

enum class SandboxState { kCreating, kBooting, kReady, kNotReady, kStopping, kStopped };
const char* SandboxStateName(SandboxState state);

// The pod's resources as kubelet gives them (LinuxPodSandboxConfig/overhead); 0 means "not set".
struct PodResources {
  int64_t cpu_millis = 0;
  int64_t memory_bytes = 0;
};

// What the VM gets on top of (or instead of) the pod's resources.
struct VmSizing {
  int overhead_vcpus = 0;
  int overhead_memory_mib = 128;
  int default_vcpus = 1;         // pod without a CPU limit
  int default_memory_mib = 512;  // pod without a memory limit
  int max_vcpus = 16;
};

// vCPUs: ceil(cpu_millis / 1000) + overhead (default when unset), at least 1, at most max_vcpus.
int VcpusFor(const PodResources& pod, const VmSizing& sizing);
// MiB: ceil(memory_bytes / MiB) + overhead (default when unset), at least 64.
int MemoryMibFor(const PodResources& pod, const VmSizing& sizing);

// How the sandbox layer talks to the guest agent: readiness while booting, shutdown when stopping.
class AgentConnector {
 public:
  virtual ~AgentConnector() = default;
  // Called repeatedly while the VM boots (and once after adoption): true once the agent answers. An error means
  // the guest will never become ready. `patience` bounds how long one call may wait for the answer.
  virtual base::Result<bool> Probe(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                                   std::chrono::milliseconds patience) = 0;
  // Asks the guest to kill what still runs in it, at once, and power off; bounded by `timeout`.
  virtual base::Status Shutdown(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                                std::chrono::milliseconds timeout) = 0;
  // Drops any connection kept for the sandbox.
  virtual void Forget(const std::string& sandbox_id) = 0;
  // The sandbox `from` now answers to `to` (a claimed warm VM): a kept connection stays open under the new id.
  virtual void Rename(const std::string& from, const std::string& to) = 0;
  // Has the guest bring hot-plugged vCPUs and memory online (a warm VM grown to its pod's size): returns once
  // `vcpus` CPUs and `added_memory_mib` MiB beyond the boot memory are online, or fails after `timeout`.
  virtual base::Status OnlineResources(const std::string& sandbox_id, const AgentEndpoint& endpoint, int vcpus,
                                       int added_memory_mib, std::chrono::milliseconds timeout) = 0;
  // True once a ready guest has also finished its start-up work (modules, tools disk): a template is saved then,
  // so that its clones start with it done.
  virtual base::Result<bool> Settled(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                                     std::chrono::milliseconds patience) = 0;
  // A VM restored from a template: sets its clock to the host's and reseeds its random generator with fresh host
  // entropy (clones must not share the template's).
  virtual base::Status Resume(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                              std::chrono::milliseconds timeout) = 0;
  // The template VM, about to be saved: has the guest zero its free memory (clones then copy only pages in use).
  virtual base::Status PrepareTemplate(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                                       std::chrono::milliseconds timeout) = 0;
};

struct SandboxRequest {
  std::string id;
  std::string handler = "chrysalis";
  PodResources resources;
  std::vector<NetInterfaceSpec> interfaces;  // fds stay owned by the caller
  std::vector<FsShareSpec> fs_shares;
  std::string netns_path;
  std::string cgroup_parent;
  CgroupDriver cgroup_driver = CgroupDriver::kCgroupfs;
  // Extra kernel command line words (appended to the configured one).
  std::string extra_cmdline;
  // Room to grow by hot-plug (warm VMs): vCPUs and MiB the VM may reach; 0 or below its size means none.
  int max_vcpus = 0;
  int max_memory_mib = 0;
  // See VmLaunchSpec: RAM in this memfd (a template boot), or restored from a template (its RAM and state).
  int memory_fd = -1;
  std::string restore_state_path;
};

using VmmFactory = std::function<base::Result<std::unique_ptr<Vmm>>(VmmKind kind)>;
// Which VMM a handler gets: `chrysalis` → Cloud Hypervisor when `ch_usable`, else QEMU; `chrysalis-qemu` and
// `chrysalis-cvm` → QEMU; anything else is an error naming the handler.
base::Result<VmmKind> SelectVmmKind(const std::string& handler, bool ch_usable);

// VMs booted ahead of demand with the default pod shape (QEMU, not confidential), so that a pod's VM is already
// up when RunPodSandbox comes: the claim hot-plugs the pod's NICs, renames the VM's files to the pod's and moves
// it into the pod's cgroup. A pod whose shape or handler differs boots its own VM, as without the pool.
struct WarmPoolOptions {
  int size = 0;  // warm VMs kept booted; 0 disables the pool
  // The one virtio-fs share a pod VM gets; a warm VM shares <share_root>/<its id>, which becomes the pod's.
  std::string share_tag;
  std::string share_root;
  std::function<base::Status(const std::string& dir)> prepare_share;
  std::function<base::Status(const std::string& dir)> release_share;
  // cgroupfs parent of the warm VMs' cgroups (below each hierarchy root); a claim moves the VM into the pod's.
  std::string cgroup_parent = "chrysalis-warm";
  // Called with cgroup_parent before the pool's first boot, to make it (e.g. with the lowest CPU weight, so that
  // refill boots yield to the pods starting beside them); an error is reported in last_error, and the pool goes on.
  std::function<base::Status(const std::string& cgroup_parent)> prepare_cgroup_parent;
  // Called with cgroup_parent when a pool that ran stops, to remove it: the parent outlives the warm VM that created
  // it (a claim moves that VM out), and claimed VMs live in their pods' cgroups, so it is empty by then.
  std::function<void(const std::string& cgroup_parent)> release_cgroup_parent;
  // Pause after a warm VM failed to boot, before the next try.
  std::chrono::milliseconds retry_delay{std::chrono::seconds(10)};
  // How often a full pool looks for warm VMs that died (they are replaced, instead of failing a claim later).
  std::chrono::milliseconds health_check_interval{std::chrono::seconds(30)};
  // Start warm VMs from a template instead of booting each: one VM is booted and left to settle, its paused state
  // saved (RAM in a memfd chrysd keeps, devices in a file), and every warm VM after it restored from that in a
  // fraction of a boot. A pod that finds no ready warm VM also gets one restored on the spot.
  bool use_template = false;
  // How long the template VM may take to settle (its start-up work done) after it is ready.
  std::chrono::milliseconds template_settle_timeout{std::chrono::seconds(30)};
};

// What the pool holds and has done, for status and benchmarks.
struct WarmPoolStatus {
  int size = 0;
  int ready = 0;
  int booting = 0;
  uint64_t claimed = 0;
  uint64_t missed = 0;              // eligible pods that found no ready VM
  uint64_t restored_on_demand = 0;  // of those, pods given a VM restored from the template on the spot
  // "off" (not asked for), "pending" (being made), "ready", or "failed: <why>" (warm VMs boot instead).
  std::string template_state = "off";
  uint64_t template_memory_bytes = 0;  // what the template's RAM holds (its zero pages dropped)
  std::string last_error;
};

// Warm VMs are recorded (and their run dirs named) with this prefix; a restarted chrysd removes them.
inline constexpr const char* kWarmIdPrefix = "warm-";
// The template VM's id ends with this (it is a warm id too, so a restarted chrysd removes it like one).
inline constexpr const char* kTemplateIdMark = "-template";
// Restores from the template that fail in a row before it is dropped (warm VMs then boot).
inline constexpr int kTemplateFailureLimit = 3;
inline bool IsWarmId(const std::string& id) {
  return id.rfind(kWarmIdPrefix, 0) == 0;
}

struct SandboxManagerOptions {
  std::string state_dir;  // persistent records: <state_dir>/<id>/sandbox.json, console.log, disks/
  std::string run_dir;    // sockets: <run_dir>/<id>/
  std::string kernel_path;
  std::string initramfs_path;
  std::string kernel_cmdline = "console=ttyS0 panic=-1 quiet";
  // Disks every microVM boots with (the guest image's read-only tools disk).
  std::vector<DiskSpec> boot_disks;
  VmSizing sizing;
  AgentChannelKind agent_channel = AgentChannelKind::kVirtioSerial;
  std::chrono::milliseconds boot_timeout{std::chrono::seconds(60)};
  std::chrono::milliseconds graceful_stop_timeout{std::chrono::seconds(10)};
  std::chrono::milliseconds hotplug_timeout{std::chrono::seconds(20)};
  // Formats each scratch disk as ext4 on the host before it is plugged (~10 ms natively, where the guest would
  // spend a few hundred ms of emulated time on it); empty, or the program missing, leaves the disk blank and the
  // agent formats it.
  std::string scratch_mkfs = "/sbin/mkfs.ext4";
  bool ch_usable = false;  // result of the Cloud Hypervisor probe (binary present and KVM runs a guest)
  VmmFactory vmm_factory;
  std::shared_ptr<AgentConnector> agent;
  WarmPoolOptions warm_pool;
};

// A snapshot of one sandbox for callers (CRI status, chrysctl).
struct SandboxStatus {
  std::string id;
  SandboxState state = SandboxState::kStopped;
  VmmKind vmm = VmmKind::kQemu;
  pid_t vmm_pid = 0;
  AgentEndpoint agent;
  std::string console_log_path;
  std::string error;  // why the sandbox is not ready, when it is not
  std::vector<PluggedDisk> disks;
  int vcpus = 0;
  int memory_mib = 0;
  std::string console_socket;  // the serial console's unix socket (chrysctl console); empty when the VM has none
  // How long Create took to launch the VMM (and its helpers), then for the agent to answer; zero after adoption.
  std::chrono::milliseconds launch_time{0};
  std::chrono::milliseconds boot_time{0};
  // The shares as served: a VM claimed from the warm pool shares its own directory, not the one requested.
  std::vector<FsShareSpec> fs_shares;
  // Set when the VM came from the warm pool; claim_time is what taking it over cost (NICs included).
  bool from_warm_pool = false;
  std::chrono::milliseconds claim_time{0};
};

// What Recover found.
struct RecoveryReport {
  std::vector<std::string> adopted;
  std::vector<std::string> not_ready;   // VM died or could not be re-checked
  std::vector<std::string> cleaned_up;  // half-created: removed
  std::vector<std::string> stopped;     // were stopping: stop finished
};

class SandboxManager {
 public:
  explicit SandboxManager(SandboxManagerOptions options);
  ~SandboxManager();

  // Loads every record under state_dir and re-attaches to the VMs. Call once at start.
  base::Result<RecoveryReport> Recover();

  // creating → booting → ready, or a warm VM claimed when the request fits one (see WarmPoolOptions); the status's
  // fs_shares then name the warm VM's share directory. On failure everything is undone (VMM killed, sockets, cgroup,
  // record removed) and the error says why (with the console tail when the guest did not come up).
  base::Result<SandboxStatus> Create(const SandboxRequest& request);

  // ready → stopping → stopped: agent shutdown, power button, SIGTERM, SIGKILL (each bounded); then sockets,
  // scratch disks and cgroup are removed. Idempotent; unknown ids are NotFound.
  base::Status Stop(const std::string& id);
  // Stops if needed and removes the record and console log.
  base::Status Remove(const std::string& id);

  // Hot-plugs a read-only layer disk (an existing EROFS image) by serial.
  base::Status AttachLayerDisk(const std::string& id, const std::string& serial, const std::string& image_path);
  // Creates a sparse writable scratch disk of `size_bytes` under the sandbox's state dir and hot-plugs it.
  base::Result<std::string> AttachScratchDisk(const std::string& id, const std::string& serial, uint64_t size_bytes);
  // Unplugs a disk; a scratch disk's file is deleted.
  base::Status DetachDisk(const std::string& id, const std::string& serial);

  base::Result<SandboxStatus> Inspect(const std::string& id);
  std::vector<SandboxStatus> List();

  // Re-checks a ready sandbox's VMM; a dead one becomes not ready (and its leftovers are collected).
  base::Result<SandboxState> Refresh(const std::string& id);

  // Starts keeping options.warm_pool.size VMs booted (a background thread); no-op when the size is 0.
  void StartWarmPool();
  // Stops refilling and kills every warm VM (in-flight boots included). Also done by the destructor.
  void StopWarmPool();
  WarmPoolStatus warm_pool_status();

  std::string SandboxStateDir(const std::string& id) const { return options_.state_dir + "/" + id; }
  std::string SandboxRunDir(const std::string& id) const { return options_.run_dir + "/" + id; }

 private:
  struct Sandbox;
  std::shared_ptr<Sandbox> Find(const std::string& id);
  base::Status Persist(Sandbox& sb);
  base::Status StopLocked(Sandbox& sb);
  void CleanupFailedCreate(Sandbox& sb);
  SandboxStatus Snapshot(const Sandbox& sb) const;
  base::Result<std::unique_ptr<Vmm>> MakeVmm(VmmKind kind);
  base::Status RecoverOne(const std::string& id, RecoveryReport& report);
  // The VMM of the refill thread's boot in flight, which StopWarmPool ends rather than wait out. Kept as pid, start
  // time and binary: the kill goes to that very process, never to another that took the pid.
  class BootingVmm {
   public:
    void Set(const VmmProcessState& process);
    void Clear();
    void Kill();

   private:
    std::mutex mu_;
    VmmProcessState process_;
  };
  // Fills in the spec from the request and boots the VM; on failure everything is undone. `booting`, when given,
  // holds the VMM from its launch until Boot returns.
  base::Status Boot(Sandbox& sb, const SandboxRequest& request, VmmKind kind, BootingVmm* booting = nullptr);
  bool FitsWarmPool(const SandboxRequest& request, VmmKind kind) const;
  bool CanGrowTo(const PodResources& resources) const;
  int WarmBootMemoryMib() const;
  // Empty when no warm VM fits (the caller boots one); otherwise the claimed sandbox or why the claim failed.
  std::optional<base::Result<SandboxStatus>> ClaimWarm(const SandboxRequest& request, VmmKind kind);
  // Kills a warm (or half-claimed) VM and removes its files and share.
  void DiscardWarm(Sandbox& sb, const std::string& warm_id);
  void RefillWarmPool();
  // Boots, settles and saves the template VM (RefillWarmPool's first step when use_template is set).
  base::Status MakeTemplate();
  SandboxRequest WarmRequest(const std::string& id) const;
  bool PoolStopping();
  // Boots one warm VM into `sb` (locked by the caller), from the template when there is one; `for_pod`: restored on
  // the spot for that pod's request (its cgroup parent).
  base::Status BootWarm(Sandbox& sb, const SandboxRequest* for_pod = nullptr);
  // A warm VM restored from the template for a pod that found none ready, under the pod's cgroup parent; nullptr
  // without a template or when the restore failed (last_error says why).
  std::shared_ptr<Sandbox> RestoreWarmNow(const SandboxRequest& for_pod);
  // Drops the template (its memory and state file); `why` becomes template_state when not empty.
  void DropTemplate(const std::string& why);

  SandboxManagerOptions options_;
  std::mutex mu_;  // guards sandboxes_ (each Sandbox has its own lock for its operations)
  std::map<std::string, std::shared_ptr<Sandbox>> sandboxes_;

  // Warm pool: VMs by warm id (guarded by mu_), the refill thread and its wake-up.
  std::map<std::string, std::shared_ptr<Sandbox>> warm_;
  std::condition_variable pool_cv_;
  bool pool_stopping_ = false;
  BootingVmm warm_booting_;
  uint64_t pool_claimed_ = 0;
  uint64_t pool_missed_ = 0;
  uint64_t pool_restored_on_demand_ = 0;
  std::string pool_last_error_;
  // The template (guarded by mu_): its RAM, shared with clone launches in flight, and its device state file.
  std::shared_ptr<base::UniqueFd> template_memory_;
  std::string template_state_path_;
  std::string template_state_ = "off";
  int template_restore_failures_ = 0;  // in a row; the template is dropped after a few
  std::thread refill_;
};

}  // namespace chrys::runtime
