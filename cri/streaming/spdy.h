// SPDY/3.1 framing as Kubernetes streaming uses it: the frame codec (both directions, for the server and
// tests) and the zlib header-block compression with the protocol's fixed dictionary.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/result.h"

typedef struct z_stream_s z_stream;

namespace chrys::cri::streaming::spdy {

inline constexpr uint16_t kVersion = 3;

enum ControlType : uint16_t {
  kSynStream = 1,
  kSynReply = 2,
  kRstStream = 3,
  kSettings = 4,
  kPing = 6,
  kGoAway = 7,
  kHeaders = 8,
  kWindowUpdate = 9,
};

inline constexpr uint8_t kFlagFin = 0x01;
inline constexpr uint8_t kFlagUnidirectional = 0x02;

// RST_STREAM status codes.
inline constexpr uint32_t kRstProtocolError = 1;
inline constexpr uint32_t kRstInvalidStream = 2;
inline constexpr uint32_t kRstRefusedStream = 3;
inline constexpr uint32_t kRstCancel = 5;
inline constexpr uint32_t kRstInternalError = 6;
inline constexpr uint32_t kRstStreamInUse = 8;
inline constexpr uint32_t kRstFrameTooLarge = 11;
// GOAWAY status codes.
inline constexpr uint32_t kGoAwayOk = 0;
inline constexpr uint32_t kGoAwayProtocolError = 1;
inline constexpr uint32_t kGoAwayInternalError = 2;

struct Frame {
  bool control = false;
  uint16_t version = kVersion;  // control frames
  uint16_t type = 0;            // control frames
  uint32_t stream_id = 0;       // data frames
  uint8_t flags = 0;
  std::string payload;
};

struct ParsedFrame {
  Frame frame;
  size_t consumed = 0;
};

// Parses one frame at the front of `buffer`. nullopt: more bytes needed. kResourceExhausted when the frame's
// length exceeds `max_payload`; kInvalidArgument for a control frame of another SPDY version.
base::Result<std::optional<ParsedFrame>> ParseFrame(std::string_view buffer, size_t max_payload);

std::string EncodeControl(uint16_t type, uint8_t flags, std::string_view payload);
std::string EncodeData(uint32_t stream_id, uint8_t flags, std::string_view data);

// Frame builders (header blocks already compressed).
std::string SynStream(uint32_t stream_id, uint32_t associated_id, uint8_t flags, std::string_view header_block);
std::string SynReply(uint32_t stream_id, uint8_t flags, std::string_view header_block);
std::string RstStream(uint32_t stream_id, uint32_t status);
std::string Settings(const std::vector<std::pair<uint32_t, uint32_t>>& id_values);
std::string Ping(uint32_t id);
std::string GoAway(uint32_t last_good_stream_id, uint32_t status);
std::string WindowUpdate(uint32_t stream_id, uint32_t delta);

// Control frame payload parsers; kInvalidArgument when the payload is too short or malformed.
struct SynStreamFrame {
  uint32_t stream_id = 0;
  uint32_t associated_id = 0;
  std::string_view header_block;
};
base::Result<SynStreamFrame> ParseSynStream(std::string_view payload);
// SYN_REPLY and HEADERS: stream id then a header block.
base::Result<std::pair<uint32_t, std::string_view>> ParseStreamHeaders(std::string_view payload);
// RST_STREAM, WINDOW_UPDATE, GOAWAY: two 32-bit words (the stream id's top bit cleared).
base::Result<std::pair<uint32_t, uint32_t>> ParseTwoWords(std::string_view payload);
base::Result<uint32_t> ParsePing(std::string_view payload);
base::Status ValidateSettings(std::string_view payload);

// Header names are lower-case; a name with several values carries them NUL-separated.
using Headers = std::vector<std::pair<std::string, std::string>>;
// The first value of `name`, or "".
std::string HeaderValue(const Headers& headers, std::string_view name);

// The dictionary both sides' zlib streams start from (SPDY/3 section 2.6.10.1).
const std::string& HeaderDictionary();

// One direction's header compression context: a single zlib stream for the whole connection, each block
// ended with a sync flush.
class HeaderCompressor {
 public:
  HeaderCompressor();
  ~HeaderCompressor();
  HeaderCompressor(const HeaderCompressor&) = delete;
  HeaderCompressor& operator=(const HeaderCompressor&) = delete;
  base::Result<std::string> Compress(const Headers& headers);

 private:
  std::unique_ptr<z_stream> zs_;
  bool ok_ = false;
};

class HeaderDecompressor {
 public:
  HeaderDecompressor();
  ~HeaderDecompressor();
  HeaderDecompressor(const HeaderDecompressor&) = delete;
  HeaderDecompressor& operator=(const HeaderDecompressor&) = delete;
  // Inflates one block (at most `max_bytes` once inflated: a small block must not become a huge one) and
  // parses its name/value pairs. Any error leaves the context unusable: the connection must end.
  base::Result<Headers> Decompress(std::string_view block, size_t max_bytes);

 private:
  std::unique_ptr<z_stream> zs_;
  bool ok_ = false;
};

}  // namespace chrys::cri::streaming::spdy
