// Unit tests of the streaming server: codec, tokens, and WebSocket exec sessions against a scripted runtime.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/unique_fd.h"
#include "cri/streaming/http.h"
#include "cri/streaming/remote_command.h"
#include "cri/streaming/server.h"
#include "cri/streaming/spdy.h"
#include "cri/streaming/token_cache.h"
#include "cri/streaming/websocket.h"
#include "e2e/streaming/spdy_test_client.h"

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

// Port 7 echoes (upper-cased, so echo is told apart from a loop-back bug) until the client half-closes; port 9
// says "bye" and closes at once; port 1 refuses.
class FakePortConnection : public PortConnection {
 public:
  FakePortConnection(int32_t port, std::atomic<int>& open) : port_(port), open_(open) {
    ++open_;
    if (port_ == 9) {
      queue_.push_back("bye");
      ended_ = true;
    }
  }
  ~FakePortConnection() override { --open_; }
  base::Status Write(std::string_view data) override {
    std::lock_guard lock(mu_);
    std::string upper(data);
    for (char& c : upper) {
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    queue_.push_back(upper);
    cv_.notify_all();
    return base::Status::Ok();
  }
  base::Status CloseWrite() override {
    std::lock_guard lock(mu_);
    ended_ = true;
    cv_.notify_all();
    return base::Status::Ok();
  }
  base::Status Pump(const std::function<bool(std::string_view)>& sink) override {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return !queue_.empty() || ended_ || aborted_; });
      if (aborted_) {
        return base::MakeError(base::ErrorCode::kCancelled, "aborted");
      }
      if (queue_.empty()) {
        return base::Status::Ok();
      }
      std::string data = queue_.front();
      queue_.pop_front();
      lock.unlock();
      bool more = sink(data);
      lock.lock();
      if (!more) {
        return base::MakeError(base::ErrorCode::kCancelled, "client gone");
      }
    }
  }
  void Abort() override {
    std::lock_guard lock(mu_);
    aborted_ = true;
    cv_.notify_all();
  }

 private:
  int32_t port_;
  std::atomic<int>& open_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  bool ended_ = false;
  bool aborted_ = false;
};

