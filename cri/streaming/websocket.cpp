#include "cri/streaming/websocket.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

namespace chrys::cri::streaming::ws {

std::string AcceptKey(std::string_view client_key) {
  static constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  std::string input(client_key);
  input.append(kGuid);
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
  unsigned char encoded[4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1];
  int n = EVP_EncodeBlock(encoded, digest, SHA_DIGEST_LENGTH);
  return std::string(reinterpret_cast<char*>(encoded), static_cast<size_t>(n));
}

std::string EncodeFrame(uint8_t opcode, std::string_view payload, bool fin, std::optional<uint32_t> mask) {
  std::string out;
  out.reserve(payload.size() + 14);
  out.push_back(static_cast<char>((fin ? 0x80 : 0) | (opcode & 0x0F)));
  uint8_t mask_bit = mask ? 0x80 : 0;
  if (payload.size() < 126) {
    out.push_back(static_cast<char>(mask_bit | payload.size()));
  } else if (payload.size() <= 0xFFFF) {
    out.push_back(static_cast<char>(mask_bit | 126));
    out.push_back(static_cast<char>(payload.size() >> 8));
    out.push_back(static_cast<char>(payload.size() & 0xFF));
  } else {
    out.push_back(static_cast<char>(mask_bit | 127));
    for (int shift = 56; shift >= 0; shift -= 8) {
      out.push_back(static_cast<char>((static_cast<uint64_t>(payload.size()) >> shift) & 0xFF));
    }
  }
  if (!mask) {
    out.append(payload);
    return out;
  }
  char key[4] = {static_cast<char>(*mask >> 24), static_cast<char>(*mask >> 16), static_cast<char>(*mask >> 8),
                 static_cast<char>(*mask)};
  out.append(key, 4);
  for (size_t i = 0; i < payload.size(); ++i) {
    out.push_back(static_cast<char>(payload[i] ^ key[i % 4]));
  }
  return out;
}

std::string ClosePayload(uint16_t code, std::string_view reason) {
  std::string out;
  out.push_back(static_cast<char>(code >> 8));
  out.push_back(static_cast<char>(code & 0xFF));
  out.append(reason.substr(0, 123));
  return out;
}

base::Result<std::optional<ParsedFrame>> ParseFrame(std::string_view buffer, size_t max_payload, bool from_client) {
  if (buffer.size() < 2) {
    return std::optional<ParsedFrame>();
  }
  auto byte = [&](size_t i) { return static_cast<uint8_t>(buffer[i]); };
  ParsedFrame parsed;
  parsed.frame.fin = (byte(0) & 0x80) != 0;
  if ((byte(0) & 0x70) != 0) {
    return base::InvalidArgument("WebSocket frame with reserved bits set (no extension was negotiated)");
  }
  parsed.frame.opcode = byte(0) & 0x0F;
  uint8_t op = parsed.frame.opcode;
  if (op != kContinuation && op != kText && op != kBinary && op != kClose && op != kPing && op != kPong) {
    return base::InvalidArgument("unknown WebSocket opcode " + std::to_string(op));
  }
  bool masked = (byte(1) & 0x80) != 0;
  if (masked != from_client) {
    return base::InvalidArgument(from_client ? "unmasked WebSocket frame from the client"
                                             : "masked WebSocket frame from the server");
  }
  uint64_t length = byte(1) & 0x7F;
  size_t offset = 2;
  if (length == 126) {
    if (buffer.size() < 4) {
      return std::optional<ParsedFrame>();
    }
    length = (uint64_t{byte(2)} << 8) | byte(3);
    offset = 4;
  } else if (length == 127) {
    if (buffer.size() < 10) {
      return std::optional<ParsedFrame>();
    }
    length = 0;
    for (size_t i = 2; i < 10; ++i) {
      length = (length << 8) | byte(i);
    }
    if ((length >> 63) != 0) {
      return base::InvalidArgument("WebSocket frame length with the top bit set");
    }
    offset = 10;
  }
  bool control = (op & 0x08) != 0;
  if (control && (length > 125 || !parsed.frame.fin)) {
    return base::InvalidArgument("WebSocket control frame fragmented or longer than 125 bytes");
  }
  if (length > max_payload) {
    return base::MakeError(
        base::ErrorCode::kResourceExhausted,
        "WebSocket frame of " + std::to_string(length) + " bytes exceeds the limit of " + std::to_string(max_payload));
  }
  char key[4] = {0, 0, 0, 0};
  if (masked) {
    if (buffer.size() < offset + 4) {
      return std::optional<ParsedFrame>();
    }
    for (int i = 0; i < 4; ++i) {
      key[i] = buffer[offset + i];
    }
    offset += 4;
  }
  if (buffer.size() < offset + length) {
    return std::optional<ParsedFrame>();
  }
  parsed.frame.payload.assign(buffer.substr(offset, length));
  if (masked) {
    for (size_t i = 0; i < parsed.frame.payload.size(); ++i) {
      parsed.frame.payload[i] = static_cast<char>(parsed.frame.payload[i] ^ key[i % 4]);
    }
  }
  parsed.consumed = offset + length;
  return std::optional<ParsedFrame>(std::move(parsed));
}

}  // namespace chrys::cri::streaming::ws
