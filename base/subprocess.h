// RunCommand runs a short-lived helper program (CNI plugin, mkfs.erofs, ...) with a deadline and captured output.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"

namespace chrys::base {

struct CommandSpec {
  // argv[0] is a path, or a name looked up in PATH.
  std::vector<std::string> argv;
  // The child's whole environment; nullopt inherits ours. `extra_env` entries (KEY=VALUE) override either.
  std::optional<std::vector<std::string>> env;
  std::vector<std::string> extra_env;
  std::string stdin_data;
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  // Each of stdout and stderr keeps at most this many bytes; the rest is read and dropped.
  size_t max_output_bytes = 4UL << 20;
  std::string working_dir;
  // When >= 0, the child joins this network namespace before exec.
  int netns_fd = -1;
};

struct CommandResult {
  int exit_code = -1;    // valid when term_signal == 0
  int term_signal = 0;   // the signal that ended the child, if any
  std::string stdout_data;
  std::string stderr_data;
  bool output_truncated = false;

  bool success() const { return term_signal == 0 && exit_code == 0; }
  // "exited with status 3" / "killed by signal 9", for error messages.
  std::string DescribeExit() const;
};

// Runs the command to completion. A command that cannot be started, or that outlives its timeout (it is
// then killed), is an Error; a command that exits non-zero is a CommandResult the caller inspects.
Result<CommandResult> RunCommand(const CommandSpec& spec);

// Returns the last `max_bytes` of `text`, trimmed, for quoting a program's stderr in an error message.
std::string Tail(const std::string& text, size_t max_bytes = 2048);

}  // namespace chrys::base
