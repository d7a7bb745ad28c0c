// Guest early boot done by chrys-agent as PID 1: root switch, base mounts, kernel modules, cgroups.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "base/result.h"

namespace chrys::guest {

// The list of modules the image builder packed, in load order (dependencies first), one path per line
// relative to /lib/modules/<release>/.
inline constexpr const char* kModuleListPath = "/lib/modules/chrys-modules.load";

// The read-only EROFS disk with crun, mkfs.ext4 and their shared libraries, mounted at kGuestToolsDir; the
// initramfs only links to them there. Every byte of the initramfs is loaded and unpacked on every boot (under
// TCG ~25 ms per MiB), while the tools are needed only once the first container is created.
inline constexpr const char* kGuestToolsSerial = "chrys-tools";
inline constexpr const char* kGuestToolsDir = "/tools";

// Re-roots onto a bind mount of the initramfs so that pivot_root works for containers (it refuses the
// initramfs root itself), then mounts /proc, /sys, /dev, /dev/pts, /dev/shm, /run, /tmp and cgroup2.
base::Status MountBaseFilesystems();

// Turns off kernel housekeeping that wakes an idle VM for nothing a pod needs: proactive memory compaction
// (kcompactd every 500 ms; a pod VM's memory is small and short-lived, and compaction on demand still runs).
base::Status QuietIdleKernel();

// gRPC (1.51) does not start its clock before CLOCK_MONOTONIC reads 2 s: its time init sleeps in 100 ms steps
// until then. As PID 1 of a VM the agent gets there long before (on KVM after a few hundred ms), and would idle
// away the difference on every boot. This moves the (still single-threaded) caller into a new time namespace
// whose monotonic clock runs kMonotonicLeadSeconds ahead; CLOCK_BOOTTIME, which readiness is reported in, and
// the wall clock are untouched. Processes the agent starts (crun, containers) inherit the namespace.
inline constexpr int kMonotonicLeadSeconds = 10;
base::Status RunMonotonicClockAhead();

// What the guest's (virtual) hardware has, as far as module loading cares.
struct GuestHardware {
  bool virtio_vsock = false;  // a virtio vsock PCI device (vendor 0x1af4, device 0x1053)
  bool virtio_mmio = false;   // virtio-mmio devices (ACPI LNRO0005 or virtio_mmio.device= on the cmdline)
};

// Reads /sys/bus/pci/devices, /sys/bus/platform/devices and /proc/cmdline.
GuestHardware ProbeGuestHardware();

// When a listed module loads. kBoot: before the agent serves (the virtio core, PCI transport and the host
// channel: virtio_console, or vsock where that device exists). kDeferred: on the loader thread right after the
// boot modules, while the agent already serves (block and network drivers, then the filesystems: their loading
// cost ~250 ms of emulated boot; the first request that needs them waits). kSkip: the hardware it drives is absent.
enum class ModulePhase { kBoot, kDeferred, kSkip };

// Pure: the phase of one module path from the load list (e.g. "kernel/fs/erofs/erofs.ko").
ModulePhase PhaseOfModule(const std::string& module_path, const GuestHardware& hardware);

// Pure: the module paths of `phase` from the load list's text, in the order they load: list order (dependencies
// first), except that the deferred phase loads in the order a pod's setup needs them: network drivers (SetupSandbox),
// then virtio-fs (the pod's shared directory), then block devices and container filesystems (CreateContainer).
std::vector<std::string> ModulesToLoad(const std::string& list_text, ModulePhase phase, const GuestHardware& hardware);

// Loads the listed modules of `phase` with finit_module, in ModulesToLoad order; a module already present is fine.
// Returns the names that failed (logged, not fatal: a missing virtio driver shows later as a missing device).
std::vector<std::string> LoadModules(ModulePhase phase, const GuestHardware& hardware);

// Starts the module loader thread (once): the kBoot modules, then the kDeferred ones. The caller builds its gRPC
// server meanwhile, on the other vCPU. Call after SIGCHLD is blocked (the thread inherits the signal mask).
void StartModuleLoader(const GuestHardware& hardware);

// Blocks until the boot modules are loaded (immediately when no loader was started, as when the agent is not
// PID 1). The host channel needs them.
base::Status WaitForBootModules(std::chrono::milliseconds timeout);

// Blocks until the deferred modules are loaded too (immediately when no loader was started). Requests that need
// a disk or a filesystem call this first.
base::Status WaitForDeferredModules(std::chrono::milliseconds timeout);

// Blocks until the loader has tried module `name` (e.g. "virtio_net"), or has finished, or was never started.
base::Status WaitForModule(const std::string& name, std::chrono::milliseconds timeout);

// Enables the cpu, memory, pids and io controllers for children of the root cgroup.
base::Status EnableCgroupControllers();

// Parses the modules.dep format: returns `module` and its dependencies, dependencies first, no repeats.
// `deps` maps a module path to its direct dependency paths. Pure; used by the image builder too.
std::vector<std::string> ModuleLoadOrder(const std::vector<std::string>& wanted,
                                         const std::vector<std::pair<std::string, std::vector<std::string>>>& deps);

// What containers need beyond the boot, done on its own thread off the boot path: enables the cgroup
// controllers, then mounts the tools disk (kGuestToolsSerial, EROFS, read-only) at kGuestToolsDir once the
// deferred modules (virtio_blk, erofs) are loaded.
void StartContainerSupport();
// True once the work StartContainerSupport began has finished (whether or not it succeeded).
bool ContainerSupportSettled();
// How long container work waits for it: the deferred modules' and the disk's own bounds, with room to spare.
inline constexpr std::chrono::seconds kContainerSupportWait{90};
// Waits (bounded) until that is done; the mount's error when it failed. OK at once when it was never started
// (the agent outside a VM, where crun is the host's).
base::Status WaitForContainerSupport(std::chrono::milliseconds timeout);

}  // namespace chrys::guest
