// RFC 6455 WebSocket: the handshake accept key and the frame codec (both directions, for server and tests).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"

namespace chrys::cri::streaming::ws {

enum Opcode : uint8_t {
  kContinuation = 0x0,
  kText = 0x1,
  kBinary = 0x2,
  kClose = 0x8,
  kPing = 0x9,
  kPong = 0xA,
};

// Close status codes the server sends.
inline constexpr uint16_t kCloseNormal = 1000;
inline constexpr uint16_t kCloseProtocolError = 1002;
inline constexpr uint16_t kCloseTooBig = 1009;
inline constexpr uint16_t kCloseInternalError = 1011;

struct Frame {
  bool fin = true;
  uint8_t opcode = kBinary;
  std::string payload;  // unmasked
};

// Sec-WebSocket-Accept for a client's Sec-WebSocket-Key.
std::string AcceptKey(std::string_view client_key);

// One frame on the wire. `mask` set: masked with that key (client to server); unset: unmasked (server).
std::string EncodeFrame(uint8_t opcode, std::string_view payload, bool fin = true,
                        std::optional<uint32_t> mask = std::nullopt);
// A close frame's payload: status code and reason.
std::string ClosePayload(uint16_t code, std::string_view reason);

struct ParsedFrame {
  Frame frame;
  size_t consumed = 0;
};

// Parses one frame at the front of `buffer`. nullopt: more bytes needed. Errors (kInvalidArgument, or
// kResourceExhausted when the payload exceeds `max_payload`) mean the connection must be closed.
// `from_client`: frames must be masked (a server rejects unmasked ones); otherwise they must not be.
base::Result<std::optional<ParsedFrame>> ParseFrame(std::string_view buffer, size_t max_payload, bool from_client);

}  // namespace chrys::cri::streaming::ws
