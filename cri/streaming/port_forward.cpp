#include "cri/streaming/port_forward.h"

#include <spdlog/spdlog.h>

#include <charconv>

namespace chrys::cri::streaming {

ForwardedConnection::~ForwardedConnection() {
  Abort();
  Join();
}

void ForwardedConnection::Start(StreamRuntime& runtime, const PortForwardRequest& request) {
  auto dialled = runtime.DialPort(request, port_);
  if (!dialled.ok()) {
    client_.WriteError("error forwarding port " + std::to_string(port_) + " to pod " + request.sandbox_id + ": " +
                       dialled.error().message());
    client_.CloseData();
    pod_done_ = true;
    return;
  }
  connection_ = std::move(*dialled);
  pump_ = std::thread([this, sandbox = request.sandbox_id] {
    base::Status pumped = connection_->Pump([this](std::string_view data) { return client_.WriteData(data); });
    if (!pumped.ok() && pumped.error().code() != base::ErrorCode::kCancelled) {
      client_.WriteError("error forwarding port " + std::to_string(port_) + " to pod " + sandbox + ": " +
                         pumped.error().message());
    }
    client_.CloseData();
    pod_done_ = true;
  });
}

void ForwardedConnection::FromClient(std::string_view data) {
  if (connection_ && !client_done_) {
    if (auto st = connection_->Write(data); !st.ok()) {
      spdlog::debug("stream: port {}: {}", port_, st.error().message());
    }
  }
}

void ForwardedConnection::ClientDone() {
  if (connection_ && !client_done_) {
    client_done_ = true;
    connection_->CloseWrite().ok();
  }
}

void ForwardedConnection::Abort() {
  if (connection_) {
    connection_->Abort();
  }
}

void ForwardedConnection::Join() {
  if (pump_.joinable()) {
    pump_.join();
  }
}

base::Result<int32_t> ParsePort(std::string_view text) {
  int32_t port = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
  if (ec != std::errc() || end != text.data() + text.size() || port < 1 || port > 65535) {
    return base::InvalidArgument("invalid port \"" + std::string(text.substr(0, 32)) + "\": must be 1..65535");
  }
  return port;
}

}  // namespace chrys::cri::streaming
