#include "guest/agent/container_manager.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <future>
#include <sstream>

#include "base/file_util.h"
#include "base/phase_timer.h"
#include "base/unique_fd.h"
#include "guest/agent/guest_init.h"
#include "guest/agent/log.h"
#include "guest/agent/oci_spec.h"
#include "guest/agent/sandbox.h"

namespace chrys::guest {
namespace {

// How long a wait whose caller went away may linger (see Wait).
constexpr auto kCancelledWaitCheck = std::chrono::seconds(10);

using base::Result;
using base::Status;
using nlohmann::json;

int64_t UnixNanos(std::chrono::system_clock::time_point t) {
  if (t.time_since_epoch().count() == 0) {
    return 0;
  }
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

int PidfdOpen(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

int PidfdSignal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

Result<pid_t> ReadPidFile(const std::string& path) {
  CHRYS_ASSIGN_OR_RETURN(std::string text, base::ReadFile(path, 64));
  try {
    long pid = std::stol(text);
    if (pid <= 1) {
      return base::Internal("bad pid '" + text + "' in " + path);
    }
    return static_cast<pid_t>(pid);
  } catch (const std::exception&) {
    return base::Internal("bad pid '" + text + "' in " + path);
  }
}

std::string TailOfFile(const std::string& path) {
  auto text = base::ReadFile(path, 1 << 20);
  if (!text.ok()) {
    return "";
  }
  // crun logs one message per line; the last lines carry the reason.
  std::string t = *text;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) {
    t.pop_back();
  }
  return t.size() > 1024 ? t.substr(t.size() - 1024) : t;
}

void FillCgroupStats(const std::string& dir, v1::CgroupStats* stats) {
  auto cpu = base::ReadFile(dir + "/cpu.stat", 64 << 10);
  if (cpu.ok()) {
    stats->set_cpu_usage_usec(CgroupKey(*cpu, "usage_usec"));
    stats->set_cpu_user_usec(CgroupKey(*cpu, "user_usec"));
    stats->set_cpu_system_usec(CgroupKey(*cpu, "system_usec"));
  }
  auto current = base::ReadFile(dir + "/memory.current", 64);
  uint64_t usage = current.ok() ? std::strtoull(current->c_str(), nullptr, 10) : 0;
  stats->set_memory_usage_bytes(usage);
  auto mstat = base::ReadFile(dir + "/memory.stat", 64 << 10);
  if (mstat.ok()) {
    uint64_t inactive = CgroupKey(*mstat, "inactive_file");
    stats->set_memory_working_set_bytes(usage > inactive ? usage - inactive : 0);
    stats->set_memory_rss_bytes(CgroupKey(*mstat, "anon"));
  }
  auto pids = base::ReadFile(dir + "/pids.current", 64);
  if (pids.ok()) {
    stats->set_pids_current(std::strtoull(pids->c_str(), nullptr, 10));
  }
  auto events = base::ReadFile(dir + "/memory.events", 4096);
  if (events.ok()) {
    stats->set_oom_kills(CgroupKey(*events, "oom_kill"));
  }
  stats->set_timestamp_unix_nanos(UnixNanos(std::chrono::system_clock::now()));
}

}  // namespace

uint64_t CgroupKey(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string k;
  uint64_t v = 0;
  while (in >> k >> v) {
    if (k == key) {
      return v;
    }
  }
  return 0;
}

namespace {

std::string TrimLine(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) {
    s.pop_back();
  }
  return s;
}

// Reads a small file of a container's root filesystem, resolving symlinks inside that root (openat2
// RESOLVE_IN_ROOT): an image's /etc/passwd that links to "/../../etc/passwd" reads its own, never the agent's.
// nullopt when it does not exist.
Result<std::optional<std::string>> ReadFileInRoot(const std::string& root, const std::string& relative) {
  base::UniqueFd dir(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir) {
    return base::SystemError("open container root " + root);
  }
  struct open_how how {};
  how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  base::UniqueFd fd(static_cast<int>(::syscall(SYS_openat2, dir.get(), relative.c_str(), &how, sizeof(how))));
  if (!fd) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return std::optional<std::string>();
    }
    return base::SystemError("open " + relative + " in the container's root filesystem");
  }
  std::string text;
  char buf[16384];
  while (true) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      return base::SystemError("read " + relative + " in the container's root filesystem");
    }
    if (n == 0) {
      break;
    }
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > (4 << 20)) {
      return base::InvalidArgument(relative + " in the container image is larger than 4 MiB");
    }
  }
  return std::optional<std::string>(std::move(text));
}

// The process's user with its name and group resolved in the container's own /etc/passwd and /etc/group.
Result<v1::User> ResolveUserInRoot(const v1::User& user, const std::string& root) {
  if (user.name().empty()) {
    return user;
  }
  CHRYS_ASSIGN_OR_RETURN(auto passwd, ReadFileInRoot(root, "etc/passwd"));
  CHRYS_ASSIGN_OR_RETURN(auto group, ReadFileInRoot(root, "etc/group"));
  return ResolveUser(user, passwd, group);
}

