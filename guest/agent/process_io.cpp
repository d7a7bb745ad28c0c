#include "guest/agent/process_io.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

namespace chrys::guest {

uint64_t OutputActivity::Seen() {
  std::lock_guard lock(mu_);
  return events_;
}

void OutputActivity::Signal() {
  {
    std::lock_guard lock(mu_);
    ++events_;
  }
  cv_.notify_all();
}

void OutputActivity::WaitAfter(uint64_t seen, std::chrono::milliseconds wait) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, wait, [&] { return events_ != seen; });
}

OutputBuffer::~OutputBuffer() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (wake_) {
    uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof(one));
  }
  if (reader_.joinable()) {
    reader_.join();
  }
}

void OutputBuffer::StartReading(base::UniqueFd fd) {
  // The destructor stops a reader whose writer never closes through this eventfd; no timeout needed.
  wake_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  reader_ = std::thread([this, owned = std::make_shared<base::UniqueFd>(std::move(fd))] {
    char buf[32 << 10];
    while (!stop_) {
      pollfd p[2] = {{owned->get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
      // Without the eventfd (out of fds), fall back to a timeout for the destructor's sake.
      int r = ::poll(p, wake_ ? 2 : 1, wake_ ? -1 : 200);
      if (r < 0 && errno != EINTR) {
        break;
      }
      if (r <= 0 || p[0].revents == 0) {
        continue;
      }
      ssize_t n = ::read(owned->get(), buf, sizeof(buf));
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
        continue;
      }
      if (n <= 0) {
        break;  // EOF, or EIO from a pty with no slave left
      }
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stop_ || data_.size() < capacity_; });
        data_.append(buf, static_cast<size_t>(n));
        for (auto& tap : taps_) {
          tap->Push(buf, static_cast<size_t>(n));
        }
        cv_.notify_all();
      }
      SignalActivity();
    }
    MarkEof();
  });
}

void OutputBuffer::Append(const char* data, size_t size) {
  {
    std::lock_guard lock(mu_);
    data_.append(data, size);
    for (auto& tap : taps_) {
      tap->Push(data, size);
    }
    cv_.notify_all();
  }
  SignalActivity();
}

void OutputBuffer::MarkEof() {
  {
    std::lock_guard lock(mu_);
    eof_ = true;
    for (auto& tap : taps_) {
      tap->End();
    }
    taps_.clear();
    cv_.notify_all();
  }
  SignalActivity();
}

std::shared_ptr<OutputTap> OutputBuffer::Tap(size_t capacity) {
  auto tap = std::make_shared<OutputTap>(capacity);
  std::lock_guard lock(mu_);
  if (eof_) {
    tap->End();
  } else {
    taps_.push_back(tap);
  }
  return tap;
}

void OutputBuffer::Untap(const std::shared_ptr<OutputTap>& tap) {
  std::lock_guard lock(mu_);
  std::erase(taps_, tap);
}

void OutputTap::Push(const char* data, size_t size) {
  std::lock_guard lock(mu_);
  if (ended_) {
    return;
  }
  if (data_.size() + size > capacity_) {
    overflowed_ = true;
    ended_ = true;
    data_.clear();
  } else {
    data_.append(data, size);
  }
  cv_.notify_all();
}

void OutputTap::End() {
  std::lock_guard lock(mu_);
  ended_ = true;
  cv_.notify_all();
}

void OutputTap::Close() {
  std::lock_guard lock(mu_);
  ended_ = true;
  data_.clear();
  cv_.notify_all();
}

bool OutputTap::overflowed() {
  std::lock_guard lock(mu_);
  return overflowed_;
}

bool OutputTap::Take(std::string& out, size_t max, std::chrono::milliseconds wait) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, wait, [&] { return !data_.empty() || ended_; });
  size_t n = std::min(max, data_.size());
  out.assign(data_, 0, n);
  data_.erase(0, n);
  return !(ended_ && data_.empty() && n == 0);
}

bool OutputBuffer::Take(std::string& out, size_t max, std::chrono::milliseconds wait) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, wait, [&] { return !data_.empty() || eof_ || stop_; });
  size_t n = std::min(max, data_.size());
  out.assign(data_, 0, n);
  data_.erase(0, n);
  cv_.notify_all();
  return !(eof_ && data_.empty() && n == 0);
}

void OutputBuffer::PutBack(const std::string& data) {
  std::lock_guard lock(mu_);
  data_.insert(0, data);
  cv_.notify_all();
}

bool OutputBuffer::Drained() {
  std::lock_guard lock(mu_);
  return eof_ && data_.empty();
}

size_t OutputBuffer::size() {
  std::lock_guard lock(mu_);
  return data_.size();
}

