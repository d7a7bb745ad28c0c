#include "base/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <map>

#include "base/unique_fd.h"

extern char** environ;

namespace chrys::base {
namespace {

using Clock = std::chrono::steady_clock;

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};

Result<Pipe> MakePipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return SystemError("pipe2");
  }
  return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

std::vector<std::string> BuildEnv(const CommandSpec& spec) {
  std::vector<std::string> base;
  if (spec.env) {
    base = *spec.env;
  } else {
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      base.emplace_back(*e);
    }
  }
  // Later entries win, keeping first-seen order.
  std::vector<std::string> order;
  std::map<std::string, std::string> values;
  auto add = [&](const std::string& kv) {
    std::string key = kv.substr(0, kv.find('='));
    if (values.find(key) == values.end()) {
      order.push_back(key);
    }
    values[key] = kv;
  };
  for (const auto& kv : base) {
    add(kv);
  }
  for (const auto& kv : spec.extra_env) {
    add(kv);
  }
  std::vector<std::string> out;
  out.reserve(order.size());
  for (const auto& key : order) {
    out.push_back(values[key]);
  }
  return out;
}

std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (auto& s : strings) {
    out.push_back(s.data());
  }
  out.push_back(nullptr);
  return out;
}

// Sends errno to the parent through the exec report pipe and ends the child.
[[noreturn]] void ReportAndExit(int report_fd, int err) {
  ssize_t ignored = ::write(report_fd, &err, sizeof err);
  (void)ignored;
  ::_exit(127);
}

// Child side between fork and exec: only async-signal-safe calls.
[[noreturn]] void ExecChild(const CommandSpec& spec, int in_fd, int out_fd, int err_fd, char* const* argv,
                            char* const* envp, int report_fd) {
  auto fail = [report_fd](int err) { ReportAndExit(report_fd, err); };
  if (spec.netns_fd >= 0 && ::setns(spec.netns_fd, CLONE_NEWNET) != 0) {
    fail(errno);
  }
  if (!spec.working_dir.empty() && ::chdir(spec.working_dir.c_str()) != 0) {
    fail(errno);
  }
  if (::dup2(in_fd, STDIN_FILENO) < 0 || ::dup2(out_fd, STDOUT_FILENO) < 0 || ::dup2(err_fd, STDERR_FILENO) < 0) {
    fail(errno);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execvpe(argv[0], argv, envp);
  ReportAndExit(report_fd, errno);
}

void AppendBounded(std::string& dst, const char* data, size_t n, size_t limit, bool& truncated) {
  if (dst.size() >= limit) {
    truncated = true;
    return;
  }
  size_t take = std::min(n, limit - dst.size());
  dst.append(data, take);
  if (take < n) {
    truncated = true;
  }
}

}  // namespace

std::string CommandResult::DescribeExit() const {
  if (term_signal != 0) {
    return std::string("killed by signal ") + std::to_string(term_signal) + " (" + ::strsignal(term_signal) + ")";
  }
  return "exited with status " + std::to_string(exit_code);
}

std::string Tail(const std::string& text, size_t max_bytes) {
  std::string t = text.size() > max_bytes ? "..." + text.substr(text.size() - max_bytes) : text;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ' || t.back() == '\r')) {
    t.pop_back();
  }
  return t;
}

