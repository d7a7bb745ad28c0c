// ContainerManager: the containers of this VM, run with crun; their processes, stdio, exits, stats, events.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "guest/agent/child_reaper.h"
#include "guest/agent/process_io.h"
#include "guest/agent/storage.h"
#include "guest/proto/agent.pb.h"

namespace chrys::guest {

namespace v1 = ::chrys::agent::v1;

inline constexpr const char* kContainersDir = "/run/chrys/containers";
inline constexpr const char* kCrunRoot = "/run/crun";
inline constexpr const char* kCgroupParent = "/sys/fs/cgroup/chrys";

// Parses cgroup v2 "key value" files (cpu.stat, memory.stat, memory.events) for one key. Pure.
uint64_t CgroupKey(const std::string& text, const std::string& key);

// One cgroup v2 interface file of a container's cgroup and the value to write into it.
struct CgroupWrite {
  std::string file;  // "memory.max"
  std::string value;
};

// The writes that put `resources` into force, in order; only the fields that are set produce one. `current`
// reads a file of the cgroup as it is now ("" when absent): cpu.max keeps its other half when only the quota or
// only the period changes, and the swap limit (memory plus swap, as OCI counts it) needs the memory limit. Pure.
base::Result<std::vector<CgroupWrite>> CgroupWritesFor(const v1::Resources& resources,
                                                       const std::function<std::string(const std::string&)>& current);
// Writes them into `cgroup_dir` in order; when one fails, the files already written get their old values back
// and the error names the file and the value.
base::Status ApplyCgroupWrites(const std::string& cgroup_dir, const std::vector<CgroupWrite>& writes);
// The limits a cgroup holds now ("max" reads as 0), plus the unified keys of `asked` as read back.
v1::Resources ReadCgroupResources(const std::string& cgroup_dir, const v1::Resources& asked);

// A bounded queue of events per subscriber; the oldest event is dropped when a slow subscriber falls behind.
class EventHub {
 public:
  class Subscription {
   public:
    // Waits at most `wait` for an event.
    bool Next(v1::Event& out, std::chrono::milliseconds wait);

   private:
    friend class EventHub;
    std::mutex mu;
    std::condition_variable cv;
    std::deque<v1::Event> events;
  };
  std::shared_ptr<Subscription> Subscribe();
  void Unsubscribe(const std::shared_ptr<Subscription>& sub);
  void Publish(const v1::Event& event);

 private:
  static constexpr size_t kMaxQueued = 1024;
  std::mutex mu_;
  std::vector<std::shared_ptr<Subscription>> subs_;
};

class ContainerManager {
 public:
  // `crun` is the crun binary (absolute path).
  explicit ContainerManager(std::string crun = "/usr/bin/crun");
  ~ContainerManager();

  base::Result<uint32_t> Create(const v1::ContainerConfig& config);
  base::Status Start(const std::string& id);
  base::Status Signal(const v1::ProcessRef& ref, int signal);
  // Blocks until exit, `deadline`, or `cancelled()` says stop.
  base::Result<v1::ExitStatus> Wait(const v1::ProcessRef& ref, bool no_block,
                                    std::chrono::steady_clock::time_point deadline,
                                    const std::function<bool()>& cancelled);
  base::Status Delete(const std::string& id, bool force);
  std::vector<v1::ContainerInfo> List();

  base::Result<uint32_t> Exec(const std::string& container_id, const std::string& exec_id,
                              const v1::ProcessSpec& process);
  base::Status WriteStdin(const v1::ProcessRef& ref, const std::string& data, bool eof);
  base::Status Resize(const v1::ProcessRef& ref, uint32_t rows, uint32_t columns);
  // The process's stdio, for streaming; kept alive by the returned pointer even if the container goes.
  base::Result<std::shared_ptr<ProcessIo>> Io(const v1::ProcessRef& ref);

  base::Result<v1::ContainerStatsResponse> Stats(const std::string& id);
  // Changes the cgroup limits of a created or running container (kNotFound, kFailedPrecondition once it exited);
  // returns the limits in force afterwards.
  base::Result<v1::Resources> UpdateResources(const std::string& id, const v1::Resources& resources);
  base::Result<v1::SandboxStatsResponse> SandboxStats();

  // Stops every container (SIGTERM, SIGKILL after `grace`), deletes them.
  void StopAll(std::chrono::milliseconds grace);

  Storage& storage() { return storage_; }
  EventHub& events() { return events_; }

 private:
  struct Process {
    pid_t pid = 0;
    base::UniqueFd pidfd;
    std::shared_ptr<ProcessIo> io;
    bool started = false;
    bool exited = false;
    ProcessExit exit;
    std::chrono::system_clock::time_point started_at;
  };
  struct Container {
    std::string id;
    std::string bundle;
    std::string rootfs;
    std::shared_ptr<Process> init;
    v1::User user;  // the init process's user, resolved: what execs run as unless they name their own
    // The init process as created (user resolved): what an exec inherits (see ExecProcessSpec).
    v1::ProcessSpec process;
    bool privileged = false;
    std::map<std::string, std::shared_ptr<Process>> execs;
    uint64_t oom_kills_seen = 0;
    bool deleting = false;
  };

  base::Result<std::shared_ptr<Process>> FindProcess(const v1::ProcessRef& ref);
  // Runs crun with the given arguments; stdio of crun goes to `io`'s child ends when given.
  base::Result<ChildReaper::RunResult> Crun(const std::vector<std::string>& args, std::chrono::milliseconds timeout);
  base::Result<pid_t> CrunWithStdio(const std::vector<std::string>& args, ProcessIo& io, const std::string& log_path,
                                    std::chrono::milliseconds timeout);
  void WatchProcess(const std::string& container_id, const std::string& exec_id,
                    const std::shared_ptr<Process>& process);
  void OnExit(const std::string& container_id, const std::string& exec_id, const std::shared_ptr<Process>& process,
              const ProcessExit& exit);
  uint64_t OomKills(const std::string& id);
  void WakeOomWatch();
  void OomWatchLoop();
  base::Status Cleanup(const std::string& id, const std::string& bundle, const std::string& rootfs);

  const std::string crun_;
  Storage storage_;
  EventHub events_;
  std::mutex mu_;
  std::condition_variable exit_cv_;
  std::map<std::string, std::shared_ptr<Container>> containers_;
  // Create/Delete of one id are serialised through this set, without holding mu_ during crun.
  std::map<std::string, bool> busy_;
  bool stopping_ = false;
  base::UniqueFd oom_wake_;  // eventfd: a container started, or the manager stops
  std::thread oom_thread_;
};

v1::ExitStatus ToProto(bool exited, const ProcessExit& exit, bool oom, std::chrono::system_clock::time_point started);

}  // namespace chrys::guest
