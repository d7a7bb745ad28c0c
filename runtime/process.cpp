#include "runtime/process.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "base/file_util.h"
#include "base/page_runs.h"
#include "base/text.h"

extern char** environ;

namespace chrys::runtime {
namespace {

using base::Result;
using base::Status;
using base::UniqueFd;

// Writes all of `len` bytes; only async-signal-safe calls.
void WriteAll(int fd, const void* data, size_t len) {
  const char* p = static_cast<const char*>(data);
  while (len > 0) {
    ssize_t n = ::write(fd, p, len);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return;
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
}

// Messages from the grandchild to the launcher: its pid first, then (only on failure) the failed step and errno.
struct ChildFailure {
  int32_t step;
  int32_t err;
};

enum Step : int32_t { kSetsid = 1, kFork, kSetns, kCgroup, kStdio, kFds, kExec, kMemoryCopy };

const char* StepName(int32_t step) {
  switch (step) {
    case kSetsid:
      return "setsid";
    case kFork:
      return "fork";
    case kSetns:
      return "joining the network namespace";
    case kCgroup:
      return "joining the cgroup";
    case kStdio:
      return "redirecting stdio";
    case kFds:
      return "passing file descriptors";
    case kExec:
      return "exec";
    case kMemoryCopy:
      return "copying the template's memory";
    default:
      return "unknown step";
  }
}

[[noreturn]] void Fail(int report_fd, int32_t step) {
  ChildFailure f{step, errno};
  WriteAll(report_fd, &f, sizeof f);
  ::_exit(127);
}

// Formats a non-negative int without allocation.
size_t FormatPid(pid_t pid, char* buf, size_t size) {
  char tmp[16];
  size_t n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + pid % 10);
    pid /= 10;
  } while (pid > 0 && n < sizeof tmp);
  size_t i = 0;
  while (n > 0 && i + 1 < size) {
    buf[i++] = tmp[--n];
  }
  buf[i++] = '\n';
  return i;
}

struct PreparedLaunch {
  std::vector<std::string> argv_storage;
  std::vector<char*> argv;
  UniqueFd netns;
  std::vector<UniqueFd> cgroup_procs;
  UniqueFd log;
  UniqueFd devnull;
  int copy_memory_from = -1;
  mutable std::vector<char> copy_buffer;  // allocated before fork: the child must not allocate
};

// Copies the non-zero pages of `src` into a new memfd of its size; returns the memfd or -1 (errno set). Holes and
// zero pages stay holes, so the copy holds only what the guest wrote. Only async-signal-safe calls.
int CopyMemoryToMemfd(int src, char* buffer, size_t buffer_size) {
  off_t size = ::lseek(src, 0, SEEK_END);
  int dst = static_cast<int>(::syscall(SYS_memfd_create, "chrys-guest-ram", MFD_CLOEXEC));
  if (size < 0 || dst < 0 || ::ftruncate(dst, size) != 0) {
    return -1;
  }
  int err = base::ForEachPageRun(src, buffer, buffer_size, [dst](off_t at, const char* bytes, size_t len, bool zero) {
    if (zero) {
      return 0;
    }
    return ::pwrite(dst, bytes, len, at) == static_cast<ssize_t>(len) ? 0 : (errno != 0 ? errno : EIO);
  });
  if (err != 0) {
    errno = err;
    return -1;
  }
  return dst;
}

[[noreturn]] void RunGrandchild(const PreparedLaunch& p, const std::vector<int>& pass_fds, int report_fd) {
  pid_t self = ::getpid();
  WriteAll(report_fd, &self, sizeof self);
  if (p.netns.valid() && ::setns(p.netns.get(), CLONE_NEWNET) != 0) {
    Fail(report_fd, kSetns);
  }
  for (const auto& fd : p.cgroup_procs) {
    char buf[24];
    size_t n = FormatPid(self, buf, sizeof buf);
    if (::write(fd.get(), buf, n) < 0) {
      Fail(report_fd, kCgroup);
    }
  }
  int out = p.log.valid() ? p.log.get() : p.devnull.get();
  if (::dup2(p.devnull.get(), STDIN_FILENO) < 0 || ::dup2(out, STDOUT_FILENO) < 0 || ::dup2(out, STDERR_FILENO) < 0) {
    Fail(report_fd, kStdio);
  }
  // Move the report pipe and the passed fds out of the way first, so renumbering them to 3.. cannot clobber any.
  int report_hi = ::fcntl(report_fd, F_DUPFD_CLOEXEC, 1000);
  if (report_hi < 0) {
    Fail(report_fd, kFds);
  }
  report_fd = report_hi;
  int high[257];
  size_t n = pass_fds.size() < 256 ? pass_fds.size() : 256;
  for (size_t i = 0; i < n; ++i) {
    high[i] = ::fcntl(pass_fds[i], F_DUPFD_CLOEXEC, 1001);
    if (high[i] < 0) {
      Fail(report_fd, kFds);
    }
  }
  if (p.copy_memory_from >= 0) {
    // After joining the cgroups above: the copy's pages are charged to the VM, not to chrysd.
    int copy = CopyMemoryToMemfd(p.copy_memory_from, p.copy_buffer.data(), p.copy_buffer.size());
    if (copy < 0) {
      Fail(report_fd, kMemoryCopy);
    }
    high[n] = ::fcntl(copy, F_DUPFD_CLOEXEC, 1001);
    if (high[n] < 0) {
      Fail(report_fd, kFds);
    }
    ++n;
  }
  for (size_t i = 0; i < n; ++i) {
    if (::dup2(high[i], static_cast<int>(3 + i)) < 0) {  // dup2 leaves the new fd without CLOEXEC
      Fail(report_fd, kFds);
    }
  }
  // Everything else we hold is closed at exec; the report pipe too, which tells the launcher exec succeeded.
  if (::close_range(static_cast<unsigned>(3 + n), ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    Fail(report_fd, kFds);
  }
  for (int sig : {SIGPIPE, SIGCHLD, SIGTERM, SIGINT, SIGHUP}) {
    ::signal(sig, SIG_DFL);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(p.argv[0], p.argv.data(), environ);
  Fail(report_fd, kExec);
}

Result<pid_t> ReadFull(int fd, void* buf, size_t len, bool& eof) {
  size_t got = 0;
  eof = false;
  while (got < len) {
    ssize_t n = ::read(fd, static_cast<char*>(buf) + got, len - got);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return base::SystemError("reading the launch report pipe");
    }
    if (n == 0) {
      eof = true;
      break;
    }
    got += static_cast<size_t>(n);
  }
  return static_cast<pid_t>(got);
}

}  // namespace

Result<uint64_t> ProcessStartTicks(pid_t pid) {
  CHRYS_ASSIGN_OR_RETURN(std::string stat, base::ReadFile("/proc/" + std::to_string(pid) + "/stat", 4096));
  size_t close = stat.rfind(')');
  if (close == std::string::npos) {
    return base::Internal("malformed /proc/" + std::to_string(pid) + "/stat");
  }
  // Fields after the comm start at field 3 (state); starttime is field 22.
  size_t pos = close + 2;
  for (int field = 3; field < 22; ++field) {
    pos = stat.find(' ', pos);
    if (pos == std::string::npos) {
      return base::Internal("short /proc/" + std::to_string(pid) + "/stat");
    }
    ++pos;
  }
  return std::strtoull(stat.c_str() + pos, nullptr, 10);
}

Result<std::vector<std::string>> ProcessCmdline(pid_t pid) {
  CHRYS_ASSIGN_OR_RETURN(std::string raw, base::ReadFile("/proc/" + std::to_string(pid) + "/cmdline", 1 << 20));
  return base::SplitFields(raw, '\0');
}

bool ProcessRunning(pid_t pid) {
  auto status = base::ReadFile("/proc/" + std::to_string(pid) + "/stat", 4096);
  if (!status.ok()) {
    return false;
  }
  size_t close = status->rfind(')');
  return close != std::string::npos && close + 2 < status->size() && (*status)[close + 2] != 'Z' &&
         (*status)[close + 2] != 'X';
}

Result<DetachedProcess> DetachedProcess::Launch(const DetachedLaunchSpec& spec) {
  if (spec.argv.empty() || spec.argv[0].empty() || spec.argv[0][0] != '/') {
    return base::InvalidArgument("launch: argv[0] must be an absolute path");
  }
  if (spec.pass_fds.size() > 200) {
    return base::InvalidArgument("launch: too many fds to pass");
  }
  PreparedLaunch p;
  p.argv_storage = spec.argv;
  for (auto& a : p.argv_storage) {
    p.argv.push_back(a.data());
  }
  p.argv.push_back(nullptr);
  if (!spec.netns_path.empty()) {
    p.netns.Reset(::open(spec.netns_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!p.netns.valid()) {
      return base::SystemError("opening network namespace " + spec.netns_path);
    }
  }
  for (const auto& file : spec.cgroup_procs_files) {
    UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd.valid()) {
      return base::SystemError("opening " + file);
    }
    p.cgroup_procs.push_back(std::move(fd));
  }
  if (!spec.output_log_path.empty()) {
    p.log.Reset(::open(spec.output_log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
    if (!p.log.valid()) {
      return base::SystemError("opening " + spec.output_log_path);
    }
  }
  p.devnull.Reset(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!p.devnull.valid()) {
    return base::SystemError("opening /dev/null");
  }
  for (int fd : spec.pass_fds) {
    if (::fcntl(fd, F_GETFD) < 0) {
      return base::InvalidArgument("launch: fd " + std::to_string(fd) + " to pass is not open");
    }
  }
  if (spec.copy_memory_from_fd >= 0) {
    if (::fcntl(spec.copy_memory_from_fd, F_GETFD) < 0) {
      return base::InvalidArgument("launch: the memory file to copy (fd " + std::to_string(spec.copy_memory_from_fd) +
                                   ") is not open");
    }
    p.copy_memory_from = spec.copy_memory_from_fd;
    p.copy_buffer.resize(1 << 20);
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return base::SystemError("pipe2");
  }
  UniqueFd report_read(pipe_fds[0]);
  UniqueFd report_write(pipe_fds[1]);

  pid_t middle = ::fork();
  if (middle < 0) {
    return base::SystemError("fork");
  }
  if (middle == 0) {
    if (::setsid() < 0) {
      pid_t none = 0;
      WriteAll(report_write.get(), &none, sizeof none);
      Fail(report_write.get(), kSetsid);
    }
    pid_t grandchild = ::fork();
    if (grandchild < 0) {
      pid_t none = 0;
      WriteAll(report_write.get(), &none, sizeof none);
      Fail(report_write.get(), kFork);
    }
    if (grandchild == 0) {
      RunGrandchild(p, spec.pass_fds, report_write.get());
    }
    ::_exit(0);
  }
  report_write.Reset();
  int middle_status = 0;
  while (::waitpid(middle, &middle_status, 0) < 0 && errno == EINTR) {
  }

  pid_t child = 0;
  bool eof = false;
  CHRYS_ASSIGN_OR_RETURN(pid_t got, ReadFull(report_read.get(), &child, sizeof child, eof));
  if (got != sizeof child || child <= 0) {
    // setsid or the second fork failed in the middle process, which wrote a failure right away (or nothing).
    ChildFailure f{kFork, EAGAIN};
    (void)ReadFull(report_read.get(), &f, sizeof f, eof);
    return base::Internal("launching " + spec.argv[0] + ": " + StepName(f.step) + " failed: " + std::strerror(f.err));
  }
  // Open the pidfd before anything else so the pid cannot be recycled under us.
  DetachedProcess proc;
  proc.pid_ = child;
  proc.pidfd_.Reset(static_cast<int>(::syscall(SYS_pidfd_open, child, 0)));
  ChildFailure failure{0, 0};
  CHRYS_ASSIGN_OR_RETURN(pid_t fail_bytes, ReadFull(report_read.get(), &failure, sizeof failure, eof));
  if (fail_bytes == sizeof failure) {
    proc.WaitExit(std::chrono::seconds(2));
    std::string what = StepName(failure.step);
    return base::SystemError("launching " + spec.argv[0] + ": " + what, failure.err);
  }
  if (!proc.pidfd_.valid()) {
    return base::SystemError("pidfd_open for " + spec.argv[0]);
  }
  auto ticks = ProcessStartTicks(child);
  if (!ticks.ok()) {
    return base::Internal(spec.argv[0] + " exited right after exec");
  }
  proc.start_ticks_ = *ticks;
  return proc;
}

Result<DetachedProcess> DetachedProcess::Attach(pid_t pid, uint64_t start_ticks, const std::string& expected_binary) {
  if (pid <= 0) {
    return base::InvalidArgument("attach: invalid pid " + std::to_string(pid));
  }
  DetachedProcess proc;
  proc.pid_ = pid;
  proc.pidfd_.Reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!proc.pidfd_.valid()) {
    return base::NotFound("process " + std::to_string(pid) + " is gone");
  }
  if (!ProcessRunning(pid)) {
    return base::NotFound("process " + std::to_string(pid) + " has exited");
  }
  CHRYS_ASSIGN_OR_RETURN(uint64_t ticks, ProcessStartTicks(pid));
  if (ticks != start_ticks) {
    return base::NotFound("pid " + std::to_string(pid) + " now belongs to another process (start time differs)");
  }
  CHRYS_ASSIGN_OR_RETURN(auto cmdline, ProcessCmdline(pid));
  if (cmdline.empty() || cmdline[0] != expected_binary) {
    return base::NotFound("pid " + std::to_string(pid) + " runs " + (cmdline.empty() ? "nothing" : cmdline[0]) +
                          ", not " + expected_binary);
  }
  proc.start_ticks_ = ticks;
  return proc;
}

bool DetachedProcess::Alive() const {
  if (!pidfd_.valid()) {
    return false;
  }
  pollfd pfd{pidfd_.get(), POLLIN, 0};
  return ::poll(&pfd, 1, 0) == 0;
}

bool DetachedProcess::WaitExit(std::chrono::milliseconds timeout) {
  if (!pidfd_.valid()) {
    return true;
  }
  pollfd pfd{pidfd_.get(), POLLIN, 0};
  int r;
  do {
    r = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
  } while (r < 0 && errno == EINTR);
  if (r <= 0) {
    return false;
  }
  // Reap it when it was reparented to us (we are a subreaper) so no zombie stays behind; ECHILD otherwise.
  siginfo_t info{};
  ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_.get()), &info, WEXITED | WNOHANG);
  return true;
}

Status DetachedProcess::Signal(int sig) const {
  if (!pidfd_.valid()) {
    return base::FailedPrecondition("no process");
  }
  if (::syscall(SYS_pidfd_send_signal, pidfd_.get(), sig, nullptr, 0) != 0) {
    if (errno == ESRCH) {
      return Status::Ok();
    }
    return base::SystemError("signalling pid " + std::to_string(pid_));
  }
  return Status::Ok();
}

Status DetachedProcess::Terminate(std::chrono::milliseconds term_grace) {
  if (!pidfd_.valid()) {
    return Status::Ok();
  }
  if (WaitExit(std::chrono::milliseconds(0))) {
    return Status::Ok();
  }
  CHRYS_RETURN_IF_ERROR(Signal(SIGTERM));
  if (WaitExit(term_grace)) {
    return Status::Ok();
  }
  CHRYS_RETURN_IF_ERROR(Signal(SIGKILL));
  if (WaitExit(std::chrono::seconds(10))) {
    return Status::Ok();
  }
  return base::Internal("pid " + std::to_string(pid_) + " survived SIGKILL for 10s");
}

}  // namespace chrys::runtime
