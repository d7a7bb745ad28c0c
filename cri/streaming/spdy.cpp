#include "cri/streaming/spdy.h"

#include <zlib.h>

#include <algorithm>

namespace chrys::cri::streaming::spdy {

namespace {

constexpr size_t kHeaderBytes = 8;
constexpr uint32_t kMaxFrameLength = 0xFFFFFF;

void Put32(std::string& out, uint32_t v) {
  out.push_back(static_cast<char>(v >> 24));
  out.push_back(static_cast<char>(v >> 16));
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}

uint32_t Get32(std::string_view in, size_t at) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(in[at])) << 24) |
         (static_cast<uint32_t>(static_cast<uint8_t>(in[at + 1])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(in[at + 2])) << 8) |
         static_cast<uint32_t>(static_cast<uint8_t>(in[at + 3]));
}

std::string FrameHead(uint32_t first_word, uint8_t flags, size_t length) {
  std::string out;
  out.reserve(kHeaderBytes + length);
  Put32(out, first_word);
  Put32(out, (static_cast<uint32_t>(flags) << 24) | static_cast<uint32_t>(length));
  return out;
}

// The SPDY/3 dictionary: the listed strings, each behind its 32-bit big-endian length, then a run of
// common header values (status lines, dates, media types) as one plain string.
std::string BuildDictionary() {
  static const char* const kWords[] = {
      "options",
      "head",
      "post",
      "put",
      "delete",
      "trace",
      "accept",
      "accept-charset",
      "accept-encoding",
      "accept-language",
      "accept-ranges",
      "age",
      "allow",
      "authorization",
      "cache-control",
      "connection",
      "content-base",
      "content-encoding",
      "content-language",
      "content-length",
      "content-location",
      "content-md5",
      "content-range",
      "content-type",
      "date",
      "etag",
      "expect",
      "expires",
      "from",
      "host",
      "if-match",
      "if-modified-since",
      "if-none-match",
      "if-range",
      "if-unmodified-since",
      "last-modified",
      "location",
      "max-forwards",
      "pragma",
      "proxy-authenticate",
      "proxy-authorization",
      "range",
      "referer",
      "retry-after",
      "server",
      "te",
      "trailer",
      "transfer-encoding",
      "upgrade",
      "user-agent",
      "vary",
      "via",
      "warning",
      "www-authenticate",
      "method",
      "get",
      "status",
      "200 OK",
      "version",
      "HTTP/1.1",
      "url",
      "public",
      "set-cookie",
      "keep-alive",
      "origin",
  };
  static const char kTail[] =
      "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
      "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
      "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
      "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
      "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
      "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
  std::string dict;
  for (const char* word : kWords) {
    std::string_view w(word);
    Put32(dict, static_cast<uint32_t>(w.size()));
    dict.append(w);
  }
  dict.append(kTail);
  return dict;
}

}  // namespace

const std::string& HeaderDictionary() {
  static const std::string dict = BuildDictionary();
  return dict;
}

base::Result<std::optional<ParsedFrame>> ParseFrame(std::string_view buffer, size_t max_payload) {
  if (buffer.size() < kHeaderBytes) {
    return std::optional<ParsedFrame>();
  }
  uint32_t first = Get32(buffer, 0);
  uint32_t second = Get32(buffer, 4);
  size_t length = second & kMaxFrameLength;
  ParsedFrame parsed;
  Frame& frame = parsed.frame;
  frame.control = (first & 0x80000000u) != 0;
  frame.flags = static_cast<uint8_t>(second >> 24);
  if (frame.control) {
    frame.version = static_cast<uint16_t>((first >> 16) & 0x7FFF);
    frame.type = static_cast<uint16_t>(first & 0xFFFF);
    if (frame.version != kVersion) {
      return base::InvalidArgument("SPDY control frame of version " + std::to_string(frame.version) +
                                   " (only 3 is spoken)");
    }
  } else {
    frame.stream_id = first & 0x7FFFFFFFu;
  }
  if (length > max_payload) {
    return base::MakeError(
        base::ErrorCode::kResourceExhausted,
        "SPDY frame of " + std::to_string(length) + " bytes exceeds the limit of " + std::to_string(max_payload));
  }
  if (buffer.size() < kHeaderBytes + length) {
    return std::optional<ParsedFrame>();
  }
  frame.payload.assign(buffer.substr(kHeaderBytes, length));
  parsed.consumed = kHeaderBytes + length;
  return std::optional<ParsedFrame>(std::move(parsed));
}

std::string EncodeControl(uint16_t type, uint8_t flags, std::string_view payload) {
  std::string out = FrameHead(0x80000000u | (static_cast<uint32_t>(kVersion) << 16) | type, flags, payload.size());
  out.append(payload);
  return out;
}

