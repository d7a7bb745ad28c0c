// DetachedProcess: a long-lived helper (VMM, virtiofsd) started in its own session so it outlives chrysd,
// tracked by pidfd and re-attachable after a restart.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace chrys::runtime {

struct DetachedLaunchSpec {
  std::vector<std::string> argv;  // argv[0] must be an absolute path
  // These fds (owned by the caller) become fds 3, 4, ... in the child, in this order; every other fd is closed.
  std::vector<int> pass_fds;
  std::string netns_path;  // joined before exec when set
  // The child writes its own pid into each of these cgroup.procs files before exec.
  std::vector<std::string> cgroup_procs_files;
  std::string output_log_path;  // stdout and stderr are appended here; stdin is /dev/null
  // When set (a shared-memory file such as a memfd): the child, once in its cgroups so that the pages are charged
  // there, copies this file's non-zero pages into a new memfd of the same size and passes it as the fd after
  // pass_fds (3 + pass_fds.size()). A VM restored from a template runs on such a private copy of its memory.
  int copy_memory_from_fd = -1;
};

class DetachedProcess {
 public:
  DetachedProcess() = default;
  DetachedProcess(DetachedProcess&&) = default;
  DetachedProcess& operator=(DetachedProcess&&) = default;

  // Double fork + setsid: the process is reparented away from us (to init or the nearest subreaper). Returns
  // once the program was exec'd, or the error of whichever step failed in the child.
  static base::Result<DetachedProcess> Launch(const DetachedLaunchSpec& spec);

  // Re-attaches to a running process: it must exist, have the same start time and run `expected_binary`.
  static base::Result<DetachedProcess> Attach(pid_t pid, uint64_t start_ticks, const std::string& expected_binary);

  bool valid() const { return pidfd_.valid(); }
  pid_t pid() const { return pid_; }
  uint64_t start_ticks() const { return start_ticks_; }

  bool Alive() const;
  // Waits until the process is gone (reaping it when it is our child). True if it exited within `timeout`.
  bool WaitExit(std::chrono::milliseconds timeout);
  base::Status Signal(int sig) const;
  // SIGTERM, wait up to `term_grace`, then SIGKILL and wait; ok once the process is gone.
  base::Status Terminate(std::chrono::milliseconds term_grace);

 private:
  base::UniqueFd pidfd_;
  pid_t pid_ = 0;
  uint64_t start_ticks_ = 0;
};

// /proc/<pid>/stat starttime (clock ticks since boot).
base::Result<uint64_t> ProcessStartTicks(pid_t pid);
// /proc/<pid>/cmdline split at NULs.
base::Result<std::vector<std::string>> ProcessCmdline(pid_t pid);
// True when /proc/<pid> exists and is not a zombie.
bool ProcessRunning(pid_t pid);

}  // namespace chrys::runtime
