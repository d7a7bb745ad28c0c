#include "cri/streaming/spdy_session.h"

#include <algorithm>

namespace chrys::cri::streaming {

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxHeaderBytes = 64 << 10;
constexpr size_t kMaxDataFrame = 32 << 10;
constexpr std::chrono::milliseconds kReadSlice(1000);
constexpr size_t kMaxStreams = 4096;  // streams a connection may open over its life

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
}

}  // namespace

void SpdySession::Touch() {
  last_activity_ = NowMs();
}

base::Status SpdySession::Write(const std::string& frame) {
  Touch();
  return connection_.WriteAll(frame, idle_timeout_);
}

SpdyEvent SpdySession::Gone(std::string error) {
  gone_ = true;
  SpdyEvent event;
  event.kind = SpdyEvent::kGone;
  event.error = std::move(error);
  return event;
}

SpdyEvent SpdySession::Fail(uint32_t goaway_status, std::string error) {
  GoAway(goaway_status);
  return Gone(std::move(error));
}

void SpdySession::GoAway(uint32_t status) {
  if (!goaway_sent_.exchange(true)) {
    std::lock_guard lock(write_mu_);
    Write(spdy::GoAway(last_client_stream_, status)).ok();
  }
}

void SpdySession::Reset(uint32_t stream_id, uint32_t status) {
  {
    std::lock_guard lock(streams_mu_);
    fin_sent_[stream_id] = true;
  }
  std::lock_guard lock(write_mu_);
  Write(spdy::RstStream(stream_id, status)).ok();
}

base::Status SpdySession::Send(uint32_t stream_id, std::string_view data, bool fin) {
  {
    std::lock_guard lock(streams_mu_);
    auto it = fin_sent_.find(stream_id);
    if (it == fin_sent_.end()) {
      return base::FailedPrecondition("no SPDY stream " + std::to_string(stream_id));
    }
    if (it->second) {
      return base::FailedPrecondition("SPDY stream " + std::to_string(stream_id) + " already closed");
    }
    if (fin) {
      it->second = true;
    }
  }
  do {
    std::string_view chunk = data.substr(0, kMaxDataFrame);
    data.remove_prefix(chunk.size());
    uint8_t flags = fin && data.empty() ? spdy::kFlagFin : 0;
    CHRYS_RETURN_IF_ERROR(Write(spdy::EncodeData(stream_id, flags, chunk)));
  } while (!data.empty());
  return base::Status::Ok();
}