std::string EncodeData(uint32_t stream_id, uint8_t flags, std::string_view data) {
  std::string out = FrameHead(stream_id & 0x7FFFFFFFu, flags, data.size());
  out.append(data);
  return out;
}

std::string SynStream(uint32_t stream_id, uint32_t associated_id, uint8_t flags, std::string_view header_block) {
  std::string payload;
  Put32(payload, stream_id & 0x7FFFFFFFu);
  Put32(payload, associated_id & 0x7FFFFFFFu);
  payload.push_back(0);  // priority (3 bits) and unused
  payload.push_back(0);  // slot
  payload.append(header_block);
  return EncodeControl(kSynStream, flags, payload);
}

std::string SynReply(uint32_t stream_id, uint8_t flags, std::string_view header_block) {
  std::string payload;
  Put32(payload, stream_id & 0x7FFFFFFFu);
  payload.append(header_block);
  return EncodeControl(kSynReply, flags, payload);
}

std::string RstStream(uint32_t stream_id, uint32_t status) {
  std::string payload;
  Put32(payload, stream_id & 0x7FFFFFFFu);
  Put32(payload, status);
  return EncodeControl(kRstStream, 0, payload);
}

std::string Settings(const std::vector<std::pair<uint32_t, uint32_t>>& id_values) {
  std::string payload;
  Put32(payload, static_cast<uint32_t>(id_values.size()));
  for (const auto& [id, value] : id_values) {
    Put32(payload, id & 0xFFFFFF);  // flags 0, 24-bit id
    Put32(payload, value);
  }
  return EncodeControl(kSettings, 0, payload);
}

std::string Ping(uint32_t id) {
  std::string payload;
  Put32(payload, id);
  return EncodeControl(kPing, 0, payload);
}

std::string GoAway(uint32_t last_good_stream_id, uint32_t status) {
  std::string payload;
  Put32(payload, last_good_stream_id & 0x7FFFFFFFu);
  Put32(payload, status);
  return EncodeControl(kGoAway, 0, payload);
}

std::string WindowUpdate(uint32_t stream_id, uint32_t delta) {
  std::string payload;
  Put32(payload, stream_id & 0x7FFFFFFFu);
  Put32(payload, delta & 0x7FFFFFFFu);
  return EncodeControl(kWindowUpdate, 0, payload);
}

base::Result<SynStreamFrame> ParseSynStream(std::string_view payload) {
  if (payload.size() < 10) {
    return base::InvalidArgument("SYN_STREAM shorter than 10 bytes");
  }
  SynStreamFrame frame;
  frame.stream_id = Get32(payload, 0) & 0x7FFFFFFFu;
  frame.associated_id = Get32(payload, 4) & 0x7FFFFFFFu;
  frame.header_block = payload.substr(10);
  return frame;
}

base::Result<std::pair<uint32_t, std::string_view>> ParseStreamHeaders(std::string_view payload) {
  if (payload.size() < 4) {
    return base::InvalidArgument("SPDY header frame shorter than 4 bytes");
  }
  return std::pair{Get32(payload, 0) & 0x7FFFFFFFu, payload.substr(4)};
}

base::Result<std::pair<uint32_t, uint32_t>> ParseTwoWords(std::string_view payload) {
  if (payload.size() != 8) {
    return base::InvalidArgument("SPDY control frame of " + std::to_string(payload.size()) + " bytes, want 8");
  }
  return std::pair{Get32(payload, 0) & 0x7FFFFFFFu, Get32(payload, 4)};
}

base::Result<uint32_t> ParsePing(std::string_view payload) {
  if (payload.size() != 4) {
    return base::InvalidArgument("PING of " + std::to_string(payload.size()) + " bytes, want 4");
  }
  return Get32(payload, 0);
}

base::Status ValidateSettings(std::string_view payload) {
  if (payload.size() < 4 || (payload.size() - 4) / 8 != Get32(payload, 0) || (payload.size() - 4) % 8 != 0) {
    return base::InvalidArgument("SETTINGS: entry count does not match the frame length");
  }
  return base::Status::Ok();
}

std::string HeaderValue(const Headers& headers, std::string_view name) {
  for (const auto& [n, v] : headers) {
    if (n == name) {
      return v.substr(0, v.find('\0'));
    }
  }
  return "";
}

HeaderCompressor::HeaderCompressor() : zs_(std::make_unique<z_stream>()) {
  const std::string& dict = HeaderDictionary();
  ok_ = deflateInit(zs_.get(), Z_DEFAULT_COMPRESSION) == Z_OK &&
        deflateSetDictionary(zs_.get(), reinterpret_cast<const Bytef*>(dict.data()), static_cast<uInt>(dict.size())) ==
            Z_OK;
}

HeaderCompressor::~HeaderCompressor() {
  deflateEnd(zs_.get());
}

