// SpdySession: the server's side of one upgraded SPDY/3.1 connection. It reads frames and answers the
// protocol's own ones (SYN_REPLY to each client stream, PING, SETTINGS, WINDOW_UPDATE), turns the rest into
// stream events, and writes data and closes on streams. Bad frames end the connection with GOAWAY.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "base/result.h"
#include "cri/streaming/connection.h"
#include "cri/streaming/spdy.h"

namespace chrys::cri::streaming {

struct SpdyEvent {
  enum Kind { kNewStream, kData, kStreamEnd, kTimeout, kGone };
  Kind kind = kGone;
  uint32_t stream_id = 0;
  spdy::Headers headers;  // kNewStream
  std::string data;       // kData
  bool reset = false;     // kStreamEnd: the client reset the stream instead of closing it
  std::string error;      // kGone: why (empty for an orderly close)
};

class SpdySession {
 public:
  SpdySession(Connection& connection, size_t max_frame_bytes, std::chrono::milliseconds idle_timeout)
      : connection_(connection), max_frame_bytes_(max_frame_bytes), idle_timeout_(idle_timeout) {
    Touch();
  }

  // The next stream event; reads frames as needed. kTimeout once `deadline` passed; kGone when the client
  // closed, broke the protocol (a GOAWAY with the reason was sent), or was idle for the idle timeout.
  SpdyEvent Next(std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max());
  // Data on a stream (split into frames); `fin` half-closes our side. Nothing is sent after our FIN.
  base::Status Send(uint32_t stream_id, std::string_view data, bool fin = false);
  // Half-closes our side of the stream once (an empty DATA frame with FIN).
  void CloseStream(uint32_t stream_id) { Send(stream_id, "", true).ok(); }
  void Reset(uint32_t stream_id, uint32_t status);
  // Sends GOAWAY once.
  void GoAway(uint32_t status);
  bool gone() const { return gone_.load(); }

 private:
  SpdyEvent Fail(uint32_t goaway_status, std::string error);
  SpdyEvent Gone(std::string error);
  base::Status Write(const std::string& frame);
  void Touch();

  Connection& connection_;
  const size_t max_frame_bytes_;
  const std::chrono::milliseconds idle_timeout_;
  std::string buffer_;
  spdy::HeaderCompressor compressor_;
  spdy::HeaderDecompressor decompressor_;
  std::mutex write_mu_;  // header compression order must match the order on the wire
  std::mutex streams_mu_;
  std::map<uint32_t, bool> fin_sent_;  // every client stream we replied to
  uint32_t last_client_stream_ = 0;
  std::atomic<int64_t> last_activity_{0};
  std::atomic<bool> goaway_sent_{false};
  std::atomic<bool> gone_{false};
};

}  // namespace chrys::cri::streaming