class FakeRuntime : public StreamRuntime {
 public:
  base::Result<std::unique_ptr<StreamProcess>> StartExec(const ExecRequest& request) override {
    if (request.container_id == "missing") {
      return base::NotFound("no container missing");
    }
    return std::unique_ptr<StreamProcess>(new FakeProcess(request.cmd, aborted));
  }
  // Attaching to "c1" behaves like an echo process; detaching counts in `detached`.
  base::Result<std::unique_ptr<StreamProcess>> Attach(const AttachRequest& request) override {
    if (request.container_id != "c1") {
      return base::NotFound("no container " + request.container_id);
    }
    return std::unique_ptr<StreamProcess>(new FakeProcess({"echo"}, detached));
  }
  base::Result<std::unique_ptr<PortConnection>> DialPort(const PortForwardRequest&, int32_t port) override {
    if (port == 1) {
      return base::Unavailable("connection refused");
    }
    return std::unique_ptr<PortConnection>(new FakePortConnection(port, open_ports));
  }
  std::atomic<int> aborted{0};
  std::atomic<int> detached{0};
  std::atomic<int> open_ports{0};
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

// ---- attach ----

TEST_F(StreamingServerTest, AttachRoundTripAndDetachLeavesProcess) {
  AttachRequest request;
  request.container_id = "c1";
  request.sandbox_id = "p";
  request.tty = true;
  request.stdin = true;
  auto url = server_->AttachUrl(request);
  ASSERT_TRUE(url.ok());
  WsClient client;
  ASSERT_EQ(client.Connect(server_->port(), url->substr(server_->base_url().size()), "v5.channel.k8s.io"), 101);
  client.Send(0, "ping\n");
  EXPECT_TRUE(client.WaitFor(1, "ping\n"));
  client.Send(4, R"({"Width":90,"Height":20})");
  EXPECT_TRUE(client.WaitFor(1, "90x20\n"));
  client.Close();
  ExpectIdle();
  EXPECT_EQ(runtime_.detached.load(), 1) << "the attachment was released";
  EXPECT_EQ(runtime_.aborted.load(), 0) << "no exec was killed";

  request.container_id = "gone";
  url = server_->AttachUrl(request);
  WsClient missing;
  EXPECT_EQ(missing.Connect(server_->port(), url->substr(server_->base_url().size()), "v5.channel.k8s.io"), 404);
}

// ---- port-forward over WebSocket ----

std::string PortPrefix(int port) {
  return std::string{static_cast<char>(port & 0xFF), static_cast<char>(port >> 8)};
}

class PortForwardWsTest : public StreamingServerTest {
 protected:
  std::string ForwardPath(std::vector<int32_t> granted, const std::string& query) {
    PortForwardRequest request;
    request.sandbox_id = "p";
    request.ports = std::move(granted);
    auto url = server_->PortForwardUrl(request);
    EXPECT_TRUE(url.ok());
    return url->substr(server_->base_url().size()) + query;
  }
};

TEST_F(PortForwardWsTest, TwoPortsWithPrefixesDataAndErrors) {
  WsClient client;
  ASSERT_EQ(client.Connect(server_->port(), ForwardPath({}, "?port=7&port=1"), "v4.channel.k8s.io"), 101);
  EXPECT_NE(client.head().find("Sec-WebSocket-Protocol: v4.channel.k8s.io"), std::string::npos);
  std::map<int, std::string> got;
  // Each of the four channels starts with its port, little-endian.
  while (got.size() < 4 || got[3].size() < 3) {
    auto frame = client.Next();
    ASSERT_TRUE(frame.has_value());
    got[static_cast<uint8_t>(frame->payload[0])] += frame->payload.substr(1);
  }
  EXPECT_EQ(got[0], PortPrefix(7));
  EXPECT_EQ(got[1], PortPrefix(7));
  EXPECT_EQ(got[2], PortPrefix(1));
  EXPECT_NE(got[3].find("connection refused"), std::string::npos) << got[3];
  EXPECT_EQ(got[3].substr(0, 2), PortPrefix(1));
  client.Send(0, "hello");
  EXPECT_TRUE(client.WaitFor(0, "HELLO"));
  client.Close();
  ExpectIdle();
  EXPECT_EQ(runtime_.open_ports.load(), 0) << "connections released";
}

TEST_F(PortForwardWsTest, PodClosingEndsTheSession) {
  WsClient client;
  ASSERT_EQ(client.Connect(server_->port(), ForwardPath({9}, ""), ""), 101);
  int code = 0;
  auto out = client.ReadUntilClose(&code);
  EXPECT_EQ(out[0], PortPrefix(9) + "bye");
  EXPECT_EQ(code, ws::kCloseNormal);
  ExpectIdle();
  EXPECT_EQ(runtime_.open_ports.load(), 0);
}

TEST_F(PortForwardWsTest, BadRequestsAndBadChannels) {
  WsClient ungranted;
  EXPECT_EQ(ungranted.Connect(server_->port(), ForwardPath({80}, "?port=81"), "v4.channel.k8s.io"), 400);
  WsClient bad_port;
  EXPECT_EQ(bad_port.Connect(server_->port(), ForwardPath({}, "?port=70000"), "v4.channel.k8s.io"), 400);
  WsClient no_port;
  EXPECT_EQ(no_port.Connect(server_->port(), ForwardPath({}, ""), "v4.channel.k8s.io"), 400);
  WsClient wrong_protocol;
  EXPECT_EQ(wrong_protocol.Connect(server_->port(), ForwardPath({7}, ""), "v5.channel.k8s.io"), 400);
  WsClient error_channel;
  ASSERT_EQ(error_channel.Connect(server_->port(), ForwardPath({7}, ""), "v4.channel.k8s.io"), 101);
  error_channel.Send(1, "not for the client to write");
  int code = 0;
  error_channel.ReadUntilClose(&code);
  EXPECT_EQ(code, ws::kCloseProtocolError);
  ExpectIdle();
  EXPECT_EQ(runtime_.open_ports.load(), 0);
}

// ---- SPDY/3.1 ----

using testing::SpdyTestClient;

TEST(SpdyCodec, DictionaryIsSpdy3s) {
  const std::string& dict = spdy::HeaderDictionary();
  EXPECT_EQ(dict.size(), 1423u);
  // The dictionary id every SPDY/3 peer puts in its zlib header.
  EXPECT_EQ(adler32(1, reinterpret_cast<const Bytef*>(dict.data()), static_cast<uInt>(dict.size())), 0xe3c6a7c2u);
}

TEST(SpdyCodec, HeaderBlocksShareOneContextPerDirection) {
  spdy::HeaderCompressor out;
  spdy::HeaderDecompressor in;
  spdy::Headers first = {{"streamtype", "stdout"}, {"x", std::string("a\0b", 3)}};
  spdy::Headers second = {{"streamtype", "stdout"}, {"port", "8080"}};
  auto a = out.Compress(first);
  auto b = out.Compress(second);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_GE(a->size(), 6u);
  EXPECT_NE(static_cast<uint8_t>((*a)[1]) & 0x20, 0) << "zlib header names a preset dictionary";
  EXPECT_EQ(a->substr(2, 4), "\xe3\xc6\xa7\xc2") << "the SPDY/3 dictionary's id";
  auto ha = in.Decompress(*a, 4096);
  auto hb = in.Decompress(*b, 4096);
  ASSERT_TRUE(ha.ok()) << ha.error().message();
  ASSERT_TRUE(hb.ok()) << hb.error().message();
  EXPECT_EQ(*ha, first);
  EXPECT_EQ(*hb, second);
  EXPECT_EQ(spdy::HeaderValue(*hb, "port"), "8080");
  spdy::HeaderDecompressor fresh;
  EXPECT_FALSE(fresh.Decompress("garbage", 4096).ok());
  spdy::HeaderDecompressor bomb;
  spdy::HeaderCompressor big;
  auto huge = big.Compress({{"a", std::string(100000, 'x')}});
  ASSERT_TRUE(huge.ok());
  auto refused = bomb.Decompress(*huge, 4096);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), base::ErrorCode::kResourceExhausted);
}

