// The Kubernetes remote-command protocol, independent of the framing (WebSocket channels or SPDY streams).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.h"
#include "cri/streaming/stream_runtime.h"

namespace chrys::cri::streaming {

// Which remote-command subprotocol was negotiated; decides how the exit status is reported.
enum class CommandProtocol { kV1, kV2, kV3, kV4, kV5 };

// An event from the client side of a remote-command session.
struct ClientEvent {
  enum Kind { kStdin, kStdinClosed, kResize, kGone };
  Kind kind = kGone;
  std::string data;     // kStdin
  uint16_t width = 0;   // kResize
  uint16_t height = 0;  // kResize
  std::string error;    // kGone: why (empty for an orderly close)

  static ClientEvent Make(Kind kind) {
    ClientEvent event;
    event.kind = kind;
    return event;
  }
};

// The client's side of a session, as a transport provides it.
class CommandChannels {
 public:
  virtual ~CommandChannels() = default;
  virtual base::Status WriteOutput(OutputStream stream, std::string_view data) = 0;
  // Writes the final status on the error stream (JSON Status for v4/v5, plain text before).
  virtual base::Status WriteError(std::string_view data) = 0;
  // Blocks for the client's next event.
  virtual ClientEvent NextEvent() = 0;
  // Ends the session towards the client (orderly close); wakes NextEvent.
  virtual void Finish() = 0;
};

// The metav1.Status JSON kubectl expects on the error stream: Success, or Failure with reason NonZeroExitCode
// and the exit code as the "ExitCode" cause.
std::string ExitStatusJson(int exit_code);
// A Failure status with a message (the runtime could not run the command).
std::string FailureStatusJson(std::string_view message);
// Parses a resize message {"Width":80,"Height":24}.
base::Result<std::pair<uint16_t, uint16_t>> ParseResize(std::string_view json);

// Runs one session: client events feed the process, its output goes to the client, the exit status goes on
// the error stream. A client going away aborts the process (an exec is killed) and returns promptly.
void RunRemoteCommand(StreamProcess& process, CommandChannels& channels, CommandProtocol protocol);

}  // namespace chrys::cri::streaming
