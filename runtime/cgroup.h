// VmmCgroup: the pod cgroup directories a VMM process is placed in (cgroupfs or systemd layout, v1 or v2).
#pragma once

#include <string>
#include <vector>

#include "base/result.h"
#include "runtime/vmm.h"

namespace chrys::runtime {

// One mounted cgroup hierarchy: its mount point and whether it is the v2 unified tree.
struct CgroupHierarchy {
  std::string mount_point;
  bool unified = false;
};

// The hierarchies to place VMMs in, from /proc/self/mountinfo: the v2 tree and the v1 controllers a process
// can join without extra setup (cpu, cpuacct, memory, pids, blkio, devices, freezer; cpuset is skipped because a
// new v1 cpuset needs its cpus/mems written first).
base::Result<std::vector<CgroupHierarchy>> DiscoverCgroupHierarchies(
    const std::string& mountinfo_path = "/proc/self/mountinfo");

// "kubepods-burstable-pod1.slice" -> "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice",
// the way systemd nests slices. Errors on names that are not slices or contain '/'.
base::Result<std::string> ExpandSystemdSlice(const std::string& slice);

// The path of the VMM's cgroup below each hierarchy root: cgroupfs "<parent>/chrys-<id>"; systemd
// "<expanded slice>/chrys-<id>.scope" (the scope directory is created on the cgroup filesystem directly;
// chrysd does not need a D-Bus connection for it).
base::Result<std::string> VmmCgroupRelativePath(const std::string& cgroup_parent, CgroupDriver driver,
                                                const std::string& sandbox_id);

// Creates `relative_path` below every hierarchy root where it is missing and gives it the lowest CPU weight
// (v2 cpu.weight 1, v1 cpu.shares 2), so that what runs in it gets a CPU only when its siblings leave one idle: VMs
// booted ahead of demand must not slow the pods starting beside them. An error when no hierarchy has a CPU weight.
base::Status CreateLowCpuWeightCgroup(const std::vector<CgroupHierarchy>& hierarchies,
                                      const std::string& relative_path);

// Removes `relative_path` from every hierarchy where it is empty (rmdir); a busy or missing one is left as it is.
void RemoveEmptyCgroup(const std::vector<CgroupHierarchy>& hierarchies, const std::string& relative_path);

class VmmCgroup {
 public:
  // Creates the VMM's cgroup in every hierarchy, remembering each directory it had to create.
  static base::Result<VmmCgroup> Create(const std::vector<CgroupHierarchy>& hierarchies,
                                        const std::string& relative_path);
  static VmmCgroup FromCreatedDirs(std::vector<std::string> created_dirs);

  // cgroup.procs of the leaf in every hierarchy.
  const std::vector<std::string>& procs_files() const { return procs_files_; }
  const std::vector<std::string>& created_dirs() const { return created_dirs_; }

  // Moves every process of this cgroup's leaves into `target`'s (same hierarchies, same order), e.g. a warm VM
  // into the cgroup of the pod that claimed it. Memory already charged stays with this cgroup's parent on v2.
  base::Status MoveProcessesTo(const VmmCgroup& target) const;

  // Removes the created directories, deepest first. A directory that still holds processes (EBUSY) is retried
  // for up to `timeout` (the kernel frees a cgroup shortly after its last task exits).
  base::Status Remove(std::chrono::milliseconds timeout);

 private:
  std::vector<std::string> procs_files_;
  std::vector<std::string> created_dirs_;  // creation order: parents before children
};

}  // namespace chrys::runtime
