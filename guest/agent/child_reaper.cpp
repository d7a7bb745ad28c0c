#include "guest/agent/child_reaper.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <future>

namespace chrys::guest {
namespace {

constexpr size_t kMaxUnclaimed = 4096;
constexpr size_t kMaxRunOutput = 64 << 10;

}  // namespace

ProcessExit DecodeWaitStatus(int status) {
  ProcessExit e;
  e.at = std::chrono::system_clock::now();
  if (WIFEXITED(status)) {
    e.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    e.signal = WTERMSIG(status);
    e.exit_code = 128 + e.signal;
  }
  return e;
}

base::Status ChildReaper::Start() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  if (::pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) {
    return base::SystemError("blocking SIGCHLD");
  }
  int fd = ::signalfd(-1, &set, SFD_CLOEXEC);
  if (fd < 0) {
    return base::SystemError("signalfd(SIGCHLD)");
  }
  ChildReaper& self = Instance();
  self.thread_ = std::thread([fd, &self] { self.Loop(fd); });
  self.thread_.detach();
  return base::Status::Ok();
}

ChildReaper& ChildReaper::Instance() {
  static ChildReaper* instance = new ChildReaper();
  return *instance;
}

void ChildReaper::Loop(int signal_fd) {
  for (;;) {
    signalfd_siginfo info;
    ssize_t n = ::read(signal_fd, &info, sizeof(info));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    // Signals coalesce: reap everything that is ready.
    for (;;) {
      int status = 0;
      pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) {
        break;
      }
      Dispatch(pid, status);
    }
  }
}

void ChildReaper::Dispatch(pid_t pid, int status) {
  ProcessExit exit = DecodeWaitStatus(status);
  ExitCallback callback;
  {
    std::lock_guard lock(mu_);
    auto it = watchers_.find(pid);
    if (it == watchers_.end()) {
      if (unclaimed_.size() >= kMaxUnclaimed) {
        unclaimed_.erase(unclaimed_.begin());
      }
      unclaimed_[pid] = exit;
      return;
    }
    callback = std::move(it->second);
    watchers_.erase(it);
  }
  callback(exit);
}

void ChildReaper::Watch(pid_t pid, ExitCallback on_exit) {
  std::optional<ProcessExit> already;
  {
    std::lock_guard lock(mu_);
    auto it = unclaimed_.find(pid);
    if (it != unclaimed_.end()) {
      already = it->second;
      unclaimed_.erase(it);
    } else {
      watchers_[pid] = std::move(on_exit);
    }
  }
  if (already) {
    on_exit(*already);
  }
}

base::Result<pid_t> ChildReaper::Spawn(const SpawnSpec& spec, ExitCallback on_exit) {
  if (spec.argv.empty() || spec.argv[0].empty() || spec.argv[0][0] != '/') {
    return base::InvalidArgument("spawn: argv[0] must be an absolute path");
  }
  // Everything the child touches is prepared before fork: after it, only async-signal-safe calls.
  std::vector<std::string> argv_s = spec.argv;
  std::vector<std::string> env_s = spec.env;
  if (env_s.empty()) {
    env_s.emplace_back("PATH=/usr/sbin:/usr/bin:/sbin:/bin");
  }
  std::vector<char*> argv;
  for (auto& a : argv_s) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& e : env_s) {
    envp.push_back(e.data());
  }
  envp.push_back(nullptr);
  base::UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!devnull) {
    return base::SystemError("open /dev/null");
  }
  int in = spec.stdin_fd >= 0 ? spec.stdin_fd : devnull.get();
  int out = spec.stdout_fd >= 0 ? spec.stdout_fd : devnull.get();
  int err = spec.stderr_fd >= 0 ? spec.stderr_fd : devnull.get();
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    return base::SystemError("pipe2");
  }
  base::UniqueFd report_read(report[0]);
  base::UniqueFd report_write(report[1]);

  std::unique_lock lock(mu_);
  pid_t pid = ::fork();
  if (pid < 0) {
    return base::SystemError("fork");
  }
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    if (spec.new_session) {
      ::setsid();
    }
    // dup2 to fds 0..2 clears O_CLOEXEC; move sources out of the way first in case they are 0..2.
    int fds[3] = {::fcntl(in, F_DUPFD_CLOEXEC, 3), ::fcntl(out, F_DUPFD_CLOEXEC, 3), ::fcntl(err, F_DUPFD_CLOEXEC, 3)};
    for (int i = 0; i < 3; ++i) {
      if (fds[i] < 0 || ::dup2(fds[i], i) < 0) {
        int e = errno;
        (void)!::write(report[1], &e, sizeof(e));
        ::_exit(127);
      }
    }
    ::execve(argv[0], argv.data(), envp.data());
    int e = errno;
    (void)!::write(report[1], &e, sizeof(e));
    ::_exit(127);
  }
  // A stale unclaimed exit with a recycled pid must not be mistaken for this child's.
  unclaimed_.erase(pid);
  watchers_[pid] = std::move(on_exit);
  lock.unlock();

  report_write.Reset();
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(report_read.get(), &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  if (n == sizeof(child_errno)) {
    // The watcher still runs when the failed child is reaped; callers treat that as a normal exit.
    return base::SystemError("exec " + spec.argv[0], child_errno);
  }
  return pid;
}