// A cgroup limit file's value: "max" (or absent) reads as 0, meaning unlimited.
int64_t LimitValue(const std::string& text) {
  std::string t = TrimLine(text);
  if (t.empty() || t == "max") {
    return 0;
  }
  return std::strtoll(t.c_str(), nullptr, 10);
}

}  // namespace

Result<std::vector<CgroupWrite>> CgroupWritesFor(const v1::Resources& res,
                                                 const std::function<std::string(const std::string&)>& current) {
  std::vector<CgroupWrite> writes;
  if (res.cpu_quota_us() > 0 || res.cpu_period_us() > 0) {
    // cpu.max is "<quota|max> <period>"; keep the half the request leaves alone.
    std::istringstream now(current("cpu.max"));
    std::string quota = "max";
    std::string period = "100000";
    now >> quota >> period;
    if (res.cpu_quota_us() > 0) {
      quota = std::to_string(res.cpu_quota_us());
    }
    if (res.cpu_period_us() > 0) {
      period = std::to_string(res.cpu_period_us());
    }
    writes.push_back({"cpu.max", quota + " " + period});
  }
  if (res.cpu_weight() > 0) {
    writes.push_back({"cpu.weight", std::to_string(res.cpu_weight())});
  }
  if (!res.cpuset_cpus().empty()) {
    writes.push_back({"cpuset.cpus", res.cpuset_cpus()});
  }
  if (!res.cpuset_mems().empty()) {
    writes.push_back({"cpuset.mems", res.cpuset_mems()});
  }
  int64_t memory_limit = res.memory_limit_bytes();
  if (memory_limit > 0) {
    writes.push_back({"memory.max", std::to_string(memory_limit)});
  } else {
    memory_limit = LimitValue(current("memory.max"));
  }
  if (res.memory_swap_limit_bytes() == -1) {
    writes.push_back({"memory.swap.max", "max"});
  } else if (res.memory_swap_limit_bytes() > 0) {
    // OCI counts memory plus swap; cgroup v2 limits swap alone.
    if (memory_limit <= 0) {
      return base::InvalidArgument("resources.memory_swap_limit_bytes: needs a memory limit to count swap from");
    }
    if (res.memory_swap_limit_bytes() < memory_limit) {
      return base::InvalidArgument(
          "resources.memory_swap_limit_bytes: " + std::to_string(res.memory_swap_limit_bytes()) +
          " is below the memory limit " + std::to_string(memory_limit));
    }
    writes.push_back({"memory.swap.max", std::to_string(res.memory_swap_limit_bytes() - memory_limit)});
  }
  if (res.pids_limit() > 0) {
    writes.push_back({"pids.max", std::to_string(res.pids_limit())});
  }
  for (const auto& [size, limit] : res.hugepage_limits()) {
    writes.push_back({"hugetlb." + size + ".max", std::to_string(limit)});
  }
  // Unified last, in key order, so an explicit file wins over the fields above.
  std::map<std::string, std::string> unified(res.unified().begin(), res.unified().end());
  for (const auto& [key, value] : unified) {
    writes.push_back({key, value});
  }
  return writes;
}

Status ApplyCgroupWrites(const std::string& cgroup_dir, const std::vector<CgroupWrite>& writes) {
  std::vector<CgroupWrite> undo;
  auto restore = [&] {
    for (auto it = undo.rbegin(); it != undo.rend(); ++it) {
      (void)base::WriteInterfaceFile(cgroup_dir + "/" + it->file, it->value);
    }
  };
  for (const auto& w : writes) {
    std::string path = cgroup_dir + "/" + w.file;
    auto old = base::ReadFile(path, 4096);
    // memory.swap.max is absent without swap accounting: nothing to limit when the limit is no swap at all.
    if (!old.ok() && w.file == "memory.swap.max" && w.value == "0") {
      continue;
    }
    if (!old.ok()) {
      restore();
      return base::FailedPrecondition("cgroup file " + w.file + " is not available in this container's cgroup (" +
                                      old.error().message() + ")");
    }
    auto written = base::WriteInterfaceFile(path, w.value);
    if (!written.ok()) {
      restore();
      return written.error().Wrap("set " + w.file + " to '" + w.value + "'");
    }
    // cpuset and cpu.max files read back in a different shape than they are written; the first line restores.
    undo.push_back({w.file, TrimLine(*old)});
  }
  return Status::Ok();
}

v1::Resources ReadCgroupResources(const std::string& cgroup_dir, const v1::Resources& asked) {
  auto read = [&](const std::string& file) {
    auto text = base::ReadFile(cgroup_dir + "/" + file, 4096);
    return text.ok() ? TrimLine(*text) : std::string();
  };
  v1::Resources out;
  std::istringstream cpu_max(read("cpu.max"));
  std::string quota;
  uint64_t period = 0;
  cpu_max >> quota >> period;
  out.set_cpu_quota_us(LimitValue(quota));
  out.set_cpu_period_us(period);
  out.set_cpu_weight(static_cast<uint64_t>(LimitValue(read("cpu.weight"))));
  out.set_memory_limit_bytes(LimitValue(read("memory.max")));
  out.set_pids_limit(LimitValue(read("pids.max")));
  out.set_cpuset_cpus(read("cpuset.cpus"));
  out.set_cpuset_mems(read("cpuset.mems"));
  std::string swap = read("memory.swap.max");
  if (swap == "max") {
    out.set_memory_swap_limit_bytes(-1);
  } else if (!swap.empty() && out.memory_limit_bytes() > 0) {
    out.set_memory_swap_limit_bytes(out.memory_limit_bytes() + LimitValue(swap));
  }
  for (const auto& [size, limit] : asked.hugepage_limits()) {
    (*out.mutable_hugepage_limits())[size] = static_cast<uint64_t>(LimitValue(read("hugetlb." + size + ".max")));
  }
  for (const auto& [key, value] : asked.unified()) {
    (*out.mutable_unified())[key] = read(key);
  }
  return out;
}

