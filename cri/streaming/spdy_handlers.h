// The remote-command and port-forward protocols over an upgraded SPDY/3.1 connection (streams named by
// their streamType header), as kubectl and crictl speak them.
#pragma once

#include <chrono>

#include "cri/streaming/remote_command.h"
#include "cri/streaming/requests.h"
#include "cri/streaming/spdy_session.h"
#include "cri/streaming/stream_runtime.h"

namespace chrys::cri::streaming {

// Exec or attach: waits (at most `stream_creation_timeout`) for the client's streams (error, and stdin,
// stdout, stderr, resize as the request wants them), then runs the session.
void ServeSpdyCommand(Connection& connection, SpdySession& session, StreamRuntime& runtime,
                      const StreamRequest& request, CommandProtocol protocol,
                      std::chrono::milliseconds stream_creation_timeout);

// Port-forward: every pair of streams (error + data, same requestID, header "port") is one connection to
// that port in the pod; the session lasts until the client closes it or stays idle.
void ServeSpdyPortForward(Connection& connection, SpdySession& session, StreamRuntime& runtime,
                          const PortForwardRequest& request, std::chrono::milliseconds stream_creation_timeout);

}  // namespace chrys::cri::streaming