base::Result<ChildReaper::RunResult> ChildReaper::Run(const std::vector<std::string>& argv,
                                                      std::chrono::milliseconds timeout,
                                                      const std::string& stdin_data) {
  int out_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    return base::SystemError("pipe2");
  }
  base::UniqueFd out_read(out_pipe[0]);
  base::UniqueFd out_write(out_pipe[1]);
  base::UniqueFd in_read;
  base::UniqueFd in_write;
  if (!stdin_data.empty()) {
    int in_pipe[2];
    if (::pipe2(in_pipe, O_CLOEXEC) != 0) {
      return base::SystemError("pipe2");
    }
    in_read.Reset(in_pipe[0]);
    in_write.Reset(in_pipe[1]);
  }
  auto done = std::make_shared<std::promise<ProcessExit>>();
  auto exited = done->get_future();
  SpawnSpec spec;
  spec.argv = argv;
  spec.stdin_fd = in_read.get();
  spec.stdout_fd = out_write.get();
  spec.stderr_fd = out_write.get();
  CHRYS_ASSIGN_OR_RETURN(pid_t pid, Spawn(spec, [done](const ProcessExit& e) { done->set_value(e); }));
  out_write.Reset();
  in_read.Reset();
  if (in_write) {
    // Helpers here read small inputs; a helper that does not read gets EPIPE-free truncation.
    ::fcntl(in_write.get(), F_SETFL, O_NONBLOCK);
    (void)!::write(in_write.get(), stdin_data.data(), stdin_data.size());
    in_write.Reset();
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string output;
  bool timed_out = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{out_read.get(), POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) {
      continue;
    }
    if (r <= 0) {
      timed_out = r == 0;
      break;
    }
    char buf[8192];
    ssize_t n = ::read(out_read.get(), buf, sizeof(buf));
    if (n <= 0) {
      break;
    }
    output.append(buf, static_cast<size_t>(n));
    if (output.size() > kMaxRunOutput) {
      output.erase(0, output.size() - kMaxRunOutput);
    }
  }
  if (timed_out) {
    ::kill(pid, SIGKILL);
  }
  auto left = deadline - std::chrono::steady_clock::now();
  if (exited.wait_for(timed_out ? std::chrono::seconds(5)
                                : std::max<std::chrono::steady_clock::duration>(left, std::chrono::seconds(1))) !=
      std::future_status::ready) {
    ::kill(pid, SIGKILL);
    exited.wait_for(std::chrono::seconds(5));
  }
  if (timed_out) {
    return base::DeadlineExceeded(argv[0] + " did not finish within " + std::to_string(timeout.count()) + " ms");
  }
  if (exited.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
    return base::Internal(argv[0] + " did not exit after closing its output");
  }
  return RunResult{exited.get(), std::move(output)};
}

}  // namespace chrys::guest
