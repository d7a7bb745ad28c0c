#include "cri/streaming/ws_session.h"

namespace chrys::cri::streaming {

base::Status WsSession::Send(uint8_t channel, std::string_view data) {
  std::string payload;
  payload.reserve(data.size() + 1);
  payload.push_back(static_cast<char>(channel));
  payload.append(data);
  return connection_.WriteAll(ws::EncodeFrame(ws::kBinary, payload), idle_timeout_);
}

void WsSession::Close(uint16_t code, std::string_view reason) {
  if (!close_sent_.exchange(true)) {
    connection_.WriteAll(ws::EncodeFrame(ws::kClose, ws::ClosePayload(code, reason)), std::chrono::seconds(5)).ok();
  }
}

base::Result<std::optional<ws::Frame>> WsSession::ReadFrame(std::chrono::milliseconds timeout) {
  char chunk[16384];
  while (true) {
    auto parsed = ws::ParseFrame(buffer_, max_message_bytes_, /*from_client=*/true);
    if (!parsed.ok()) {
      bool too_big = parsed.error().code() == base::ErrorCode::kResourceExhausted;
      Close(too_big ? ws::kCloseTooBig : ws::kCloseProtocolError, parsed.error().message());
      return parsed.error();
    }
    if (parsed->has_value()) {
      buffer_.erase(0, (*parsed)->consumed);
      return std::optional<ws::Frame>(std::move((*parsed)->frame));
    }
    CHRYS_ASSIGN_OR_RETURN(size_t n, connection_.ReadSome(chunk, sizeof(chunk), timeout));
    if (n == 0) {
      return std::optional<ws::Frame>();
    }
    buffer_.append(chunk, n);
  }
}

base::Result<std::optional<std::string>> WsSession::Receive() {
  std::string message;
  bool in_message = false;
  while (true) {
    CHRYS_ASSIGN_OR_RETURN(std::optional<ws::Frame> frame, ReadFrame(idle_timeout_));
    if (!frame) {
      if (in_message) {
        return base::InvalidArgument("the client closed the connection inside a fragmented message");
      }
      return std::optional<std::string>();
    }
    switch (frame->opcode) {
      case ws::kPing:
        CHRYS_RETURN_IF_ERROR(connection_.WriteAll(ws::EncodeFrame(ws::kPong, frame->payload), idle_timeout_));
        continue;
      case ws::kPong:
        continue;
      case ws::kClose:
        Close(ws::kCloseNormal, "");
        return std::optional<std::string>();
      case ws::kContinuation:
        if (!in_message) {
          Close(ws::kCloseProtocolError, "continuation frame without a message");
          return base::InvalidArgument("WebSocket continuation frame without a message");
        }
        break;
      default:
        if (in_message) {
          Close(ws::kCloseProtocolError, "new message inside a fragmented one");
          return base::InvalidArgument("WebSocket message started inside a fragmented one");
        }
        in_message = true;
        break;
    }
    if (message.size() + frame->payload.size() > max_message_bytes_) {
      Close(ws::kCloseTooBig, "message too big");
      return base::MakeError(base::ErrorCode::kResourceExhausted,
                             "WebSocket message exceeds the limit of " + std::to_string(max_message_bytes_) + " bytes");
    }
    message += frame->payload;
    if (frame->fin) {
      return std::optional<std::string>(std::move(message));
    }
  }
}

void WsSession::DrainAfterClose(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return;
    }
    auto frame = ReadFrame(left);
    if (!frame.ok() || !frame->has_value() || (*frame)->opcode == ws::kClose) {
      return;
    }
  }
}

}  // namespace chrys::cri::streaming
