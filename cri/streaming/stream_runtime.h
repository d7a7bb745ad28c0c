// StreamRuntime is what the streaming server drives once a client connected: processes and pod ports.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>

#include "base/result.h"
#include "cri/streaming/requests.h"

namespace chrys::cri::streaming {

enum class OutputStream { kStdout, kStderr };

// How a stream ended: the process's exit code, or an error to report on the error channel.
struct StreamExit {
  int exit_code = 0;
};

// A running exec, or an attachment to a container's main process.
class StreamProcess {
 public:
  virtual ~StreamProcess() = default;
  virtual base::Status WriteStdin(std::string_view data) = 0;
  virtual base::Status CloseStdin() = 0;
  virtual base::Status Resize(uint16_t width, uint16_t height) = 0;
  // Receives one output chunk; return false when the client went away.
  using OutputSink = std::function<bool(OutputStream stream, std::string_view data)>;
  // Delivers output until the process closed its stdout and stderr, the sink returns false, or Abort().
  virtual base::Status PumpOutput(const OutputSink& sink) = 0;
  // Waits for the process to exit (bounded by the runtime).
  virtual base::Result<StreamExit> Wait() = 0;
  // The client went away: an exec is killed; an attach just detaches. Unblocks PumpOutput. Thread-safe.
  virtual void Abort() = 0;
};

// One forwarded TCP connection to a port inside the pod.
class PortConnection {
 public:
  virtual ~PortConnection() = default;
  virtual base::Status Write(std::string_view data) = 0;
  // Half-closes the pod side's input (the client sent FIN).
  virtual base::Status CloseWrite() = 0;
  // Delivers data read from the pod's port until it closes (OK), the sink returns false, or Abort().
  virtual base::Status Pump(const std::function<bool(std::string_view)>& sink) = 0;
  virtual void Abort() = 0;
};

class StreamRuntime {
 public:
  virtual ~StreamRuntime() = default;
  virtual base::Result<std::unique_ptr<StreamProcess>> StartExec(const ExecRequest& request) = 0;
  virtual base::Result<std::unique_ptr<StreamProcess>> Attach(const AttachRequest& request) = 0;
  virtual base::Result<std::unique_ptr<PortConnection>> DialPort(const PortForwardRequest& request, int32_t port) = 0;
};

}  // namespace chrys::cri::streaming