base::Result<std::unique_ptr<ProcessIo>> ProcessIo::Create(bool tty, bool stdin, uint32_t rows, uint32_t columns) {
  std::unique_ptr<ProcessIo> io(new ProcessIo());
  io->tty_ = tty;
  if (tty) {
    base::UniqueFd master(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!master) {
      return base::SystemError("posix_openpt");
    }
    if (::grantpt(master.get()) != 0 || ::unlockpt(master.get()) != 0) {
      return base::SystemError("unlockpt");
    }
    char name[128];
    if (::ptsname_r(master.get(), name, sizeof(name)) != 0) {
      return base::SystemError("ptsname");
    }
    base::UniqueFd slave(::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!slave) {
      return base::SystemError(std::string("open ") + name);
    }
    if (rows > 0 && columns > 0) {
      winsize ws{};
      ws.ws_row = static_cast<unsigned short>(rows);
      ws.ws_col = static_cast<unsigned short>(columns);
      ::ioctl(master.get(), TIOCSWINSZ, &ws);
    }
    io->stdin_writer_.Reset(::fcntl(master.get(), F_DUPFD_CLOEXEC, 3));
    io->stdout_reader_.Reset(::fcntl(master.get(), F_DUPFD_CLOEXEC, 3));
    io->child_stdin_.Reset(::fcntl(slave.get(), F_DUPFD_CLOEXEC, 3));
    io->child_stdout_.Reset(::fcntl(slave.get(), F_DUPFD_CLOEXEC, 3));
    io->child_stderr_ = std::move(slave);
    io->pty_master_ = std::move(master);
    if (!io->stdin_writer_ || !io->stdout_reader_ || !io->child_stdin_ || !io->child_stdout_) {
      return base::SystemError("dup pty");
    }
    return io;
  }
  int out[2];
  int err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) {
    return base::SystemError("pipe2");
  }
  io->stdout_reader_.Reset(out[0]);
  io->child_stdout_.Reset(out[1]);
  if (::pipe2(err, O_CLOEXEC) != 0) {
    return base::SystemError("pipe2");
  }
  io->stderr_reader_.Reset(err[0]);
  io->child_stderr_.Reset(err[1]);
  if (stdin) {
    int in[2];
    if (::pipe2(in, O_CLOEXEC) != 0) {
      return base::SystemError("pipe2");
    }
    io->child_stdin_.Reset(in[0]);
    io->stdin_writer_.Reset(in[1]);
  }
  return io;
}

ProcessIo::~ProcessIo() = default;

void ProcessIo::StartAfterSpawn() {
  child_stdin_.Reset();
  child_stdout_.Reset();
  child_stderr_.Reset();
  stdout_.StartReading(std::move(stdout_reader_));
  if (stderr_reader_) {
    stderr_.StartReading(std::move(stderr_reader_));
  } else {
    stderr_.MarkEof();  // a tty process has one combined stream
  }
}

base::Status ProcessIo::WriteStdin(const std::string& data, bool eof, std::chrono::milliseconds timeout) {
  std::lock_guard lock(stdin_mu_);
  if (!stdin_writer_) {
    return base::FailedPrecondition("the process has no open stdin (created without stdin, or already closed)");
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  size_t done = 0;
  while (done < data.size()) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return base::DeadlineExceeded("the process did not read its stdin in time (" + std::to_string(done) + " of " +
                                    std::to_string(data.size()) + " bytes written)");
    }
    pollfd p{stdin_writer_.get(), POLLOUT, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) {
      continue;
    }
    if (r <= 0) {
      continue;
    }
    if (p.revents & (POLLERR | POLLHUP)) {
      stdin_writer_.Reset();
      return base::FailedPrecondition("the process closed its stdin");
    }
    int flags = ::fcntl(stdin_writer_.get(), F_GETFL);
    ::fcntl(stdin_writer_.get(), F_SETFL, flags | O_NONBLOCK);
    ssize_t n = ::write(stdin_writer_.get(), data.data() + done, data.size() - done);
    ::fcntl(stdin_writer_.get(), F_SETFL, flags);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        continue;
      }
      int e = errno;
      stdin_writer_.Reset();
      return base::SystemError("writing stdin", e);
    }
    done += static_cast<size_t>(n);
  }
  if (eof) {
    if (tty_) {
      // A tty has no half-close: send the EOF character instead.
      char eot = 4;
      (void)!::write(stdin_writer_.get(), &eot, 1);
    } else {
      stdin_writer_.Reset();
    }
  }
  return base::Status::Ok();
}

base::Status ProcessIo::Resize(uint32_t rows, uint32_t columns) {
  if (!pty_master_) {
    return base::FailedPrecondition("the process has no tty to resize");
  }
  winsize ws{};
  ws.ws_row = static_cast<unsigned short>(rows);
  ws.ws_col = static_cast<unsigned short>(columns);
  if (::ioctl(pty_master_.get(), TIOCSWINSZ, &ws) != 0) {
    return base::SystemError("TIOCSWINSZ");
  }
  return base::Status::Ok();
}

}  // namespace chrys::guest
