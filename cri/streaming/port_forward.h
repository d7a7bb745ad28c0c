// ForwardedConnection: one client connection forwarded to a pod port, independent of the framing (WebSocket
// channel pairs or SPDY stream pairs).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "base/result.h"
#include "cri/streaming/stream_runtime.h"

namespace chrys::cri::streaming {

// The client's side of one forwarded connection, as a transport provides it. Called from the pump thread.
class PortClientSide {
 public:
  virtual ~PortClientSide() = default;
  // Data from the pod; false when the client can no longer take it.
  virtual bool WriteData(std::string_view data) = 0;
  // A failure to report on the connection's error stream (dial refused, agent gone).
  virtual void WriteError(std::string_view message) = 0;
  // The pod side will send nothing more.
  virtual void CloseData() = 0;
};

class ForwardedConnection {
 public:
  ForwardedConnection(int32_t port, PortClientSide& client) : port_(port), client_(client) {}
  ~ForwardedConnection();
  ForwardedConnection(const ForwardedConnection&) = delete;
  ForwardedConnection& operator=(const ForwardedConnection&) = delete;

  // Dials the port through the runtime and starts moving the pod's output to the client. A dial failure is
  // reported on the client's error stream (the session goes on for other connections).
  void Start(StreamRuntime& runtime, const PortForwardRequest& request);
  // Client data for the pod; dropped after a failure.
  void FromClient(std::string_view data);
  // The client will send nothing more (half-close towards the pod).
  void ClientDone();
  // Tears the connection down now (the client or the server went away).
  void Abort();
  // Waits for the pump to end (after Abort, or once the pod side closed).
  void Join();
  bool pod_done() const { return pod_done_.load(); }
  int32_t port() const { return port_; }

 private:
  const int32_t port_;
  PortClientSide& client_;
  std::unique_ptr<PortConnection> connection_;
  std::thread pump_;
  std::atomic<bool> pod_done_{false};
  bool client_done_ = false;
};

// Parses a port number from a query value or a header: 1..65535.
base::Result<int32_t> ParsePort(std::string_view text);

}  // namespace chrys::cri::streaming