SpdyEvent SpdySession::Next(Clock::time_point deadline) {
  char chunk[16384];
  while (true) {
    if (gone_) {
      return Gone("session ended");
    }
    auto parsed = spdy::ParseFrame(buffer_, max_frame_bytes_);
    if (!parsed.ok()) {
      return Fail(spdy::kGoAwayProtocolError, parsed.error().message());
    }
    if (!parsed->has_value()) {
      auto now = Clock::now();
      if (now >= deadline) {
        SpdyEvent event;
        event.kind = SpdyEvent::kTimeout;
        return event;
      }
      auto idle_left = std::chrono::milliseconds(last_activity_.load() + idle_timeout_.count() - NowMs());
      if (idle_left.count() <= 0) {
        return Fail(spdy::kGoAwayOk, "no traffic for " + std::to_string(idle_timeout_.count() / 1000) + " s");
      }
      auto wait = std::min(
          {kReadSlice, idle_left,
           std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) + std::chrono::milliseconds(1)});
      auto n = connection_.ReadSome(chunk, sizeof(chunk), wait);
      if (!n.ok()) {
        if (n.error().code() == base::ErrorCode::kDeadlineExceeded) {
          continue;
        }
        return Gone(n.error().message());
      }
      if (*n == 0) {
        return Gone(buffer_.empty() ? "" : "the client closed the connection inside a frame");
      }
      Touch();
      buffer_.append(chunk, *n);
      continue;
    }
    spdy::Frame frame = std::move((*parsed)->frame);
    buffer_.erase(0, (*parsed)->consumed);

    if (!frame.control) {
      uint32_t id = frame.stream_id;
      bool known;
      {
        std::lock_guard lock(streams_mu_);
        known = fin_sent_.count(id) > 0;
      }
      if (!known) {
        std::lock_guard lock(write_mu_);
        Write(spdy::RstStream(id, spdy::kRstInvalidStream)).ok();
        continue;
      }
      if (!frame.payload.empty()) {
        // We never hold back a stream's data, so give the window straight back (strict SPDY/3.1 senders
        // would otherwise stall after 64 KiB; Kubernetes' own clients ignore these).
        std::lock_guard lock(write_mu_);
        auto size = static_cast<uint32_t>(frame.payload.size());
        Write(spdy::WindowUpdate(id, size)).ok();
        Write(spdy::WindowUpdate(0, size)).ok();
      }
      if (!frame.payload.empty()) {
        SpdyEvent event;
        event.kind = SpdyEvent::kData;
        event.stream_id = id;
        event.data = std::move(frame.payload);
        if (frame.flags & spdy::kFlagFin) {
          // Deliver the data now and the end right after: push the FIN back as an empty data frame.
          buffer_.insert(0, spdy::EncodeData(id, spdy::kFlagFin, ""));
        }
        return event;
      }
      if (frame.flags & spdy::kFlagFin) {
        SpdyEvent event;
        event.kind = SpdyEvent::kStreamEnd;
        event.stream_id = id;
        return event;
      }
      continue;
    }

    switch (frame.type) {
      case spdy::kSynStream: {
        auto syn = spdy::ParseSynStream(frame.payload);
        if (!syn.ok()) {
          return Fail(spdy::kGoAwayProtocolError, syn.error().message());
        }
        // The header block must be inflated even for a refused stream: the zlib context is shared.
        auto headers = decompressor_.Decompress(syn->header_block, kMaxHeaderBytes);
        if (!headers.ok()) {
          return Fail(spdy::kGoAwayProtocolError, headers.error().message());
        }
        uint32_t id = syn->stream_id;
        if (id == 0 || id % 2 == 0 || id <= last_client_stream_) {
          return Fail(spdy::kGoAwayProtocolError,
                      "SYN_STREAM with stream id " + std::to_string(id) + " (client ids are odd and increasing)");
        }
        last_client_stream_ = id;
        bool refused = false;
        {
          std::lock_guard lock(streams_mu_);
          refused = fin_sent_.size() >= kMaxStreams;
          if (!refused) {
            fin_sent_[id] = false;
          }
        }
        if (refused) {
          std::lock_guard lock(write_mu_);
          Write(spdy::RstStream(id, spdy::kRstRefusedStream)).ok();
          continue;
        }
        {
          std::lock_guard lock(write_mu_);
          auto block = compressor_.Compress({});
          if (!block.ok() || !Write(spdy::SynReply(id, 0, *block)).ok()) {
            return Gone("could not reply to the client's stream");
          }
        }
        SpdyEvent event;
        event.kind = SpdyEvent::kNewStream;
        event.stream_id = id;
        event.headers = std::move(*headers);
        if (frame.flags & spdy::kFlagFin) {
          buffer_.insert(0, spdy::EncodeData(id, spdy::kFlagFin, ""));
        }
        return event;
      }
      case spdy::kSynReply:
      case spdy::kHeaders: {
        auto parsed_headers = spdy::ParseStreamHeaders(frame.payload);
        if (!parsed_headers.ok()) {
          return Fail(spdy::kGoAwayProtocolError, parsed_headers.error().message());
        }
        auto headers = decompressor_.Decompress(parsed_headers->second, kMaxHeaderBytes);
        if (!headers.ok()) {
          return Fail(spdy::kGoAwayProtocolError, headers.error().message());
        }
        continue;  // we open no streams to reply to, and extra headers mean nothing here
      }
      case spdy::kRstStream: {
        auto words = spdy::ParseTwoWords(frame.payload);
        if (!words.ok()) {
          return Fail(spdy::kGoAwayProtocolError, words.error().message());
        }
        {
          std::lock_guard lock(streams_mu_);
          auto it = fin_sent_.find(words->first);
          if (it == fin_sent_.end()) {
            continue;
          }
          it->second = true;  // nothing more may be sent on a reset stream
        }
        SpdyEvent event;
        event.kind = SpdyEvent::kStreamEnd;
        event.stream_id = words->first;
        event.reset = true;
        return event;
      }
      case spdy::kSettings: {
        auto valid = spdy::ValidateSettings(frame.payload);
        if (!valid.ok()) {
          return Fail(spdy::kGoAwayProtocolError, valid.error().message());
        }
        continue;
      }
      case spdy::kPing: {
        auto id = spdy::ParsePing(frame.payload);
        if (!id.ok()) {
          return Fail(spdy::kGoAwayProtocolError, id.error().message());
        }
        if (*id % 2 == 1) {  // the client's ping: echo it; ours (even) need no answer
          std::lock_guard lock(write_mu_);
          Write(spdy::Ping(*id)).ok();
        }
        continue;
      }
      case spdy::kGoAway:
        return Gone("");
      case spdy::kWindowUpdate: {
        auto words = spdy::ParseTwoWords(frame.payload);
        if (!words.ok()) {
          return Fail(spdy::kGoAwayProtocolError, words.error().message());
        }
        continue;  // we do not hold data back for windows (as Kubernetes' SPDY peers do not)
      }
      default:
        continue;  // SPDY/3: unknown control frames are ignored
    }
  }
}

}  // namespace chrys::cri::streaming
