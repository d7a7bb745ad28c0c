// ContainerLog writes a container's output in the CRI log format kubelet reads: "<RFC3339Nano> <stream> <P|F> text".
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "base/result.h"
#include "base/unique_fd.h"

namespace chrys::cri {

enum class LogStream { kStdout, kStderr };

class ContainerLog {
 public:
  // Lines longer than this are split into partial ("P") records, as kubelet expects.
  static constexpr size_t kMaxLineBytes = 16 * 1024;

  // Opens (appending, creating the parent directory) the log file at `path`.
  static base::Result<std::unique_ptr<ContainerLog>> Open(const std::string& path);

  // Appends output; complete lines are written at once, the rest is held until its newline, until it reaches
  // kMaxLineBytes (then written as "P"), or until Flush.
  base::Status Write(LogStream stream, std::string_view data);
  // Writes any held partial line of both streams as a full ("F") record: the container's output ended.
  base::Status Flush();
  // Closes and reopens the file at the same path (after kubelet rotated it).
  base::Status Reopen();

  const std::string& path() const { return path_; }

  // "2026-11-22T05:44:05.123456789Z" for a time point.
  static std::string FormatTimestamp(std::chrono::system_clock::time_point when);

 private:
  explicit ContainerLog(std::string path) : path_(std::move(path)) {}
  base::Status OpenFile();
  base::Status WriteRecord(LogStream stream, bool partial, std::string_view text);

  std::mutex mutex_;
  std::string path_;
  base::UniqueFd fd_;
  std::string pending_[2];
};

}  // namespace chrys::cri