TEST(SpdyCodec, FramesRoundTripAndBadOnesAreRefused) {
  std::string wire = spdy::EncodeData(5, spdy::kFlagFin, "hello") + spdy::Ping(7);
  auto data = spdy::ParseFrame(wire, 1024);
  ASSERT_TRUE(data.ok() && data->has_value());
  EXPECT_FALSE((*data)->frame.control);
  EXPECT_EQ((*data)->frame.stream_id, 5u);
  EXPECT_EQ((*data)->frame.flags, spdy::kFlagFin);
  EXPECT_EQ((*data)->frame.payload, "hello");
  auto ping = spdy::ParseFrame(std::string_view(wire).substr((*data)->consumed), 1024);
  ASSERT_TRUE(ping.ok() && ping->has_value());
  EXPECT_EQ((*ping)->frame.type, spdy::kPing);
  EXPECT_EQ(*spdy::ParsePing((*ping)->frame.payload), 7u);
  auto partial = spdy::ParseFrame(std::string_view(wire).substr(0, 10), 1024);
  ASSERT_TRUE(partial.ok());
  EXPECT_FALSE(partial->has_value());
  std::string v2 = spdy::Ping(1);
  v2[1] = 2;  // version 2
  EXPECT_FALSE(spdy::ParseFrame(v2, 1024).ok());
  auto big = spdy::ParseFrame(spdy::EncodeData(1, 0, std::string(2000, 'a')), 1024);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code(), base::ErrorCode::kResourceExhausted);
  EXPECT_FALSE(spdy::ParseSynStream("short").ok());
  EXPECT_FALSE(spdy::ValidateSettings(std::string("\0\0\0\x05", 4)).ok());
}

class SpdyServerTest : public StreamingServerTest {
 protected:
  std::string ExecPathFor(std::vector<std::string> cmd, bool tty) { return ExecPath(std::move(cmd), tty); }
  static spdy::Headers Stream(const std::string& type) { return {{"streamtype", type}}; }
};

