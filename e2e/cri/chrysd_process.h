// ChrysdProcess runs a real chrysd binary for a test, on a private socket and state root, and stops it by pid.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "cri/proto/api.grpc.pb.h"

namespace chrys::e2e {

class ChrysdProcess {
 public:
  // Creates a private directory holding the socket, state and log; `extra_args` are appended to chrysd's flags.
  explicit ChrysdProcess(std::vector<std::string> extra_args = {});
  ~ChrysdProcess();
  ChrysdProcess(const ChrysdProcess&) = delete;
  ChrysdProcess& operator=(const ChrysdProcess&) = delete;

  // Starts chrysd and waits (bounded) until its socket answers Version. False if it exited or timed out.
  bool Start(std::chrono::seconds timeout = std::chrono::seconds(20));
  // Runs chrysd expecting it to exit on its own; returns the exit code (-1 on timeout, then killed).
  int RunToExit(std::chrono::seconds timeout = std::chrono::seconds(20));
  // SIGTERM, then wait up to `timeout`; SIGKILL if it is still there. Returns the exit code, or -signal.
  int Stop(std::chrono::seconds timeout = std::chrono::seconds(20));
  // SIGKILL, as a crash would.
  void Kill();

  pid_t pid() const { return pid_; }
  const std::string& dir() const { return dir_; }
  std::string socket() const { return dir_ + "/run/chrysalis.sock"; }
  std::string state_dir() const { return dir_ + "/state"; }
  std::string log_path() const { return dir_ + "/chrysd.log"; }
  // What chrysd wrote to stdout and stderr so far.
  std::string Output() const;
  std::vector<std::string> Args() const;

  std::unique_ptr<runtime::v1::RuntimeService::Stub> RuntimeStub() const;
  std::unique_ptr<runtime::v1::ImageService::Stub> ImageStub() const;

 private:
  void Launch();
  int WaitExit(std::chrono::milliseconds timeout);

  std::vector<std::string> extra_args_;
  std::string dir_;
  pid_t pid_ = -1;
};

}  // namespace chrys::e2e