v1::ExitStatus ToProto(bool exited, const ProcessExit& exit, bool oom, std::chrono::system_clock::time_point started) {
  v1::ExitStatus s;
  s.set_exited(exited);
  s.set_started_at_unix_nanos(UnixNanos(started));
  if (exited) {
    s.set_exit_code(exit.exit_code);
    s.set_signal(exit.signal);
    s.set_oom_killed(oom);
    s.set_exited_at_unix_nanos(UnixNanos(exit.at));
  }
  return s;
}

bool EventHub::Subscription::Next(v1::Event& out, std::chrono::milliseconds wait) {
  std::unique_lock lock(mu);
  if (!cv.wait_for(lock, wait, [&] { return !events.empty(); })) {
    return false;
  }
  out = std::move(events.front());
  events.pop_front();
  return true;
}

std::shared_ptr<EventHub::Subscription> EventHub::Subscribe() {
  auto sub = std::make_shared<Subscription>();
  std::lock_guard lock(mu_);
  subs_.push_back(sub);
  return sub;
}

void EventHub::Unsubscribe(const std::shared_ptr<Subscription>& sub) {
  std::lock_guard lock(mu_);
  std::erase(subs_, sub);
}

void EventHub::Publish(const v1::Event& event) {
  std::lock_guard lock(mu_);
  for (auto& sub : subs_) {
    std::lock_guard sub_lock(sub->mu);
    if (sub->events.size() >= kMaxQueued) {
      sub->events.pop_front();
    }
    sub->events.push_back(event);
    sub->cv.notify_all();
  }
}

ContainerManager::ContainerManager(std::string crun)
    : crun_(std::move(crun)), oom_wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  oom_thread_ = std::thread([this] { OomWatchLoop(); });
}

ContainerManager::~ContainerManager() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  exit_cv_.notify_all();
  WakeOomWatch();
  if (oom_thread_.joinable()) {
    oom_thread_.join();
  }
}

Result<ChildReaper::RunResult> ContainerManager::Crun(const std::vector<std::string>& args,
                                                      std::chrono::milliseconds timeout) {
  CHRYS_RETURN_IF_ERROR(WaitForContainerSupport(kContainerSupportWait));  // crun is on the tools disk
  std::vector<std::string> argv = {crun_, "--root", kCrunRoot};
  argv.insert(argv.end(), args.begin(), args.end());
  return ChildReaper::Instance().Run(argv, timeout);
}

Result<pid_t> ContainerManager::CrunWithStdio(const std::vector<std::string>& args, ProcessIo& io,
                                              const std::string& log_path, std::chrono::milliseconds timeout) {
  CHRYS_RETURN_IF_ERROR(WaitForContainerSupport(kContainerSupportWait));
  SpawnSpec spec;
  spec.argv = {crun_, "--root", kCrunRoot, "--log", log_path};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  // crun create and exec guard against a container rewriting the runtime binary through /proc/self/exe
  // (CVE-2019-5736) by re-executing themselves from a read-only bind mount of it: a second exec and dynamic link.
  // crun skips that when this variable is set and its binary already sits on a read-only filesystem, as ours does
  // (EROFS on a read-only disk); on a writable one it still protects itself.
  spec.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "_LIBCONTAINER_CLONED_BINARY=1"};
  spec.stdin_fd = io.child_stdin();
  spec.stdout_fd = io.child_stdout();
  spec.stderr_fd = io.child_stderr();
  // The container's process must not end up in our session: a tty process gets its own.
  spec.new_session = true;
  auto done = std::make_shared<std::promise<ProcessExit>>();
  auto exited = done->get_future();
  CHRYS_ASSIGN_OR_RETURN(pid_t pid,
                         ChildReaper::Instance().Spawn(spec, [done](const ProcessExit& e) { done->set_value(e); }));
  if (exited.wait_for(timeout) != std::future_status::ready) {
    ::kill(pid, SIGKILL);
    exited.wait_for(std::chrono::seconds(5));
    return base::DeadlineExceeded("crun " + args[0] + " did not finish within " + std::to_string(timeout.count()) +
                                  " ms");
  }
  ProcessExit e = exited.get();
  if (e.signal != 0 || e.exit_code != 0) {
    std::string why = TailOfFile(log_path);
    return base::FailedPrecondition("crun " + args[0] + " failed (exit " + std::to_string(e.exit_code) +
                                    "): " + (why.empty() ? "no message from crun" : why));
  }
  return pid;
}

