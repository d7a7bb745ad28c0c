// WsSession: one upgraded WebSocket connection carrying Kubernetes channels (a one-byte channel prefix per
// message), with ping/pong, close and size limits handled.
#pragma once

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"
#include "cri/streaming/connection.h"
#include "cri/streaming/websocket.h"

namespace chrys::cri::streaming {

class WsSession {
 public:
  WsSession(Connection& connection, size_t max_message_bytes, std::chrono::milliseconds idle_timeout)
      : connection_(connection), max_message_bytes_(max_message_bytes), idle_timeout_(idle_timeout) {}

  // Sends one binary message: the channel byte then `data`.
  base::Status Send(uint8_t channel, std::string_view data);
  // Reads the next data message (ping/pong answered, fragments joined). nullopt: the client closed in order.
  // Errors: protocol violations (after which a close frame with the reason was sent), timeouts, I/O.
  base::Result<std::optional<std::string>> Receive();
  // Sends a close frame once.
  void Close(uint16_t code, std::string_view reason);
  // Waits briefly for the client's close frame after ours, so the last messages are not lost to a reset.
  void DrainAfterClose(std::chrono::milliseconds timeout);

 private:
  base::Result<std::optional<ws::Frame>> ReadFrame(std::chrono::milliseconds timeout);

  Connection& connection_;
  const size_t max_message_bytes_;
  const std::chrono::milliseconds idle_timeout_;
  std::string buffer_;
  std::atomic<bool> close_sent_{false};
};

}  // namespace chrys::cri::streaming