TEST_F(SpdyServerTest, ExecV4ExitCodeAndSeparateStreams) {
  SpdyTestClient client;
  ASSERT_EQ(client.Connect(server_->port(), ExecPathFor({"exit", "3"}, false), "v4.channel.k8s.io,v3.channel.k8s.io"),
            101);
  EXPECT_NE(client.head().find("X-Stream-Protocol-Version: v4.channel.k8s.io"), std::string::npos);
  uint32_t error = client.OpenStream(Stream("error"));
  uint32_t in = client.OpenStream(Stream("stdin"));
  uint32_t out = client.OpenStream(Stream("stdout"));
  uint32_t err = client.OpenStream(Stream("stderr"));
  auto got = client.ReadUntilClosed({error, out, err});
  EXPECT_TRUE(client.replied(error) && client.replied(in) && client.replied(out) && client.replied(err));
  EXPECT_EQ(got[out], "out");
  EXPECT_EQ(got[err], "err");
  auto status = nlohmann::json::parse(got[error], nullptr, false);
  EXPECT_EQ(status["details"]["causes"][0]["message"], "3") << got[error];
  client.Close();
  ExpectIdle();
}

TEST_F(SpdyServerTest, TtyEchoResizeAndStdinCloseV4) {
  SpdyTestClient client;
  ASSERT_EQ(client.Connect(server_->port(), ExecPathFor({"echo"}, true), "v4.channel.k8s.io"), 101);
  uint32_t error = client.OpenStream(Stream("error"));
  uint32_t in = client.OpenStream(Stream("stdin"));
  uint32_t out = client.OpenStream(Stream("stdout"));
  uint32_t resize = client.OpenStream(Stream("resize"));
  client.Send(in, "hello\n");
  EXPECT_TRUE(client.WaitFor(out, "hello\n"));
  // Two resize messages in one frame, then one split over two frames.
  client.Send(resize, "{\"Width\":100,\"Height\":30}\n{\"Width\":101,\"Height\":31}\n{\"Width\":");
  client.Send(resize, "102,\"Height\":32}\n");
  EXPECT_TRUE(client.WaitFor(out, "100x30\n101x31\n102x32\n"));
  client.Send(in, "", /*fin=*/true);
  auto got = client.ReadUntilClosed({error, out});
  EXPECT_EQ(nlohmann::json::parse(got[error], nullptr, false)["status"], "Success") << got[error];
  EXPECT_EQ(runtime_.aborted.load(), 0);
}

TEST_F(SpdyServerTest, V2ReportsExitAsText) {
  SpdyTestClient client;
  ASSERT_EQ(client.Connect(server_->port(), ExecPathFor({"exit", "4"}, false), "v2.channel.k8s.io"), 101);
  uint32_t error = client.OpenStream(Stream("error"));
  client.OpenStream(Stream("stdin"));
  uint32_t out = client.OpenStream(Stream("stdout"));
  uint32_t err = client.OpenStream(Stream("stderr"));
  auto got = client.ReadUntilClosed({error, out, err});
  EXPECT_EQ(got[error], "command terminated with non-zero exit code: exit status 4");
}

TEST_F(SpdyServerTest, AttachAndDetach) {
  AttachRequest request;
  request.container_id = "c1";
  request.sandbox_id = "p";
  request.stdin = true;
  request.tty = false;
  auto url = server_->AttachUrl(request);
  ASSERT_TRUE(url.ok());
  SpdyTestClient client;
  ASSERT_EQ(client.Connect(server_->port(), url->substr(server_->base_url().size()), "v4.channel.k8s.io"), 101);
  client.OpenStream(Stream("error"));
  uint32_t in = client.OpenStream(Stream("stdin"));
  uint32_t out = client.OpenStream(Stream("stdout"));
  client.OpenStream(Stream("stderr"));
  client.Send(in, "attached\n");
  EXPECT_TRUE(client.WaitFor(out, "attached\n"));
  client.Close();
  ExpectIdle();
  EXPECT_EQ(runtime_.detached.load(), 1);
}