void ContainerManager::WatchProcess(const std::string& container_id, const std::string& exec_id,
                                    const std::shared_ptr<Process>& process) {
  pid_t pid = process->pid;
  ChildReaper::Instance().Watch(
      pid, [this, container_id, exec_id, process](const ProcessExit& e) { OnExit(container_id, exec_id, process, e); });
}

void ContainerManager::OnExit(const std::string& container_id, const std::string& exec_id,
                              const std::shared_ptr<Process>& process, const ProcessExit& exit) {
  bool oom = false;
  if (exec_id.empty()) {
    uint64_t kills = OomKills(container_id);
    std::lock_guard lock(mu_);
    auto it = containers_.find(container_id);
    oom = kills > 0;
    if (it != containers_.end() && kills > it->second->oom_kills_seen) {
      it->second->oom_kills_seen = kills;
    }
  }
  v1::Event event;
  {
    std::lock_guard lock(mu_);
    process->exited = true;
    process->exit = exit;
    process->pidfd.Reset();
    auto* exited = event.mutable_exited();
    exited->mutable_process()->set_container_id(container_id);
    exited->mutable_process()->set_exec_id(exec_id);
    *exited->mutable_status() = ToProto(true, exit, oom, process->started_at);
  }
  exit_cv_.notify_all();
  events_.Publish(event);
  LogInfo("container %s%s%s exited: code %d signal %d%s", container_id.c_str(), exec_id.empty() ? "" : " exec ",
          exec_id.c_str(), exit.exit_code, exit.signal, oom ? " (OOM killed)" : "");
}

uint64_t ContainerManager::OomKills(const std::string& id) {
  auto events = base::ReadFile(std::string(kCgroupParent) + "/" + id + "/memory.events", 4096);
  return events.ok() ? CgroupKey(*events, "oom_kill") : 0;
}

void ContainerManager::WakeOomWatch() {
  uint64_t one = 1;
  if (::write(oom_wake_.get(), &one, sizeof one) < 0 && errno != EAGAIN) {
    LogWarn("waking the OOM watch: %s", std::strerror(errno));
  }
}

