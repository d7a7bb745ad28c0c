// ChildReaper: as PID 1 the agent reaps every exited child; callers subscribe to the pids they care about.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace chrys::guest {

// How a process ended, decoded from a wait status.
struct ProcessExit {
  int exit_code = 0;  // 128 + signal when killed
  int signal = 0;
  std::chrono::system_clock::time_point at;
};

ProcessExit DecodeWaitStatus(int status);

// What to give a spawned program.
struct SpawnSpec {
  std::vector<std::string> argv;  // argv[0] is an absolute path
  std::vector<std::string> env;   // empty: a minimal PATH only
  int stdin_fd = -1;              // -1: /dev/null
  int stdout_fd = -1;
  int stderr_fd = -1;
  bool new_session = false;
};

class ChildReaper {
 public:
  using ExitCallback = std::function<void(const ProcessExit&)>;

  // Blocks SIGCHLD in the calling thread (call first thing in main, before any thread exists) and starts
  // the reaping thread that waits on a signalfd.
  static base::Status Start();
  static ChildReaper& Instance();

  // Calls `on_exit` once `pid` has exited (right away, from this thread, if it already has).
  void Watch(pid_t pid, ExitCallback on_exit);

  // fork + exec with the given stdio. The pid is watched before the child can be reaped.
  base::Result<pid_t> Spawn(const SpawnSpec& spec, ExitCallback on_exit);

  // Runs a helper program to completion with bounded output. A helper outliving `timeout` is killed.
  struct RunResult {
    ProcessExit exit;
    std::string output;  // stdout and stderr interleaved, at most 64 KiB (the tail)
    bool ok() const { return exit.signal == 0 && exit.exit_code == 0; }
  };
  base::Result<RunResult> Run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                              const std::string& stdin_data = "");

 private:
  ChildReaper() = default;
  void Loop(int signal_fd);
  void Dispatch(pid_t pid, int status);

  std::mutex mu_;
  std::map<pid_t, ExitCallback> watchers_;
  // Exits nobody watched yet: orphans reparented to us, or children whose watcher comes a moment later.
  std::map<pid_t, ProcessExit> unclaimed_;
  std::thread thread_;
};

}  // namespace chrys::guest