TEST_F(SpdyServerTest, WrongProtocolMissingStreamsAndBadFrames) {
  SpdyTestClient wrong;
  EXPECT_EQ(wrong.Connect(server_->port(), ExecPathFor({"exit", "0"}, false), "v5.channel.k8s.io"), 403);
  SpdyTestClient none;
  EXPECT_EQ(none.Connect(server_->port(), ExecPathFor({"exit", "0"}, false), ""), 403);
  SpdyTestClient pf_protocol;
  EXPECT_EQ(pf_protocol.Connect(server_->port(), ExecPathFor({"exit", "0"}, false), "portforward.k8s.io"), 403);

  // A control frame of another version: GOAWAY, then the connection closes.
  SpdyTestClient bad_version;
  ASSERT_EQ(bad_version.Connect(server_->port(), ExecPathFor({"hang"}, false), "v4.channel.k8s.io"), 101);
  std::string ping = spdy::Ping(1);
  ping[1] = 2;
  bad_version.SendRaw(ping);
  EXPECT_TRUE(bad_version.WaitClosed());
  EXPECT_TRUE(bad_version.goaway());

  // An oversized frame (the test server takes 4 KiB).
  SpdyTestClient big;
  ASSERT_EQ(big.Connect(server_->port(), ExecPathFor({"hang"}, false), "v4.channel.k8s.io"), 101);
  big.SendRaw(spdy::EncodeData(1, 0, std::string(10000, 'a')));
  EXPECT_TRUE(big.WaitClosed());

  // A header block that is not zlib data.
  SpdyTestClient bad_headers;
  ASSERT_EQ(bad_headers.Connect(server_->port(), ExecPathFor({"hang"}, false), "v4.channel.k8s.io"), 101);
  bad_headers.SendRaw(spdy::SynStream(1, 0, 0, "not zlib at all"));
  EXPECT_TRUE(bad_headers.WaitClosed());

  // Even stream ids belong to the server.
  SpdyTestClient even;
  ASSERT_EQ(even.Connect(server_->port(), ExecPathFor({"hang"}, false), "v4.channel.k8s.io"), 101);
  spdy::HeaderCompressor compressor;
  even.SendRaw(spdy::SynStream(2, 0, 0, *compressor.Compress(Stream("error"))));
  EXPECT_TRUE(even.WaitClosed());
  ExpectIdle();
  EXPECT_EQ(runtime_.aborted.load(), 0) << "no process was started for broken sessions";

  // The server still serves others.
  SpdyTestClient good;
  ASSERT_EQ(good.Connect(server_->port(), ExecPathFor({"exit", "0"}, false), "v4.channel.k8s.io"), 101);
  uint32_t error = good.OpenStream(Stream("error"));
  good.OpenStream(Stream("stdin"));
  good.OpenStream(Stream("stdout"));
  good.OpenStream(Stream("stderr"));
  auto got = good.ReadUntilClosed({error});
  EXPECT_EQ(nlohmann::json::parse(got[error], nullptr, false)["status"], "Success") << got[error];
}

TEST(SpdyServerTimeout, StreamsNotCreatedInTimeEndTheSession) {
  FakeRuntime runtime;
  StreamingServerOptions options;
  options.stream_creation_timeout = 300ms;
  auto server = StreamingServer::Start(options, runtime);
  ASSERT_TRUE(server.ok());
  auto url = (*server)->ExecUrl(Req("c1", {"exit", "0"}));
  SpdyTestClient client;
  ASSERT_EQ(client.Connect((*server)->port(), url->substr((*server)->base_url().size()), "v4.channel.k8s.io"), 101);
  uint32_t error = client.OpenStream({{"streamtype", "error"}});  // stdin, stdout, stderr never come
  auto got = client.ReadUntilClosed({error});
  EXPECT_NE(got[error].find("timed out waiting for the client to create its streams"), std::string::npos);
  EXPECT_TRUE(client.WaitClosed());
  EXPECT_EQ(runtime.aborted.load(), 0);
}