// The kernel notifies a modification of memory.events on every OOM event in that cgroup, so the watch sleeps
// in poll until one happens (or a container starts, or the manager stops) instead of waking the VM to read
// every container's counters.
void ContainerManager::OomWatchLoop() {
  base::UniqueFd inotify(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  // Without its eventfd the watch could not be woken to stop: the destructor would wait on it forever.
  if (!inotify || !oom_wake_) {
    std::string why =
        inotify ? "no eventfd to wake the OOM watch" : std::string("inotify_init1: ") + std::strerror(errno);
    LogWarn("%s; OOM kills that leave a container running are not reported as events", why.c_str());
    return;
  }
  std::map<std::string, int> watches;  // container id -> inotify watch on its memory.events
  while (true) {
    std::vector<std::shared_ptr<Container>> running;
    {
      std::lock_guard lock(mu_);
      if (stopping_) {
        return;
      }
      for (auto& [id, c] : containers_) {
        if (c->init && c->init->started && !c->init->exited) {
          running.push_back(c);
        }
      }
    }
    // Watch before reading the counters, so that a kill between the read and the poll still wakes the poll.
    std::map<std::string, int> kept;
    for (auto& c : running) {
      if (auto it = watches.find(c->id); it != watches.end()) {
        kept.insert(watches.extract(it));
        continue;
      }
      std::string events = std::string(kCgroupParent) + "/" + c->id + "/memory.events";
      int wd = ::inotify_add_watch(inotify.get(), events.c_str(), IN_MODIFY);
      if (wd < 0) {
        LogWarn("watching %s: %s", events.c_str(), std::strerror(errno));
        continue;
      }
      kept.emplace(c->id, wd);
    }
    for (auto& [id, wd] : watches) {
      // Fails harmlessly when the cgroup is already gone: its removal dropped the watch.
      (void)::inotify_rm_watch(inotify.get(), wd);
    }
    watches = std::move(kept);
    for (auto& c : running) {
      uint64_t kills = OomKills(c->id);
      bool fresh = false;
      {
        std::lock_guard l(mu_);
        if (kills > c->oom_kills_seen) {
          c->oom_kills_seen = kills;
          fresh = true;
        }
      }
      if (fresh) {
        v1::Event event;
        event.mutable_oom()->set_container_id(c->id);
        event.mutable_oom()->set_oom_kills(kills);
        events_.Publish(event);
      }
    }
    std::array<pollfd, 2> fds{{{inotify.get(), POLLIN, 0}, {oom_wake_.get(), POLLIN, 0}}};
    if (::poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) {
      LogWarn("polling the OOM watch: %s; OOM events are no longer reported", std::strerror(errno));
      return;
    }
    std::array<char, 4096> drain{};
    for (auto& fd : fds) {
      while (::read(fd.fd, drain.data(), drain.size()) > 0) {
      }
    }
  }
}

Result<uint32_t> ContainerManager::Create(const v1::ContainerConfig& config) {
  const std::string& id = config.id();
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      return base::FailedPrecondition("the sandbox is shutting down");
    }
    if (containers_.count(id) != 0 || busy_.count(id) != 0) {
      return base::Error(base::ErrorCode::kAlreadyExists, "container " + id + " already exists");
    }
    busy_[id] = true;
  }
  struct BusyGuard {
    ContainerManager* self;
    std::string id;
    ~BusyGuard() {
      std::lock_guard lock(self->mu_);
      self->busy_.erase(id);
    }
  } busy_guard{this, id};

  auto container = std::make_shared<Container>();
  container->id = id;
  container->bundle = std::string(kContainersDir) + "/" + id;
  container->rootfs = container->bundle + "/rootfs";
  (void)base::RemoveTree(container->bundle);
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(container->bundle, 0700));

  auto undo_bundle = [&] { (void)base::RemoveTree(container->bundle); };
  // Phase times go to the console log: where a container's start goes under emulation.
  base::PhaseTimer phases;
  auto mounted = storage_.MountRootfs(id, config.rootfs(), container->rootfs);
  phases.End("rootfs");
  if (!mounted.ok()) {
    undo_bundle();
    return mounted.error();
  }
  auto undo_rootfs = [&] {
    (void)storage_.UnmountRootfs(id, container->rootfs);
    undo_bundle();
  };

  v1::ContainerConfig resolved = config;
  auto user = ResolveUserInRoot(config.process().user(), container->rootfs);
  if (!user.ok()) {
    undo_rootfs();
    return user.error().Wrap("container " + id);
  }
  *resolved.mutable_process()->mutable_user() = *user;
  container->user = *user;
  container->process = resolved.process();
  container->privileged = config.privileged();

  SpecContext context;
  context.rootfs_path = container->rootfs;
  context.cgroups_path = "/chrys/" + id;
  context.sandbox_files = SandboxFilesForContainers();
  json spec = BuildOciSpec(resolved, context);
  auto written = base::WriteFileAtomic(container->bundle + "/config.json",
                                       spec.dump(1, ' ', false, json::error_handler_t::replace), 0600);
  if (!written.ok()) {
    undo_rootfs();
    return written.error();
  }
  const auto& p = config.process();
  auto io = ProcessIo::Create(p.tty(), p.stdin(), p.tty_rows(), p.tty_columns());
  if (!io.ok()) {
    undo_rootfs();
    return io.error();
  }
  std::shared_ptr<ProcessIo> shared_io = std::move(io).value();
  std::string pid_file = container->bundle + "/pid";
  phases.End("spec");
  auto created = CrunWithStdio({"create", "--bundle", container->bundle, "--pid-file", pid_file, id}, *shared_io,
                               container->bundle + "/crun.log", std::chrono::seconds(60));
  if (!created.ok()) {
    // crun may have left state behind even when it failed.
    (void)Crun({"delete", "--force", id}, std::chrono::seconds(30));
    undo_rootfs();
    return created.error().Wrap("creating container " + id);
  }
  auto pid = ReadPidFile(pid_file);
  if (!pid.ok()) {
    (void)Crun({"delete", "--force", id}, std::chrono::seconds(30));
    undo_rootfs();
    return pid.error();
  }
  shared_io->StartAfterSpawn();
  auto process = std::make_shared<Process>();
  process->pid = *pid;
  process->pidfd.Reset(PidfdOpen(*pid));
  process->io = shared_io;
  container->init = process;
  {
    std::lock_guard lock(mu_);
    containers_[id] = container;
  }
  WatchProcess(id, "", process);
  phases.End("crun create");
  LogInfo("container %s created, pid %d (%s)", id.c_str(), *pid, phases.summary().c_str());
  return static_cast<uint32_t>(*pid);
}

namespace {

// What `crun start` does for a container without poststart hooks (our specs never carry hooks): open the
// container's exec FIFO, whose read end its init holds while it waits, unlink it (crun reports "running" once it
// is gone) and write one byte. Done here it spares a crun process per start, ~120 ms under TCG, most of it
// spent loading crun's shared libraries. Returns false, having changed nothing, when the FIFO is not there or
// has no reader: the caller then runs `crun start`, which reports why.
bool ReleaseExecFifo(const std::string& id) {
  std::string fifo = std::string(kCrunRoot) + "/" + id + "/exec.fifo";
  base::UniqueFd fd(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fd) {
    return false;  // ENOENT: another layout; ENXIO: no reader (the init is gone)
  }
  if (::unlink(fifo.c_str()) != 0) {
    return false;
  }
  char zero = 0;
  ssize_t n;
  do {
    n = ::write(fd.get(), &zero, 1);
  } while (n < 0 && errno == EINTR);
  if (n == 1) {
    return true;
  }
  LogWarn("container %s: writing its exec FIFO failed (%s); falling back to crun start", id.c_str(),
          std::strerror(errno));
  return false;
}

}  // namespace