base::Result<std::string> HeaderCompressor::Compress(const Headers& headers) {
  if (!ok_) {
    return base::Internal("SPDY header compressor unusable");
  }
  std::string raw;
  Put32(raw, static_cast<uint32_t>(headers.size()));
  for (const auto& [name, value] : headers) {
    Put32(raw, static_cast<uint32_t>(name.size()));
    raw.append(name);
    Put32(raw, static_cast<uint32_t>(value.size()));
    raw.append(value);
  }
  std::string out;
  zs_->next_in = reinterpret_cast<Bytef*>(raw.data());
  zs_->avail_in = static_cast<uInt>(raw.size());
  char chunk[4096];
  do {
    zs_->next_out = reinterpret_cast<Bytef*>(chunk);
    zs_->avail_out = sizeof(chunk);
    int rc = deflate(zs_.get(), Z_SYNC_FLUSH);
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      ok_ = false;
      return base::Internal("SPDY header compression failed");
    }
    out.append(chunk, sizeof(chunk) - zs_->avail_out);
  } while (zs_->avail_out == 0);
  return out;
}

HeaderDecompressor::HeaderDecompressor() : zs_(std::make_unique<z_stream>()) {
  ok_ = inflateInit(zs_.get()) == Z_OK;
}

HeaderDecompressor::~HeaderDecompressor() {
  inflateEnd(zs_.get());
}

base::Result<Headers> HeaderDecompressor::Decompress(std::string_view block, size_t max_bytes) {
  if (!ok_) {
    return base::InvalidArgument("SPDY header decompression failed earlier on this connection");
  }
  ok_ = false;  // until this block inflated cleanly
  std::string raw;
  zs_->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(block.data()));
  zs_->avail_in = static_cast<uInt>(block.size());
  char chunk[4096];
  while (zs_->avail_in > 0) {
    zs_->next_out = reinterpret_cast<Bytef*>(chunk);
    zs_->avail_out = sizeof(chunk);
    int rc = inflate(zs_.get(), Z_SYNC_FLUSH);
    if (rc == Z_NEED_DICT) {
      const std::string& dict = HeaderDictionary();
      if (inflateSetDictionary(zs_.get(), reinterpret_cast<const Bytef*>(dict.data()),
                               static_cast<uInt>(dict.size())) != Z_OK) {
        return base::InvalidArgument("SPDY header block wants a dictionary other than SPDY/3's");
      }
      continue;
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      return base::InvalidArgument("SPDY header block is not valid zlib data");
    }
    raw.append(chunk, sizeof(chunk) - zs_->avail_out);
    if (raw.size() > max_bytes) {
      return base::MakeError(base::ErrorCode::kResourceExhausted,
                             "SPDY header block inflates beyond " + std::to_string(max_bytes) + " bytes");
    }
    if (rc == Z_BUF_ERROR && zs_->avail_out != 0) {
      break;  // no progress possible: input consumed
    }
  }
  // Drain what inflate still holds for this block.
  while (true) {
    zs_->next_out = reinterpret_cast<Bytef*>(chunk);
    zs_->avail_out = sizeof(chunk);
    int rc = inflate(zs_.get(), Z_SYNC_FLUSH);
    size_t produced = sizeof(chunk) - zs_->avail_out;
    raw.append(chunk, produced);
    if (raw.size() > max_bytes) {
      return base::MakeError(base::ErrorCode::kResourceExhausted,
                             "SPDY header block inflates beyond " + std::to_string(max_bytes) + " bytes");
    }
    if (produced == 0 || (rc != Z_OK)) {
      break;
    }
  }
  Headers headers;
  auto need = [&](size_t at, size_t n) { return at + n <= raw.size(); };
  if (!need(0, 4)) {
    return base::InvalidArgument("SPDY header block without a pair count");
  }
  uint32_t count = Get32(raw, 0);
  size_t at = 4;
  if (count > raw.size() / 8) {
    return base::InvalidArgument("SPDY header block claims more pairs than it holds");
  }
  for (uint32_t i = 0; i < count; ++i) {
    std::string parts[2];
    for (std::string& part : parts) {
      if (!need(at, 4)) {
        return base::InvalidArgument("SPDY header block truncated");
      }
      uint32_t len = Get32(raw, at);
      at += 4;
      if (!need(at, len)) {
        return base::InvalidArgument("SPDY header block truncated");
      }
      part = raw.substr(at, len);
      at += len;
    }
    if (parts[0].empty()) {
      return base::InvalidArgument("SPDY header with an empty name");
    }
    std::transform(parts[0].begin(), parts[0].end(), parts[0].begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    headers.emplace_back(std::move(parts[0]), std::move(parts[1]));
  }
  if (at != raw.size()) {
    return base::InvalidArgument("SPDY header block has trailing bytes");
  }
  ok_ = true;
  return headers;
}

}  // namespace chrys::cri::streaming::spdy
