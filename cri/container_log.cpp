#include "cri/container_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <ctime>
#include <filesystem>

#include "base/file_util.h"

namespace chrys::cri {

std::string ContainerLog::FormatTimestamp(std::chrono::system_clock::time_point when) {
  auto since_epoch = when.time_since_epoch();
  auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch - seconds).count();
  std::time_t t = seconds.count();
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[64];
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%09lldZ", static_cast<long long>(nanos));
  return buf;
}

base::Result<std::unique_ptr<ContainerLog>> ContainerLog::Open(const std::string& path) {
  std::unique_ptr<ContainerLog> log(new ContainerLog(path));
  CHRYS_RETURN_IF_ERROR(log->OpenFile());
  return log;
}

base::Status ContainerLog::OpenFile() {
  std::string dir = std::filesystem::path(path_).parent_path().string();
  if (!dir.empty()) {
    CHRYS_RETURN_IF_ERROR(base::MakeDirs(dir, 0755));
  }
  fd_.Reset(::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
  if (!fd_) {
    return base::SystemError("open container log " + path_);
  }
  return base::Status::Ok();
}

base::Status ContainerLog::WriteRecord(LogStream stream, bool partial, std::string_view text) {
  std::string record = FormatTimestamp(std::chrono::system_clock::now());
  record += stream == LogStream::kStdout ? " stdout " : " stderr ";
  record += partial ? "P " : "F ";
  record.append(text);
  record.push_back('\n');
  size_t done = 0;
  while (done < record.size()) {
    ssize_t n = ::write(fd_.get(), record.data() + done, record.size() - done);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return base::SystemError("write container log " + path_);
    }
    done += static_cast<size_t>(n);
  }
  return base::Status::Ok();
}

base::Status ContainerLog::Write(LogStream stream, std::string_view data) {
  std::lock_guard lock(mutex_);
  std::string& pending = pending_[stream == LogStream::kStdout ? 0 : 1];
  while (!data.empty()) {
    size_t newline = data.find('\n');
    std::string_view piece = newline == std::string_view::npos ? data : data.substr(0, newline);
    // Emit partial records while the held line would pass the limit.
    while (pending.size() + piece.size() > kMaxLineBytes) {
      size_t take = kMaxLineBytes - pending.size();
      pending.append(piece.substr(0, take));
      piece.remove_prefix(take);
      CHRYS_RETURN_IF_ERROR(WriteRecord(stream, true, pending));
      pending.clear();
    }
    pending.append(piece);
    if (newline == std::string_view::npos) {
      break;
    }
    if (!pending.empty() && pending.back() == '\r') {
      pending.pop_back();
    }
    CHRYS_RETURN_IF_ERROR(WriteRecord(stream, false, pending));
    pending.clear();
    data.remove_prefix(newline + 1);
  }
  return base::Status::Ok();
}

base::Status ContainerLog::Flush() {
  std::lock_guard lock(mutex_);
  for (int i = 0; i < 2; ++i) {
    if (!pending_[i].empty()) {
      CHRYS_RETURN_IF_ERROR(WriteRecord(i == 0 ? LogStream::kStdout : LogStream::kStderr, false, pending_[i]));
      pending_[i].clear();
    }
  }
  return base::Status::Ok();
}

base::Status ContainerLog::Reopen() {
  std::lock_guard lock(mutex_);
  fd_.Reset();
  return OpenFile();
}

}  // namespace chrys::cri