Status ContainerManager::Start(const std::string& id) {
  std::shared_ptr<Container> c;
  {
    std::lock_guard lock(mu_);
    auto it = containers_.find(id);
    if (it == containers_.end()) {
      return base::NotFound("container " + id + " not found");
    }
    c = it->second;
    if (c->init->started) {
      return base::FailedPrecondition("container " + id + " was already started");
    }
    if (c->init->exited) {
      return base::FailedPrecondition("container " + id + " already exited");
    }
  }
  if (!ReleaseExecFifo(id)) {
    CHRYS_ASSIGN_OR_RETURN(auto result, Crun({"start", id}, std::chrono::seconds(30)));
    if (!result.ok()) {
      return base::FailedPrecondition("crun start " + id + " failed: " + result.output.substr(0, 1024));
    }
  }
  {
    std::lock_guard lock(mu_);
    c->init->started = true;
    c->init->started_at = std::chrono::system_clock::now();
  }
  WakeOomWatch();
  return Status::Ok();
}

Result<std::shared_ptr<ContainerManager::Process>> ContainerManager::FindProcess(const v1::ProcessRef& ref) {
  auto it = containers_.find(ref.container_id());
  if (it == containers_.end()) {
    return base::NotFound("container " + ref.container_id() + " not found");
  }
  if (ref.exec_id().empty()) {
    return it->second->init;
  }
  auto e = it->second->execs.find(ref.exec_id());
  if (e == it->second->execs.end()) {
    return base::NotFound("exec " + ref.exec_id() + " not found in container " + ref.container_id());
  }
  return e->second;
}

Status ContainerManager::Signal(const v1::ProcessRef& ref, int signal) {
  std::lock_guard lock(mu_);
  CHRYS_ASSIGN_OR_RETURN(auto process, FindProcess(ref));
  if (process->exited) {
    return base::FailedPrecondition("process already exited");
  }
  // Through the pidfd: never signals a recycled pid.
  int rc = process->pidfd ? PidfdSignal(process->pidfd.get(), signal) : ::kill(process->pid, signal);
  if (rc != 0 && errno != ESRCH) {
    return base::SystemError("signalling " + ref.container_id());
  }
  return Status::Ok();
}

Result<v1::ExitStatus> ContainerManager::Wait(const v1::ProcessRef& ref, bool no_block,
                                              std::chrono::steady_clock::time_point deadline,
                                              const std::function<bool()>& cancelled) {
  std::unique_lock lock(mu_);
  CHRYS_ASSIGN_OR_RETURN(auto process, FindProcess(ref));
  while (!process->exited && !no_block) {
    auto now = std::chrono::steady_clock::now();
    if (cancelled() || now >= deadline) {
      return base::DeadlineExceeded("process " + ref.container_id() + " still running");
    }
    // Exits notify exit_cv_; the timeout only bounds how long a cancelled wait lingers. A short one made every
    // idle container wake its VM once a second or more.
    exit_cv_.wait_for(lock, std::min<std::chrono::steady_clock::duration>(deadline - now, kCancelledWaitCheck));
  }
  bool oom = false;
  if (ref.exec_id().empty()) {
    auto it = containers_.find(ref.container_id());
    oom = it != containers_.end() && it->second->oom_kills_seen > 0;
  }
  return ToProto(process->exited, process->exit, oom, process->started_at);
}

Status ContainerManager::Cleanup(const std::string& id, const std::string& bundle, const std::string& rootfs) {
  auto deleted = Crun({"delete", "--force", id}, std::chrono::seconds(30));
  if (!deleted.ok()) {
    return deleted.error();
  }
  if (!deleted->ok() && deleted->output.find("does not exist") == std::string::npos) {
    return base::Internal("crun delete " + id + " failed: " + deleted->output.substr(0, 1024));
  }
  CHRYS_RETURN_IF_ERROR(storage_.UnmountRootfs(id, rootfs));
  return base::RemoveTree(bundle);
}

Status ContainerManager::Delete(const std::string& id, bool force) {
  std::shared_ptr<Container> c;
  {
    std::unique_lock lock(mu_);
    auto it = containers_.find(id);
    if (it == containers_.end()) {
      return base::NotFound("container " + id + " not found");
    }
    c = it->second;
    if (c->deleting) {
      return base::Error(base::ErrorCode::kAborted, "container " + id + " is being deleted");
    }
    bool running = !c->init->exited;
    if (running && c->init->started && !force) {
      return base::FailedPrecondition("container " + id + " is running; stop it first or delete with force");
    }
    c->deleting = true;
    if (running && c->init->pidfd) {
      PidfdSignal(c->init->pidfd.get(), SIGKILL);
    } else if (running) {
      ::kill(c->init->pid, SIGKILL);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!c->init->exited && std::chrono::steady_clock::now() < deadline) {
      exit_cv_.wait_for(lock, std::chrono::milliseconds(100));
    }
    if (!c->init->exited) {
      c->deleting = false;
      return base::DeadlineExceeded("container " + id + " did not die after SIGKILL");
    }
  }
  Status cleaned = Cleanup(id, c->bundle, c->rootfs);
  std::lock_guard lock(mu_);
  if (!cleaned.ok()) {
    c->deleting = false;
    return cleaned.error().Wrap("deleting container " + id);
  }
  containers_.erase(id);
  return Status::Ok();
}