TEST_F(SpdyServerTest, PortForwardPairsConcurrentConnectionsErrorsAndDrop) {
  PortForwardRequest request;
  request.sandbox_id = "p";
  auto url = server_->PortForwardUrl(request);
  ASSERT_TRUE(url.ok());
  SpdyTestClient client;
  ASSERT_EQ(client.Connect(server_->port(), url->substr(server_->base_url().size()), "portforward.k8s.io"), 101);
  auto pair = [&](const std::string& port, const std::string& id) {
    uint32_t error = client.OpenStream({{"streamtype", "error"}, {"port", port}, {"requestid", id}});
    client.Send(error, "", /*fin=*/true);  // kubectl closes its side of the error stream at once
    uint32_t data = client.OpenStream({{"streamtype", "data"}, {"port", port}, {"requestid", id}});
    return std::pair{error, data};
  };
  auto [e1, d1] = pair("7", "1");
  auto [e2, d2] = pair("7", "2");
  client.Send(d1, "one");
  client.Send(d2, "two");
  EXPECT_TRUE(client.WaitFor(d2, "TWO"));
  EXPECT_TRUE(client.WaitFor(d1, "ONE"));
  EXPECT_EQ(runtime_.open_ports.load(), 2);
  // Half-close: the pod side (echo) ends, the server closes the data and error streams.
  client.Send(d1, "bye", /*fin=*/true);
  auto closed = client.ReadUntilClosed({d1, e1});
  EXPECT_EQ(closed[d1], "BYE");
  auto [e3, d3] = pair("1", "3");  // refused by the pod
  auto refused = client.ReadUntilClosed({e3, d3});
  EXPECT_NE(refused[e3].find("connection refused"), std::string::npos) << refused[e3];
  // A stream without a usable port is reset; the session goes on.
  uint32_t bad = client.OpenStream({{"streamtype", "data"}, {"port", "0"}, {"requestid", "4"}});
  std::set<uint32_t> resets;
  client.ReadUntilClosed({bad}, &resets);
  EXPECT_EQ(resets.count(bad), 1u);
  client.Send(d2, "still");
  EXPECT_TRUE(client.WaitFor(d2, "STILL"));
  // The client dropping mid-stream releases the open connection.
  client.Close();
  ExpectIdle();
  EXPECT_EQ(runtime_.open_ports.load(), 0);
}

TEST(StreamingTls, SpdyExecOverTlsWithSelfSignedCertificate) {
  char dir_template[] = "/tmp/chrys-stream-tls-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  std::string dir = dir_template;
  std::string cert = dir + "/cert.pem";
  std::string key = dir + "/key.pem";
  std::string cmd =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1 "
      "-keyout " +
      key + " -out " + cert + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  FakeRuntime runtime;
  StreamingServerOptions options;
  options.tls_cert_file = cert;
  options.tls_key_file = key;
  auto server = StreamingServer::Start(options, runtime);
  ASSERT_TRUE(server.ok()) << server.error().message();
  auto url = (*server)->ExecUrl(Req("c1", {"exit", "6"}));
  ASSERT_TRUE(url.ok());
  EXPECT_EQ(url->rfind("https://", 0), 0u) << *url;
  {
    SpdyTestClient client;
    ASSERT_EQ(client.Connect((*server)->port(), url->substr((*server)->base_url().size()), "v4.channel.k8s.io", true),
              101);
    uint32_t error = client.OpenStream({{"streamtype", "error"}});
    client.OpenStream({{"streamtype", "stdin"}});
    uint32_t out = client.OpenStream({{"streamtype", "stdout"}});
    client.OpenStream({{"streamtype", "stderr"}});
    auto got = client.ReadUntilClosed({error, out});
    EXPECT_EQ(got[out], "out");
    EXPECT_EQ(nlohmann::json::parse(got[error], nullptr, false)["details"]["causes"][0]["message"], "6");
    // A plain-text client on the TLS port gets nowhere, and the server keeps serving.
    SpdyTestClient plain;
    EXPECT_EQ(plain.Connect((*server)->port(), "/exec/x", "v4.channel.k8s.io", false, 2000), -1);
  }
  (*server)->Stop();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace chrys::cri::streaming