Result<CommandResult> RunCommand(const CommandSpec& spec) {
  if (spec.argv.empty() || spec.argv[0].empty()) {
    return InvalidArgument("RunCommand: empty argv");
  }
  CHRYS_ASSIGN_OR_RETURN(Pipe in, MakePipe());
  CHRYS_ASSIGN_OR_RETURN(Pipe out, MakePipe());
  CHRYS_ASSIGN_OR_RETURN(Pipe err, MakePipe());
  CHRYS_ASSIGN_OR_RETURN(Pipe report, MakePipe());

  std::vector<std::string> argv_strings = spec.argv;
  std::vector<std::string> env_strings = BuildEnv(spec);
  std::vector<char*> argv = CStrings(argv_strings);
  std::vector<char*> envp = CStrings(env_strings);

  pid_t pid = ::fork();
  if (pid < 0) {
    return SystemError("fork for " + spec.argv[0]);
  }
  if (pid == 0) {
    ExecChild(spec, in.read.get(), out.write.get(), err.write.get(), argv.data(), envp.data(), report.write.get());
  }
  in.read.Reset();
  out.write.Reset();
  err.write.Reset();
  report.write.Reset();

  // The exec report pipe closes on a successful exec (O_CLOEXEC) or carries errno on failure.
  int exec_errno = 0;
  ssize_t got;
  do {
    got = ::read(report.read.get(), &exec_errno, sizeof exec_errno);
  } while (got < 0 && errno == EINTR);
  if (got == static_cast<ssize_t>(sizeof exec_errno)) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    return SystemError("start " + spec.argv[0], exec_errno);
  }

  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) {
    Error e = SystemError("pidfd_open");
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return e;
  }

  ::fcntl(in.write.get(), F_SETFL, O_NONBLOCK);
  ::signal(SIGPIPE, SIG_IGN);
  size_t stdin_done = 0;
  if (spec.stdin_data.empty()) {
    in.write.Reset();
  }

  CommandResult result;
  const auto deadline = Clock::now() + spec.timeout;
  bool exited = false;
  auto exited_at = Clock::time_point::max();
  char buf[65536];
  while (out.read || err.read || !exited) {
    auto now = Clock::now();
    if (now >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      std::string message = spec.argv[0] + " did not finish within " +
                            std::to_string(spec.timeout.count()) + " ms and was killed";
      if (!result.stderr_data.empty()) {
        message += "; stderr: " + Tail(result.stderr_data);
      }
      return DeadlineExceeded(message);
    }
    // Once the child has exited, give grandchildren holding the pipes a short grace, then stop reading.
    if (exited && now - exited_at > std::chrono::milliseconds(200)) {
      break;
    }
    std::vector<pollfd> fds;
    enum Slot { kStdin, kStdout, kStderr, kPid };
    std::vector<Slot> slots;
    if (in.write) {
      fds.push_back({in.write.get(), POLLOUT, 0});
      slots.push_back(kStdin);
    }
    if (out.read) {
      fds.push_back({out.read.get(), POLLIN, 0});
      slots.push_back(kStdout);
    }
    if (err.read) {
      fds.push_back({err.read.get(), POLLIN, 0});
      slots.push_back(kStderr);
    }
    if (!exited) {
      fds.push_back({pidfd.get(), POLLIN, 0});
      slots.push_back(kPid);
    }
    auto wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1;
    if (exited) {
      wait_ms = std::min<long>(wait_ms, 50);
    }
    int n = ::poll(fds.data(), fds.size(), static_cast<int>(std::min<long>(wait_ms, 1000)));
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      Error e = SystemError("poll");
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      return e;
    }
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents == 0) {
        continue;
      }
      switch (slots[i]) {
        case kStdin: {
          ssize_t w = ::write(in.write.get(), spec.stdin_data.data() + stdin_done, spec.stdin_data.size() - stdin_done);
          if (w > 0) {
            stdin_done += static_cast<size_t>(w);
          }
          if ((w < 0 && errno != EAGAIN && errno != EINTR) || stdin_done == spec.stdin_data.size()) {
            in.write.Reset();
          }
          break;
        }
        case kStdout:
        case kStderr: {
          UniqueFd& fd = slots[i] == kStdout ? out.read : err.read;
          std::string& dst = slots[i] == kStdout ? result.stdout_data : result.stderr_data;
          ssize_t r = ::read(fd.get(), buf, sizeof buf);
          if (r > 0) {
            AppendBounded(dst, buf, static_cast<size_t>(r), spec.max_output_bytes, result.output_truncated);
          } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
            fd.Reset();
          }
          break;
        }
        case kPid:
          exited = true;
          exited_at = Clock::now();
          break;
      }
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.term_signal = WTERMSIG(status);
  }
  return result;
}

}  // namespace chrys::base