std::vector<v1::ContainerInfo> ContainerManager::List() {
  std::lock_guard lock(mu_);
  std::vector<v1::ContainerInfo> out;
  for (const auto& [id, c] : containers_) {
    v1::ContainerInfo info;
    info.set_id(id);
    info.set_pid(static_cast<uint32_t>(c->init->pid));
    info.set_state(c->init->exited    ? v1::ContainerInfo::STOPPED
                   : c->init->started ? v1::ContainerInfo::RUNNING
                                      : v1::ContainerInfo::CREATED);
    *info.mutable_status() = ToProto(c->init->exited, c->init->exit, c->oom_kills_seen > 0, c->init->started_at);
    out.push_back(std::move(info));
  }
  return out;
}

Result<uint32_t> ContainerManager::Exec(const std::string& container_id, const std::string& exec_id,
                                        const v1::ProcessSpec& spec) {
  std::shared_ptr<Container> c;
  {
    std::lock_guard lock(mu_);
    auto it = containers_.find(container_id);
    if (it == containers_.end()) {
      return base::NotFound("container " + container_id + " not found");
    }
    c = it->second;
    if (!c->init->started || c->init->exited || c->deleting) {
      return base::FailedPrecondition("container " + container_id + " is not running");
    }
    if (c->execs.count(exec_id) != 0) {
      return base::Error(base::ErrorCode::kAlreadyExists, "exec " + exec_id + " already exists");
    }
    if (c->execs.size() >= 256) {
      // Finished execs are kept for their exit status; drop the oldest finished one.
      for (auto e = c->execs.begin(); e != c->execs.end(); ++e) {
        if (e->second->exited && e->second->io->stdout_buffer().Drained()) {
          c->execs.erase(e);
          break;
        }
      }
      if (c->execs.size() >= 256) {
        return base::Error(base::ErrorCode::kResourceExhausted, "too many execs in container " + container_id);
      }
    }
    auto placeholder = std::make_shared<Process>();
    placeholder->exited = true;  // not signalable until it runs
    placeholder->exit.exit_code = 255;
    c->execs[exec_id] = placeholder;
  }
  auto drop_placeholder = [&] {
    std::lock_guard lock(mu_);
    c->execs.erase(exec_id);
  };
  std::string process_file = c->bundle + "/exec-" + exec_id + ".json";
  std::string pid_file = c->bundle + "/exec-" + exec_id + ".pid";
  // As Kubernetes expects, an exec runs as the container's user unless the request names one.
  auto user = spec.has_user() ? ResolveUserInRoot(spec.user(), c->rootfs) : base::Result<v1::User>(c->user);
  if (!user.ok()) {
    drop_placeholder();
    return user.error().Wrap("exec in " + container_id);
  }
  v1::ProcessSpec resolved_spec = ExecProcessSpec(c->process, spec);
  *resolved_spec.mutable_user() = *user;
  json process = BuildOciProcess(resolved_spec, c->privileged);
  auto written = base::WriteFileAtomic(process_file, process.dump(1, ' ', false, json::error_handler_t::replace), 0600);
  if (!written.ok()) {
    drop_placeholder();
    return written.error();
  }
  auto io = ProcessIo::Create(spec.tty(), spec.stdin(), spec.tty_rows(), spec.tty_columns());
  if (!io.ok()) {
    drop_placeholder();
    return io.error();
  }
  std::shared_ptr<ProcessIo> shared_io = std::move(io).value();
  auto ran = CrunWithStdio({"exec", "--detach", "--pid-file", pid_file, "--process", process_file, container_id},
                           *shared_io, c->bundle + "/exec-" + exec_id + ".log", std::chrono::seconds(60));
  ::unlink(process_file.c_str());
  if (!ran.ok()) {
    drop_placeholder();
    return ran.error().Wrap("exec in " + container_id);
  }
  auto pid = ReadPidFile(pid_file);
  ::unlink(pid_file.c_str());
  if (!pid.ok()) {
    drop_placeholder();
    return pid.error();
  }
  shared_io->StartAfterSpawn();
  auto proc = std::make_shared<Process>();
  proc->pid = *pid;
  proc->pidfd.Reset(PidfdOpen(*pid));
  proc->io = shared_io;
  proc->started = true;
  proc->started_at = std::chrono::system_clock::now();
  {
    std::lock_guard lock(mu_);
    c->execs[exec_id] = proc;
  }
  WatchProcess(container_id, exec_id, proc);
  return static_cast<uint32_t>(*pid);
}

Status ContainerManager::WriteStdin(const v1::ProcessRef& ref, const std::string& data, bool eof) {
  std::shared_ptr<ProcessIo> io;
  {
    std::lock_guard lock(mu_);
    CHRYS_ASSIGN_OR_RETURN(auto process, FindProcess(ref));
    io = process->io;
  }
  if (!io) {
    return base::FailedPrecondition("process has no stdio yet");
  }
  return io->WriteStdin(data, eof, std::chrono::seconds(10));
}

