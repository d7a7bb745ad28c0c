// Unit tests of the streaming server: codec, tokens, and WebSocket exec sessions against a scripted runtime.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/unique_fd.h"
#include "cri/streaming/http.h"
#include "cri/streaming/remote_command.h"
#include "cri/streaming/server.h"
#include "cri/streaming/token_cache.h"
#include "cri/streaming/websocket.h"

namespace chrys::cri::streaming {
namespace {

using namespace std::chrono_literals;

ExecRequest Req(const std::string& container, std::vector<std::string> cmd = {}, bool tty = false) {
  ExecRequest request;
  request.container_id = container;
  request.sandbox_id = "p";
  request.cmd = std::move(cmd);
  request.tty = tty;
  request.stdin = true;
  request.stderr = !tty;
  return request;
}

// ---- codec ----

TEST(WebSocketCodec, AcceptKeyMatchesRfcExample) {
  EXPECT_EQ(ws::AcceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST(WebSocketCodec, MaskedRoundTripAllLengthForms) {
  for (size_t size : {size_t{0}, size_t{5}, size_t{125}, size_t{126}, size_t{65535}, size_t{70000}}) {
    std::string payload(size, 'x');
    for (size_t i = 0; i < size; ++i) {
      payload[i] = static_cast<char>(i * 7);
    }
    std::string wire = ws::EncodeFrame(ws::kBinary, payload, true, 0x11223344u);
    auto parsed = ws::ParseFrame(wire, 1 << 20, /*from_client=*/true);
    ASSERT_TRUE(parsed.ok()) << parsed.error().message();
    ASSERT_TRUE(parsed->has_value());
    EXPECT_EQ((*parsed)->consumed, wire.size());
    EXPECT_EQ((*parsed)->frame.payload, payload);
    // Every strict prefix asks for more bytes.
    auto partial = ws::ParseFrame(std::string_view(wire).substr(0, wire.size() - 1), 1 << 20, true);
    ASSERT_TRUE(partial.ok());
    EXPECT_FALSE(partial->has_value());
  }
}

TEST(WebSocketCodec, RejectsBadFrames) {
  EXPECT_FALSE(ws::ParseFrame(ws::EncodeFrame(ws::kBinary, "abc"), 1024, /*from_client=*/true).ok())
      << "unmasked client frame";
  std::string reserved = ws::EncodeFrame(ws::kBinary, "abc", true, 1u);
  reserved[0] = static_cast<char>(reserved[0] | 0x40);
  EXPECT_FALSE(ws::ParseFrame(reserved, 1024, true).ok());
  std::string bad_opcode = ws::EncodeFrame(0x3, "abc", true, 1u);
  EXPECT_FALSE(ws::ParseFrame(bad_opcode, 1024, true).ok());
  auto big = ws::ParseFrame(ws::EncodeFrame(ws::kBinary, std::string(2000, 'a'), true, 1u), 1024, true);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code(), base::ErrorCode::kResourceExhausted);
  EXPECT_FALSE(ws::ParseFrame(ws::EncodeFrame(ws::kPing, "p", false, 1u), 1024, true).ok()) << "fragmented ping";
}

TEST(Http, ParsesUpgradeRequest) {
  auto req = ParseHttpRequest(
      "GET /exec/abc?command=ls&command=-l%20x&tty=1 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n"
      "Sec-WebSocket-Protocol: v5.channel.k8s.io, v4.channel.k8s.io\r\n\r\n");
  ASSERT_TRUE(req.ok()) << req.error().message();
  EXPECT_EQ(req->path, "/exec/abc");
  EXPECT_EQ(req->QueryValues("command"), (std::vector<std::string>{"ls", "-l x"}));
  EXPECT_TRUE(req->QueryFlag("tty"));
  EXPECT_TRUE(req->HasToken("connection", "upgrade"));
  EXPECT_EQ(req->HeaderTokens("sec-websocket-protocol").size(), 2u);
  EXPECT_FALSE(ParseHttpRequest("garbage\r\n\r\n").ok());
  EXPECT_FALSE(ParseHttpRequest("GET /x HTTP/1.1\r\nno colon\r\n\r\n").ok());
}

TEST(RemoteCommand, StatusJsonCarriesExitCode) {
  auto failure = nlohmann::json::parse(ExitStatusJson(3));
  EXPECT_EQ(failure["status"], "Failure");
  EXPECT_EQ(failure["reason"], "NonZeroExitCode");
  EXPECT_EQ(failure["details"]["causes"][0]["reason"], "ExitCode");
  EXPECT_EQ(failure["details"]["causes"][0]["message"], "3");
  EXPECT_EQ(nlohmann::json::parse(ExitStatusJson(0))["status"], "Success");
  auto size = ParseResize(R"({"Width":100,"Height":40})");
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(size->first, 100);
  EXPECT_EQ(size->second, 40);
  EXPECT_FALSE(ParseResize(R"({"Width":-1,"Height":40})").ok());
  EXPECT_FALSE(ParseResize("not json").ok());
}

TEST(TokenCache, SingleUseAndExpiry) {
  auto now = std::chrono::steady_clock::now();
  TokenCache cache(60s, 2, [&] { return now; });
  auto a = cache.Insert(Req("a"));
  auto b = cache.Insert(Req("b"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
  EXPECT_GE(a->size(), 40u);
  EXPECT_FALSE(cache.Insert(ExecRequest{}).ok()) << "full of live tokens";
  auto taken = cache.Take(*a);
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(std::get<ExecRequest>(*taken).container_id, "a");
  EXPECT_FALSE(cache.Take(*a).has_value()) << "reused";
  EXPECT_FALSE(cache.Take("unknown").has_value());
  now += 61s;
  EXPECT_FALSE(cache.Take(*b).has_value()) << "expired";
  EXPECT_TRUE(cache.Insert(ExecRequest{}).ok());
}

// ---- a scripted runtime ----

// Commands: "echo" copies stdin to stdout until stdin closes; "exit N" writes "out"/"err" and exits N;
// "size" reports each resize as "WxH\n" until stdin closes; "hang" runs until aborted.
class FakeProcess : public StreamProcess {
 public:
  FakeProcess(std::vector<std::string> cmd, std::atomic<int>& aborted) : cmd_(std::move(cmd)), aborted_(aborted) {
    if (cmd_[0] == "exit") {
      Push(OutputStream::kStdout, "out");
      Push(OutputStream::kStderr, "err");
      exit_code_ = std::stoi(cmd_[1]);
      End();
    }
  }
  base::Status WriteStdin(std::string_view data) override {
    if (cmd_[0] == "echo") {
      Push(OutputStream::kStdout, std::string(data));
    }
    return base::Status::Ok();
  }
  base::Status CloseStdin() override {
    End();
    return base::Status::Ok();
  }
  base::Status Resize(uint16_t width, uint16_t height) override {
    Push(OutputStream::kStdout, std::to_string(width) + "x" + std::to_string(height) + "\n");
    return base::Status::Ok();
  }
  base::Status PumpOutput(const OutputSink& sink) override {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return !queue_.empty() || ended_ || abort_; });
      if (abort_) {
        return base::MakeError(base::ErrorCode::kCancelled, "aborted");
      }
      if (queue_.empty()) {
        return base::Status::Ok();
      }
      auto [stream, data] = queue_.front();
      queue_.pop_front();
      lock.unlock();
      bool more = sink(stream, data);
      lock.lock();
      if (!more) {
        return base::MakeError(base::ErrorCode::kCancelled, "client gone");
      }
    }
  }
  base::Result<StreamExit> Wait() override { return StreamExit{exit_code_}; }
  void Abort() override {
    std::lock_guard lock(mu_);
    if (!abort_) {
      abort_ = true;
      ++aborted_;
    }
    cv_.notify_all();
  }

 private:
  void Push(OutputStream stream, std::string data) {
    std::lock_guard lock(mu_);
    queue_.emplace_back(stream, std::move(data));
    cv_.notify_all();
  }
  void End() {
    std::lock_guard lock(mu_);
    ended_ = true;
    cv_.notify_all();
  }

  std::vector<std::string> cmd_;
  std::atomic<int>& aborted_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<OutputStream, std::string>> queue_;
  bool ended_ = false;
  bool abort_ = false;
  int exit_code_ = 0;
};

class FakeRuntime : public StreamRuntime {
 public:
  base::Result<std::unique_ptr<StreamProcess>> StartExec(const ExecRequest& request) override {
    if (request.container_id == "missing") {
      return base::NotFound("no container missing");
    }
    return std::unique_ptr<StreamProcess>(new FakeProcess(request.cmd, aborted));
  }
  base::Result<std::unique_ptr<StreamProcess>> Attach(const AttachRequest&) override {
    return base::MakeError(base::ErrorCode::kUnimplemented, "no attach");
  }
  base::Result<std::unique_ptr<PortConnection>> DialPort(const PortForwardRequest&, int32_t) override {
    return base::MakeError(base::ErrorCode::kUnimplemented, "no port-forward");
  }
  std::atomic<int> aborted{0};
};

// ---- a minimal WebSocket client ----

class WsClient {
 public:
  // Connects and sends the upgrade; returns the HTTP status line's code.
  int Connect(int port, const std::string& path, const std::string& protocols, const std::string& extra = "") {
    fd_.Reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      return -1;
    }
    std::string req = "GET " + path +
                      " HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    if (!protocols.empty()) {
      req += "Sec-WebSocket-Protocol: " + protocols + "\r\n";
    }
    req += extra + "\r\n";
    SendRaw(req);
    while (buffer_.find("\r\n\r\n") == std::string::npos) {
      if (!Fill()) {
        return -1;
      }
    }
    size_t end = buffer_.find("\r\n\r\n");
    head_ = buffer_.substr(0, end);
    buffer_.erase(0, end + 4);
    if (head_.size() < 12) {
      return -1;
    }
    return std::stoi(head_.substr(9, 3));
  }
  const std::string& head() const { return head_; }
  void SendRaw(std::string_view data) {
    ASSERT_EQ(::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL), (ssize_t)data.size());
  }
  void Send(uint8_t channel, std::string_view data) {
    std::string payload(1, static_cast<char>(channel));
    payload += data;
    SendRaw(ws::EncodeFrame(ws::kBinary, payload, true, 0xA1B2C3D4u));
  }
  // Next frame from the server, or nullopt at EOF/timeout.
  std::optional<ws::Frame> Next() {
    while (true) {
      auto parsed = ws::ParseFrame(buffer_, 1 << 24, /*from_client=*/false);
      if (!parsed.ok()) {
        ADD_FAILURE() << parsed.error().message();
        return std::nullopt;
      }
      if (parsed->has_value()) {
        buffer_.erase(0, (*parsed)->consumed);
        return (*parsed)->frame;
      }
      if (!Fill()) {
        return std::nullopt;
      }
    }
  }
  // Collects channel data until the server closes; returns data per channel and the close code.
  std::map<int, std::string> ReadUntilClose(int* close_code = nullptr) {
    std::map<int, std::string> out;
    while (auto frame = Next()) {
      if (frame->opcode == ws::kClose) {
        if (close_code != nullptr && frame->payload.size() >= 2) {
          *close_code = (static_cast<uint8_t>(frame->payload[0]) << 8) | static_cast<uint8_t>(frame->payload[1]);
        }
        SendRaw(ws::EncodeFrame(ws::kClose, "", true, 1u));
        break;
      }
      if (!frame->payload.empty()) {
        out[static_cast<uint8_t>(frame->payload[0])] += frame->payload.substr(1);
      }
    }
    return out;
  }
  // Reads channel data until `channel` has accumulated `want`.
  bool WaitFor(int channel, const std::string& want) {
    std::string got;
    while (got.find(want) == std::string::npos) {
      auto frame = Next();
      if (!frame || frame->opcode == ws::kClose) {
        return false;
      }
      if (!frame->payload.empty() && static_cast<uint8_t>(frame->payload[0]) == channel) {
        got += frame->payload.substr(1);
      }
    }
    return true;
  }
  void Close() { fd_.Reset(); }

 private:
  bool Fill() {
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, 10000) <= 0) {
      return false;
    }
    char chunk[65536];
    ssize_t n = ::recv(fd_.get(), chunk, sizeof(chunk), 0);
    if (n <= 0) {
      return false;
    }
    buffer_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  base::UniqueFd fd_;
  std::string buffer_;
  std::string head_;
};

class StreamingServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StreamingServerOptions options;
    options.max_frame_bytes = 4096;
    options.stream_creation_timeout = 5s;
    auto server = StreamingServer::Start(options, runtime_);
    ASSERT_TRUE(server.ok()) << server.error().message();
    server_ = std::move(*server);
  }
  std::string ExecPath(std::vector<std::string> cmd, bool tty = false, const std::string& container = "c1") {
    auto url = server_->ExecUrl(Req(container, std::move(cmd), tty));
    EXPECT_TRUE(url.ok());
    return url->substr(server_->base_url().size());
  }
  void ExpectIdle() {
    for (int i = 0; i < 100 && server_->active_connections() > 0; ++i) {
      std::this_thread::sleep_for(50ms);
    }
    EXPECT_EQ(server_->active_connections(), 0u);
  }

  FakeRuntime runtime_;
  std::unique_ptr<StreamingServer> server_;
};

TEST_F(StreamingServerTest, UrlPointsAtServer) {
  auto url = server_->ExecUrl(Req("c"));
  ASSERT_TRUE(url.ok());
  EXPECT_EQ(url->rfind("http://127.0.0.1:" + std::to_string(server_->port()) + "/exec/", 0), 0u) << *url;
}

TEST_F(StreamingServerTest, ExitCodeAndSeparateStreamsV5) {
  WsClient client;
  ASSERT_EQ(client.Connect(server_->port(), ExecPath({"exit", "3"}), "v5.channel.k8s.io, v4.channel.k8s.io"), 101);
  EXPECT_NE(client.head().find("Sec-WebSocket-Protocol: v5.channel.k8s.io"), std::string::npos);
  EXPECT_NE(client.head().find("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), std::string::npos);
  int code = 0;
  auto out = client.ReadUntilClose(&code);
  EXPECT_EQ(out[1], "out");
  EXPECT_EQ(out[2], "err");
  auto status = nlohmann::json::parse(out[3]);
  EXPECT_EQ(status["details"]["causes"][0]["message"], "3");
  EXPECT_EQ(code, ws::kCloseNormal);
  ExpectIdle();
}

TEST_F(StreamingServerTest, SuccessV4) {
  WsClient client;
  ASSERT_EQ(client.Connect(server_->port(), ExecPath({"exit", "0"}), "v4.channel.k8s.io"), 101);
  auto out = client.ReadUntilClose();
  EXPECT_EQ(nlohmann::json::parse(out[3])["status"], "Success");
}

TEST_F(StreamingServerTest, InteractiveEchoResizeAndStdinClose) {
  WsClient client;
  ASSERT_EQ(client.Connect(server_->port(), ExecPath({"echo"}, true), "v5.channel.k8s.io"), 101);
  client.Send(0, "hello\n");
  EXPECT_TRUE(client.WaitFor(1, "hello\n"));
  client.Send(4, R"({"Width":123,"Height":45})");
  EXPECT_TRUE(client.WaitFor(1, "123x45\n"));
  client.Send(255, std::string(1, '\0'));  // v5: stdin closed
  auto out = client.ReadUntilClose();
  EXPECT_EQ(nlohmann::json::parse(out[3])["status"], "Success");
  EXPECT_EQ(runtime_.aborted.load(), 0);
}

TEST_F(StreamingServerTest, TokensAreSingleUseAndUnknownIs404) {
  std::string path = ExecPath({"exit", "0"});
  WsClient first;
  ASSERT_EQ(first.Connect(server_->port(), path, "v5.channel.k8s.io"), 101);
  first.ReadUntilClose();
  WsClient reused;
  EXPECT_EQ(reused.Connect(server_->port(), path, "v5.channel.k8s.io"), 404);
  WsClient unknown;
  EXPECT_EQ(unknown.Connect(server_->port(), "/exec/nosuchtoken", "v5.channel.k8s.io"), 404);
  WsClient wrong_kind;
  EXPECT_EQ(wrong_kind.Connect(server_->port(), "/attach" + ExecPath({"exit", "0"}).substr(5), "v5.channel.k8s.io"),
            404);
}

TEST_F(StreamingServerTest, WrongSubprotocolIsRejected) {
  WsClient client;
  EXPECT_EQ(client.Connect(server_->port(), ExecPath({"exit", "0"}), "v9.channel.k8s.io"), 400);
  WsClient none;
  EXPECT_EQ(none.Connect(server_->port(), ExecPath({"exit", "0"}), ""), 400);
}

TEST_F(StreamingServerTest, MalformedAndOversizedFramesCloseTheSessionButServerServesOthers) {
  WsClient bad;
  ASSERT_EQ(bad.Connect(server_->port(), ExecPath({"hang"}), "v5.channel.k8s.io"), 101);
  bad.SendRaw(ws::EncodeFrame(ws::kBinary, "\x00unmasked"));  // servers must reject unmasked frames
  int code = 0;
  bad.ReadUntilClose(&code);
  EXPECT_EQ(code, ws::kCloseProtocolError);

  WsClient big;
  ASSERT_EQ(big.Connect(server_->port(), ExecPath({"hang"}), "v5.channel.k8s.io"), 101);
  big.Send(0, std::string(10000, 'a'));
  code = 0;
  big.ReadUntilClose(&code);
  EXPECT_EQ(code, ws::kCloseTooBig);
  ExpectIdle();
  EXPECT_EQ(runtime_.aborted.load(), 2) << "both processes aborted";

  WsClient good;
  ASSERT_EQ(good.Connect(server_->port(), ExecPath({"exit", "5"}), "v5.channel.k8s.io"), 101);
  auto out = good.ReadUntilClose();
  EXPECT_EQ(nlohmann::json::parse(out[3])["details"]["causes"][0]["message"], "5");
}

TEST_F(StreamingServerTest, ClientDroppingMidStreamAbortsTheProcess) {
  WsClient client;
  ASSERT_EQ(client.Connect(server_->port(), ExecPath({"hang"}), "v5.channel.k8s.io"), 101);
  client.Close();
  ExpectIdle();
  EXPECT_EQ(runtime_.aborted.load(), 1);
}

TEST_F(StreamingServerTest, GarbageRequestGets400AndRuntimeErrorIsHttpError) {
  WsClient client;
  EXPECT_EQ(client.Connect(server_->port(), ExecPath({"exit", "0"}, false, "missing"), "v5.channel.k8s.io"), 404);
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(server_->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  std::string junk = "\x16\x03\x01 not http\r\n\r\n";
  ASSERT_GT(::send(fd, junk.data(), junk.size(), 0), 0);
  char reply[64] = {};
  ASSERT_GT(::recv(fd, reply, sizeof(reply) - 1, 0), 0);
  EXPECT_EQ(std::string(reply).substr(0, 12), "HTTP/1.1 400");
  ::close(fd);
  ExpectIdle();
}

TEST_F(StreamingServerTest, StopEndsOpenSessions) {
  WsClient client;
  ASSERT_EQ(client.Connect(server_->port(), ExecPath({"hang"}), "v5.channel.k8s.io"), 101);
  server_->Stop();
  EXPECT_EQ(runtime_.aborted.load(), 1);
  EXPECT_FALSE(server_->ExecUrl(ExecRequest{}).ok());
}

}  // namespace
}  // namespace chrys::cri::streaming
