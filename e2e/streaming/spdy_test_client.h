// SpdyTestClient: a small SPDY/3.1 client (plain TCP or TLS) speaking the Kubernetes streaming protocols,
// for the streaming server's unit and e2e tests.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "base/unique_fd.h"
#include "cri/streaming/spdy.h"

namespace chrys::cri::streaming::testing {

class SpdyTestClient {
 public:
  SpdyTestClient() = default;
  ~SpdyTestClient() { Close(); }
  SpdyTestClient(const SpdyTestClient&) = delete;
  SpdyTestClient& operator=(const SpdyTestClient&) = delete;

  // Connects to 127.0.0.1:`port` (TLS when `tls`, certificate not checked) and asks to upgrade `path` with the
  // given X-Stream-Protocol-Version values. Returns the HTTP status code, or -1.
  int Connect(int port, const std::string& path, const std::string& protocols, bool tls = false,
              int timeout_ms = 10000) {
    fd_.Reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      return -1;
    }
    if (tls) {
      ctx_ = SSL_CTX_new(TLS_client_method());
      ssl_ = SSL_new(ctx_);
      SSL_set_fd(ssl_, fd_.get());
      if (SSL_connect(ssl_) != 1) {
        return -1;
      }
    }
    std::string req = "POST " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n";
    if (!protocols.empty()) {
      req += "X-Stream-Protocol-Version: " + protocols + "\r\n";
    }
    req += "\r\n";
    SendRaw(req);
    while (buffer_.find("\r\n\r\n") == std::string::npos) {
      if (!Fill()) {
        return -1;
      }
    }
    size_t end = buffer_.find("\r\n\r\n");
    head_ = buffer_.substr(0, end);
    buffer_.erase(0, end + 4);
    return head_.size() >= 12 ? std::stoi(head_.substr(9, 3)) : -1;
  }
  const std::string& head() const { return head_; }

  bool SendRaw(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ssl_ != nullptr ? SSL_write(ssl_, data.data(), static_cast<int>(data.size()))
                                  : ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) {
        return false;
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Opens a stream with the given headers; returns its id.
  uint32_t OpenStream(const spdy::Headers& headers, bool fin = false) {
    uint32_t id = next_id_;
    next_id_ += 2;
    auto block = compressor_.Compress(headers);
    SendRaw(spdy::SynStream(id, 0, fin ? spdy::kFlagFin : 0, block.ok() ? *block : ""));
    return id;
  }
  bool Send(uint32_t id, std::string_view data, bool fin = false) {
    return SendRaw(spdy::EncodeData(id, fin ? spdy::kFlagFin : 0, data));
  }

  // The next frame; SYN_REPLY header blocks are inflated (keeping the zlib context in step). nullopt at EOF,
  // timeout or a frame that does not parse.
  std::optional<spdy::Frame> Next() {
    while (true) {
      auto parsed = spdy::ParseFrame(buffer_, 16 << 20);
      if (!parsed.ok()) {
        return std::nullopt;
      }
      if (parsed->has_value()) {
        spdy::Frame frame = std::move((*parsed)->frame);
        buffer_.erase(0, (*parsed)->consumed);
        if (frame.control && (frame.type == spdy::kSynReply || frame.type == spdy::kHeaders)) {
          auto sh = spdy::ParseStreamHeaders(frame.payload);
          if (!sh.ok() || !decompressor_.Decompress(sh->second, 1 << 20).ok()) {
            return std::nullopt;
          }
          replied_.insert(sh->first);
        }
        if (frame.control && frame.type == spdy::kGoAway) {
          goaway_ = true;
        }
        if (!frame.control && (frame.flags & spdy::kFlagFin)) {
          closed_.insert(frame.stream_id);
        }
        if (frame.control && frame.type == spdy::kRstStream) {
          if (auto words = spdy::ParseTwoWords(frame.payload); words.ok()) {
            closed_.insert(words->first);
          }
        }
        return frame;
      }
      if (!Fill()) {
        return std::nullopt;
      }
    }
  }

  // Reads until every stream in `ids` was closed (FIN) or reset by the server, or the connection ends;
  // returns the data per stream. `resets` collects the reset ones.
  std::map<uint32_t, std::string> ReadUntilClosed(std::set<uint32_t> ids, std::set<uint32_t>* resets = nullptr) {
    std::map<uint32_t, std::string> out;
    for (uint32_t id : closed_) {
      ids.erase(id);  // already closed: nothing more will come
    }
    while (!ids.empty()) {
      auto frame = Next();
      if (!frame) {
        break;
      }
      if (!frame->control) {
        out[frame->stream_id] += frame->payload;
        if (frame->flags & spdy::kFlagFin) {
          ids.erase(frame->stream_id);
        }
      } else if (frame->type == spdy::kRstStream) {
        auto words = spdy::ParseTwoWords(frame->payload);
        if (words.ok()) {
          ids.erase(words->first);
          if (resets != nullptr) {
            resets->insert(words->first);
          }
        }
      }
    }
    return out;
  }

  // Reads until stream `id` has accumulated `want` (other streams' data is kept in `seen`); false as soon as
  // the server closed or reset the stream without it.
  bool WaitFor(uint32_t id, const std::string& want) {
    while (seen_[id].find(want) == std::string::npos) {
      if (closed_.count(id) > 0) {
        return false;
      }
      auto frame = Next();
      if (!frame) {
        return false;
      }
      if (!frame->control) {
        seen_[frame->stream_id] += frame->payload;
      }
    }
    seen_[id].clear();
    return true;
  }

  // True when the server ended the connection (EOF) within the read timeout.
  bool WaitClosed() {
    while (Next()) {
    }
    return eof_;
  }
  bool goaway() const { return goaway_; }
  bool replied(uint32_t id) const { return replied_.count(id) > 0; }

  void Close() {
    if (ssl_ != nullptr) {
      SSL_free(ssl_);
      ssl_ = nullptr;
    }
    if (ctx_ != nullptr) {
      SSL_CTX_free(ctx_);
      ctx_ = nullptr;
    }
    fd_.Reset();
  }

 private:
  bool Fill() {
    char chunk[65536];
    ssize_t n = ssl_ != nullptr ? SSL_read(ssl_, chunk, sizeof(chunk)) : ::recv(fd_.get(), chunk, sizeof(chunk), 0);
    if (n <= 0) {
      eof_ = n == 0 || (ssl_ != nullptr && SSL_get_error(ssl_, static_cast<int>(n)) == SSL_ERROR_ZERO_RETURN) ||
             (ssl_ == nullptr && errno == ECONNRESET);
      return false;
    }
    buffer_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  base::UniqueFd fd_;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string buffer_;
  std::string head_;
  uint32_t next_id_ = 1;
  spdy::HeaderCompressor compressor_;
  spdy::HeaderDecompressor decompressor_;
  std::map<uint32_t, std::string> seen_;
  std::set<uint32_t> replied_;
  std::set<uint32_t> closed_;  // streams the server ended (FIN or RST_STREAM)
  bool goaway_ = false;
  bool eof_ = false;
};

}  // namespace chrys::cri::streaming::testing