Status ContainerManager::Resize(const v1::ProcessRef& ref, uint32_t rows, uint32_t columns) {
  std::shared_ptr<ProcessIo> io;
  {
    std::lock_guard lock(mu_);
    CHRYS_ASSIGN_OR_RETURN(auto process, FindProcess(ref));
    io = process->io;
  }
  if (!io) {
    return base::FailedPrecondition("process has no stdio yet");
  }
  return io->Resize(rows, columns);
}

Result<std::shared_ptr<ProcessIo>> ContainerManager::Io(const v1::ProcessRef& ref) {
  std::lock_guard lock(mu_);
  CHRYS_ASSIGN_OR_RETURN(auto process, FindProcess(ref));
  if (!process->io) {
    return base::FailedPrecondition("process has no stdio yet");
  }
  return process->io;
}

Result<v1::ContainerStatsResponse> ContainerManager::Stats(const std::string& id) {
  {
    std::lock_guard lock(mu_);
    if (containers_.count(id) == 0) {
      return base::NotFound("container " + id + " not found");
    }
  }
  v1::ContainerStatsResponse resp;
  FillCgroupStats(std::string(kCgroupParent) + "/" + id, resp.mutable_stats());
  resp.set_rootfs_used_bytes(storage_.UpperUsage(id));
  return resp;
}

Result<v1::Resources> ContainerManager::UpdateResources(const std::string& id, const v1::Resources& resources) {
  {
    std::lock_guard lock(mu_);
    auto it = containers_.find(id);
    if (it == containers_.end()) {
      return base::NotFound("container " + id + " not found");
    }
    if (it->second->init->exited || it->second->deleting) {
      return base::FailedPrecondition("container " + id + " has exited; its resources can no longer change");
    }
  }
  // Written straight into the container's cgroup v2 files rather than through `crun update`: the cgroup is ours
  // (cgroupsPath /chrys/<id>), the files are the kernel's interface either way, a failed write names its file,
  // and a half-applied update is rolled back.
  std::string dir = std::string(kCgroupParent) + "/" + id;
  auto current = [&](const std::string& file) {
    auto text = base::ReadFile(dir + "/" + file, 4096);
    return text.ok() ? *text : std::string();
  };
  CHRYS_ASSIGN_OR_RETURN(auto writes, CgroupWritesFor(resources, current));
  CHRYS_RETURN_IF_ERROR(ApplyCgroupWrites(dir, writes));
  LogInfo("container %s: %zu cgroup limits updated", id.c_str(), writes.size());
  return ReadCgroupResources(dir, resources);
}

Result<v1::SandboxStatsResponse> ContainerManager::SandboxStats() {
  v1::SandboxStatsResponse resp;
  FillCgroupStats(kCgroupParent, resp.mutable_containers());
  auto meminfo = base::ReadFile("/proc/meminfo", 64 << 10);
  if (meminfo.ok()) {
    // "MemTotal:  123 kB": the key carries its colon.
    resp.set_memory_total_bytes(CgroupKey(*meminfo, "MemTotal:") * 1024);
    resp.set_memory_available_bytes(CgroupKey(*meminfo, "MemAvailable:") * 1024);
  }
  auto stat = base::ReadFile("/proc/stat", 64 << 10);
  if (stat.ok()) {
    std::istringstream in(*stat);
    std::string cpu;
    uint64_t user = 0, nice = 0, system = 0;
    in >> cpu >> user >> nice >> system;
    long hz = ::sysconf(_SC_CLK_TCK);
    resp.set_guest_cpu_usage_usec((user + nice + system) * 1000000 / static_cast<uint64_t>(hz > 0 ? hz : 100));
  }
  auto load = base::ReadFile("/proc/loadavg", 256);
  if (load.ok()) {
    resp.set_load_average_milli(static_cast<uint64_t>(std::strtod(load->c_str(), nullptr) * 1000));
  }
  std::lock_guard lock(mu_);
  resp.set_num_containers(static_cast<uint32_t>(containers_.size()));
  return resp;
}

void ContainerManager::StopAll(std::chrono::milliseconds grace) {
  std::vector<std::shared_ptr<Container>> all;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (auto& [id, c] : containers_) {
      all.push_back(c);
      if (!c->init->exited && c->init->pidfd) {
        PidfdSignal(c->init->pidfd.get(), grace.count() > 0 ? SIGTERM : SIGKILL);
      }
    }
  }
  exit_cv_.notify_all();
  auto deadline = std::chrono::steady_clock::now() + grace;
  {
    std::unique_lock lock(mu_);
    auto all_exited = [&] {
      for (auto& c : all) {
        if (!c->init->exited) {
          return false;
        }
      }
      return true;
    };
    while (!all_exited() && std::chrono::steady_clock::now() < deadline) {
      exit_cv_.wait_for(lock, std::chrono::milliseconds(100));
    }
    for (auto& c : all) {
      if (!c->init->exited && c->init->pidfd) {
        PidfdSignal(c->init->pidfd.get(), SIGKILL);
      }
    }
  }
  for (auto& c : all) {
    Status s = Delete(c->id, true);
    if (!s.ok()) {
      LogWarn("shutdown: %s", s.error().message().c_str());
    }
  }
}

}  // namespace chrys::guest
