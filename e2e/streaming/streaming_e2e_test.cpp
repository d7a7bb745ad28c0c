// Exec through chrysd's streaming server into a real pod VM, with our own WebSocket client.
#include <arpa/inet.h>
#include <grpcpp/client_context.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "cri/streaming/websocket.h"
#include "e2e/pods/pod_env.h"
#include "e2e/streaming/spdy_test_client.h"

namespace chrys::e2e {
namespace {

namespace ws = cri::streaming::ws;

// A minimal WebSocket client for the k8s channel protocol.
class WsClient {
 public:
  int Connect(const std::string& url, const std::string& protocol) {
    // url: http://127.0.0.1:<port>/exec/<token>
    size_t host_start = url.find("//") + 2;
    size_t colon = url.find(':', host_start);
    size_t slash = url.find('/', colon);
    int port = std::stoi(url.substr(colon + 1, slash - colon - 1));
    fd_.Reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      return -1;
    }
    Raw("GET " + url.substr(slash) +
        " HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: " +
        protocol + "\r\n\r\n");
    while (buffer_.find("\r\n\r\n") == std::string::npos) {
      if (!Fill()) {
        return -1;
      }
    }
    std::string status = buffer_.substr(9, 3);
    buffer_.erase(0, buffer_.find("\r\n\r\n") + 4);
    return std::stoi(status);
  }
  void Raw(const std::string& data) { ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL); }
  void Send(uint8_t channel, const std::string& data) {
    Raw(ws::EncodeFrame(ws::kBinary, std::string(1, static_cast<char>(channel)) + data, true, 0x01020304u));
  }
  std::optional<ws::Frame> Next() {
    while (true) {
      auto parsed = ws::ParseFrame(buffer_, 1 << 24, false);
      if (!parsed.ok()) {
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
  // Reads until `channel` output contains `want` (bounded by the per-read timeout).
  bool WaitFor(int channel, const std::string& want, std::string* seen = nullptr) {
    std::string got;
    while (got.find(want) == std::string::npos) {
      auto frame = Next();
      if (!frame || frame->opcode == ws::kClose) {
        if (seen) {
          *seen = got;
        }
        return false;
      }
      if (!frame->payload.empty() && static_cast<uint8_t>(frame->payload[0]) == channel) {
        got += frame->payload.substr(1);
      }
    }
    return true;
  }
  std::map<int, std::string> ReadUntilClose() {
    std::map<int, std::string> out;
    while (auto frame = Next()) {
      if (frame->opcode == ws::kClose) {
        Raw(ws::EncodeFrame(ws::kClose, "", true, 1u));
        break;
      }
      if (!frame->payload.empty()) {
        out[static_cast<uint8_t>(frame->payload[0])] += frame->payload.substr(1);
      }
    }
    return out;
  }
  void Close() { fd_.Reset(); }

 private:
  bool Fill() {
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, 60000) <= 0) {
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
};

class StreamingE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto env = PodEnv::Create();
    ASSERT_TRUE(env.ok()) << env.error().message();
    env_ = std::move(*env).release();
    v1::PodSandboxConfig pod_config = env_->PodConfig("stream");
    auto pod = env_->RunPod(pod_config);
    ASSERT_TRUE(pod.ok()) << pod.error().message();
    pod_id_ = *pod;
    auto ctr = env_->CreateContainer(pod_id_, env_->ContainerConfig("main", {"sleep", "3600"}), pod_config);
    ASSERT_TRUE(ctr.ok()) << ctr.error().message();
    container_id_ = *ctr;
    ASSERT_TRUE(env_->StartContainer(container_id_).ok());
    pod_config_ = pod_config;
    // An interactive shell on a tty, for attach.
    v1::ContainerConfig tty = env_->ContainerConfig("tty", {"sh"});
    tty.set_tty(true);
    tty.set_stdin(true);
    tty_id_ = Start(tty);
    // A non-tty container that keeps printing, for attach beside the CRI log.
    printer_config_ = env_->ContainerConfig(
        "printer", {"sh", "-c", "i=0; while true; do echo tick-$i; echo warn-$i >&2; i=$((i+1)); sleep 0.3; done"});
    printer_id_ = Start(printer_config_);
    // A TCP echo server on the pod's loopback (one cat per connection).
    echo_id_ = Start(env_->ContainerConfig("echo", {"nc", "-ll", "-p", "7777", "-e", "cat"}));
    // A TCP server that sends a known ~1.6 MB and closes: bulk port-forward downloads, many frames long. Port 7779:
    // 7778 must stay closed (the refused-port test).
    counter_id_ = Start(env_->ContainerConfig("counter", {"nc", "-ll", "-p", "7779", "-e", "seq", "1", "250000"}));
  }
  static std::string Start(const v1::ContainerConfig& config) {
    auto id = env_->CreateContainer(pod_id_, config, pod_config_);
    EXPECT_TRUE(id.ok()) << id.error().message();
    if (!id.ok() || !env_->StartContainer(*id).ok()) {
      return "";
    }
    return *id;
  }
  static void TearDownTestSuite() {
    if (env_ != nullptr) {
      if (!pod_id_.empty()) {
        env_->StopPod(pod_id_).ok();
        env_->RemovePod(pod_id_).ok();
      }
      delete env_;
      env_ = nullptr;
    }
  }
  void SetUp() override {
    if (env_ == nullptr || container_id_.empty()) {
      GTEST_SKIP() << "pod setup failed";
    }
  }
  std::string ExecUrl(const std::vector<std::string>& cmd, bool tty) {
    v1::ExecRequest request;
    request.set_container_id(container_id_);
    for (const auto& arg : cmd) {
      request.add_cmd(arg);
    }
    request.set_tty(tty);
    request.set_stdin(true);
    request.set_stdout(true);
    request.set_stderr(!tty);
    v1::ExecResponse response;
    grpc::ClientContext ctx;
    auto status = env_->runtime().Exec(&ctx, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.url();
  }
  std::string ExecSync(const std::vector<std::string>& cmd) {
    v1::ExecSyncRequest request;
    request.set_container_id(container_id_);
    for (const auto& arg : cmd) {
      request.add_cmd(arg);
    }
    request.set_timeout(30);
    v1::ExecSyncResponse response;
    grpc::ClientContext ctx;
    auto status = env_->runtime().ExecSync(&ctx, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.stdout();
  }

  std::string AttachUrl(const std::string& id, bool tty) {
    v1::AttachRequest request;
    request.set_container_id(id);
    request.set_tty(tty);
    request.set_stdin(true);
    request.set_stdout(true);
    request.set_stderr(!tty);
    v1::AttachResponse response;
    grpc::ClientContext ctx;
    auto status = env_->runtime().Attach(&ctx, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.url();
  }
  std::string PortForwardUrl(int port) {
    v1::PortForwardRequest request;
    request.set_pod_sandbox_id(pod_id_);
    request.add_port(port);
    v1::PortForwardResponse response;
    grpc::ClientContext ctx;
    auto status = env_->runtime().PortForward(&ctx, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.url();
  }
  static std::string PathOf(const std::string& url) { return url.substr(url.find('/', url.find("//") + 2)); }
  static int PortOf(const std::string& url) {
    size_t colon = url.find(':', url.find("//") + 2);
    return std::stoi(url.substr(colon + 1));
  }
  bool Running(const std::string& id) {
    auto status = env_->ContainerStatus(id);
    return status.ok() && status->state() == v1::CONTAINER_RUNNING;
  }
  // Processes in `container` running exactly `needle` (each container has its own pid namespace).
  int CountProcesses(const std::string& container, const std::string& needle) {
    v1::ExecSyncRequest request;
    request.set_container_id(container);
    request.add_cmd("ps");
    request.set_timeout(30);
    v1::ExecSyncResponse response;
    grpc::ClientContext ctx;
    if (!env_->runtime().ExecSync(&ctx, request, &response).ok()) {
      return -1;
    }
    // busybox ps: PID USER TIME COMMAND; count the processes whose whole command line is `needle`.
    int n = 0;
    std::istringstream lines(response.stdout());
    std::string line;
    while (std::getline(lines, line)) {
      std::istringstream fields(line);
      std::vector<std::string> tokens;
      for (std::string t; fields >> t;) {
        tokens.push_back(t);
      }
      n += tokens.size() == 4 && tokens[3] == needle ? 1 : 0;
    }
    return n;
  }

  static inline PodEnv* env_ = nullptr;
  static inline v1::PodSandboxConfig pod_config_;
  static inline v1::ContainerConfig printer_config_;
  static inline std::string tty_id_;
  static inline std::string printer_id_;
  static inline std::string echo_id_;
  static inline std::string counter_id_;
  static inline std::string pod_id_;
  static inline std::string container_id_;
};

TEST_F(StreamingE2eTest, InteractiveTtyRoundTripResizeAndExitCode) {
  WsClient client;
  ASSERT_EQ(client.Connect(ExecUrl({"sh"}, true), "v5.channel.k8s.io"), 101);
  client.Send(0, "echo hi-$((40+2))\n");
  std::string seen;
  EXPECT_TRUE(client.WaitFor(1, "hi-42", &seen)) << seen;
  client.Send(4, R"({"Width":100,"Height":30})");
  client.Send(0, "stty size\n");
  EXPECT_TRUE(client.WaitFor(1, "30 100", &seen)) << seen;
  client.Send(0, "exit 7\n");
  auto out = client.ReadUntilClose();
  auto status = nlohmann::json::parse(out[3], nullptr, false);
  EXPECT_EQ(status["details"]["causes"][0]["message"], "7") << out[3];
}

TEST_F(StreamingE2eTest, SeparateStdoutStderrWithoutTtyV4) {
  WsClient client;
  ASSERT_EQ(client.Connect(ExecUrl({"sh", "-c", "echo out; echo err >&2; exit 0"}, false), "v4.channel.k8s.io"), 101);
  auto out = client.ReadUntilClose();
  EXPECT_EQ(out[1], "out\n");
  EXPECT_EQ(out[2], "err\n");
  EXPECT_EQ(nlohmann::json::parse(out[3], nullptr, false)["status"], "Success") << out[3];
}

TEST_F(StreamingE2eTest, UsedTokenIs404) {
  std::string url = ExecUrl({"true"}, false);
  WsClient first;
  ASSERT_EQ(first.Connect(url, "v5.channel.k8s.io"), 101);
  first.ReadUntilClose();
  WsClient again;
  EXPECT_EQ(again.Connect(url, "v5.channel.k8s.io"), 404);
}

TEST_F(StreamingE2eTest, ClientDroppingMidStreamLeavesNoProcessInTheGuest) {
  WsClient client;
  ASSERT_EQ(client.Connect(ExecUrl({"sleep", "4242"}, false), "v5.channel.k8s.io"), 101);
  client.Close();
  bool gone = false;
  for (int i = 0; i < 60 && !gone; ++i) {
    gone = ExecSync({"ps"}).find("sleep 4242") == std::string::npos;
    if (!gone) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
  EXPECT_TRUE(gone) << "the exec's process survived its client";
}

TEST_F(StreamingE2eTest, SpdyExecTtyRoundTripResizeAndExitCode) {
  using cri::streaming::testing::SpdyTestClient;
  std::string url = ExecUrl({"sh"}, true);
  SpdyTestClient client;
  ASSERT_EQ(client.Connect(PortOf(url), PathOf(url), "v4.channel.k8s.io", false, 60000), 101);
  uint32_t error = client.OpenStream({{"streamtype", "error"}});
  uint32_t in = client.OpenStream({{"streamtype", "stdin"}});
  uint32_t out = client.OpenStream({{"streamtype", "stdout"}});
  uint32_t resize = client.OpenStream({{"streamtype", "resize"}});
  client.Send(in, "echo spdy-$((40+3))\n");
  EXPECT_TRUE(client.WaitFor(out, "spdy-43"));
  client.Send(resize, "{\"Width\":120,\"Height\":40}\n");
  client.Send(in, "stty size\n");
  EXPECT_TRUE(client.WaitFor(out, "40 120"));
  client.Send(in, "exit 9\n");
  auto got = client.ReadUntilClosed({error, out});
  EXPECT_EQ(nlohmann::json::parse(got[error], nullptr, false)["details"]["causes"][0]["message"], "9") << got[error];
}

TEST_F(StreamingE2eTest, AttachToTtyContainerRoundTripAndDetachKeepsItRunning) {
  ASSERT_FALSE(tty_id_.empty());
  {
    WsClient client;
    ASSERT_EQ(client.Connect(AttachUrl(tty_id_, true), "v5.channel.k8s.io"), 101);
    client.Send(0, "echo attached-$((6*7))\n");
    std::string seen;
    EXPECT_TRUE(client.WaitFor(1, "attached-42", &seen)) << seen;
    client.Send(4, R"({"Width":77,"Height":33})");
    client.Send(0, "stty size\n");
    EXPECT_TRUE(client.WaitFor(1, "33 77", &seen)) << seen;
  }  // detach by dropping the connection
  std::this_thread::sleep_for(std::chrono::seconds(1));
  EXPECT_TRUE(Running(tty_id_)) << "detaching must not stop the container";
  // A second attach (SPDY this time) finds the same shell.
  using cri::streaming::testing::SpdyTestClient;
  std::string url = AttachUrl(tty_id_, true);
  SpdyTestClient client;
  ASSERT_EQ(client.Connect(PortOf(url), PathOf(url), "v4.channel.k8s.io", false, 60000), 101);
  client.OpenStream({{"streamtype", "error"}});
  uint32_t in = client.OpenStream({{"streamtype", "stdin"}});
  uint32_t out = client.OpenStream({{"streamtype", "stdout"}});
  client.OpenStream({{"streamtype", "resize"}});
  client.Send(in, "echo again-$((1+1))\n");
  EXPECT_TRUE(client.WaitFor(out, "again-2"));
  client.Close();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  EXPECT_TRUE(Running(tty_id_));
}

TEST_F(StreamingE2eTest, AttachToPrintingContainerLeavesTheLogIntact) {
  ASSERT_FALSE(printer_id_.empty());
  std::string seen_out;
  std::string seen_err;
  {
    WsClient client;
    ASSERT_EQ(client.Connect(AttachUrl(printer_id_, false), "v4.channel.k8s.io"), 101);
    // Until both streams delivered a complete line.
    while (seen_out.find('\n') == std::string::npos || seen_err.find('\n') == std::string::npos) {
      auto frame = client.Next();
      ASSERT_TRUE(frame && frame->opcode != ws::kClose) << "out: " << seen_out << " err: " << seen_err;
      if (frame->payload.size() > 1 && frame->payload[0] == 1) {
        seen_out += frame->payload.substr(1);
      } else if (frame->payload.size() > 1 && frame->payload[0] == 2) {
        seen_err += frame->payload.substr(1);
      }
    }
  }
  // The attached copy took nothing from the log: what the attach saw is in the log too, and the log goes on.
  std::string tick = seen_out.substr(0, seen_out.find('\n'));
  EXPECT_EQ(tick.rfind("tick-", 0), 0u) << tick;
  EXPECT_EQ(seen_err.rfind("warn-", 0), 0u) << seen_err;
  std::vector<std::string> out_lines;
  bool complete = false;
  for (int i = 0; i < 60 && !complete; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    auto log = ReadCriLog(env_->LogPath(pod_config_, printer_config_));
    if (!log.ok()) {
      continue;
    }
    out_lines = JoinedLines(*log, "stdout");
    int after = 0;
    bool found = false;
    for (const auto& line : out_lines) {
      after += found ? 1 : 0;
      found = found || line == tick;
    }
    complete = found && after >= 3;
  }
  EXPECT_TRUE(complete) << "log lacks " << tick << " or stopped after the attach (" << out_lines.size() << " lines)";
  for (size_t i = 1; i < out_lines.size(); ++i) {
    EXPECT_EQ(out_lines[i], "tick-" + std::to_string(i)) << "a line went missing from the log";
    if (out_lines[i] != "tick-" + std::to_string(i)) {
      break;
    }
  }
  EXPECT_TRUE(Running(printer_id_));
}

TEST_F(StreamingE2eTest, PortForwardWebSocketSeveralConnectionsAtOnce) {
  ASSERT_FALSE(echo_id_.empty());
  constexpr int kClients = 3;
  // One forwarded connection that echoes `lines` lines back; false if any step fails.
  auto echo_once = [this](int c, int lines) {
    WsClient client;
    if (client.Connect(PortForwardUrl(7777) + "?port=7777", "v4.channel.k8s.io") != 101) {
      return false;
    }
    std::string prefix = {static_cast<char>(7777 & 0xFF), static_cast<char>(7777 >> 8)};
    std::string seen;
    if (!client.WaitFor(0, prefix, &seen)) {  // the data channel's port prefix comes first
      return false;
    }
    std::string all;
    for (int i = 0; i < lines; ++i) {
      std::string line = "client-" + std::to_string(c) + "-line-" + std::to_string(i) + "\n";
      all += line;
      client.Send(0, line);
    }
    return client.WaitFor(0, all, &seen);
  };
  // The echo server in the container may still be starting: wait (bounded) until one connection echoes.
  bool serving = false;
  for (int attempt = 0; attempt < 30 && !serving; ++attempt) {
    serving = echo_once(-1, 1);
    if (!serving) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
  ASSERT_TRUE(serving) << "the echo server in the pod never answered through port-forward";
  std::vector<std::thread> threads;
  threads.reserve(kClients);
  std::atomic<int> echoed{0};
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      if (echo_once(c, 20)) {
        ++echoed;
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(echoed.load(), kClients);
  // Every forwarded connection ended with its client: the echo server's per-connection cat processes go.
  int left = -1;
  for (int i = 0; i < 40 && left != 0; ++i) {
    left = CountProcesses(echo_id_, "cat");
    if (left != 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
  EXPECT_EQ(left, 0) << "forwarded connections left behind in the guest";
}

// A download far bigger than one agent frame arrives whole and in order (the agent sends up to 256 KiB a frame, the
// WebSocket side re-frames it), and the stream closes when the server in the pod does.
TEST_F(StreamingE2eTest, PortForwardWebSocketBulkDownloadArrivesWholeAndInOrder) {
  constexpr int kCounterPort = 7779;  // the "counter" container's server (7778 is the refused port below)
  ASSERT_FALSE(counter_id_.empty());
  std::string expected;
  for (int i = 1; i <= 250000; ++i) {
    expected += std::to_string(i) + "\n";
  }
  std::string prefix = {static_cast<char>(kCounterPort & 0xFF), static_cast<char>(kCounterPort >> 8)};
  std::string got;
  for (int attempt = 0; attempt < 30; ++attempt) {  // the server may still be starting
    WsClient client;
    ASSERT_EQ(
        client.Connect(PortForwardUrl(kCounterPort) + "?port=" + std::to_string(kCounterPort), "v4.channel.k8s.io"),
        101);
    got = client.ReadUntilClose()[0];
    if (got.size() > prefix.size()) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  ASSERT_GE(got.size(), prefix.size());
  EXPECT_EQ(got.substr(0, prefix.size()), prefix);
  std::string data = got.substr(prefix.size());
  EXPECT_EQ(data.size(), expected.size());
  EXPECT_TRUE(data == expected) << "the forwarded bytes differ from what the server sent";
}

TEST_F(StreamingE2eTest, PortForwardSpdyPairsDropMidStreamAndRefusedPort) {
  ASSERT_FALSE(echo_id_.empty());
  using cri::streaming::testing::SpdyTestClient;
  v1::PortForwardRequest request;
  request.set_pod_sandbox_id(pod_id_);
  v1::PortForwardResponse response;
  grpc::ClientContext ctx;
  ASSERT_TRUE(env_->runtime().PortForward(&ctx, request, &response).ok());
  std::string url = response.url();
  {
    SpdyTestClient client;
    ASSERT_EQ(client.Connect(PortOf(url), PathOf(url), "portforward.k8s.io", false, 60000), 101);
    // Each test has its own pod: the echo server may still be starting. Wait (bounded) until a pair echoes.
    bool serving = false;
    for (int attempt = 0; attempt < 30 && !serving; ++attempt) {
      std::string id = "probe-" + std::to_string(attempt);
      uint32_t error = client.OpenStream({{"streamtype", "error"}, {"port", "7777"}, {"requestid", id}});
      client.Send(error, "", true);
      uint32_t data = client.OpenStream({{"streamtype", "data"}, {"port", "7777"}, {"requestid", id}});
      client.Send(data, "probe\n");
      serving = client.WaitFor(data, "probe\n");
      client.Send(data, "", true);  // cat sees EOF and exits
      if (!serving) {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
      }
    }
    ASSERT_TRUE(serving) << "the echo server in the pod never answered through SPDY port-forward";
    std::vector<std::pair<uint32_t, uint32_t>> pairs;
    for (int i = 0; i < 3; ++i) {
      std::string id = std::to_string(i);
      uint32_t error = client.OpenStream({{"streamtype", "error"}, {"port", "7777"}, {"requestid", id}});
      client.Send(error, "", true);
      uint32_t data = client.OpenStream({{"streamtype", "data"}, {"port", "7777"}, {"requestid", id}});
      pairs.emplace_back(error, data);
    }
    for (size_t i = 0; i < pairs.size(); ++i) {
      client.Send(pairs[i].second, "pair-" + std::to_string(i) + "\n");
    }
    for (size_t i = 0; i < pairs.size(); ++i) {
      EXPECT_TRUE(client.WaitFor(pairs[i].second, "pair-" + std::to_string(i) + "\n"));
    }
    // Half-close one connection: cat sees EOF, exits, the server closes the streams.
    client.Send(pairs[0].second, "last\n", true);
    auto closed = client.ReadUntilClosed({pairs[0].second});
    EXPECT_EQ(closed[pairs[0].second], "last\n");
    // A port nobody listens on: the error stream says so.
    uint32_t error = client.OpenStream({{"streamtype", "error"}, {"port", "7778"}, {"requestid", "9"}});
    uint32_t data = client.OpenStream({{"streamtype", "data"}, {"port", "7778"}, {"requestid", "9"}});
    auto refused = client.ReadUntilClosed({error, data});
    EXPECT_NE(refused[error].find("7778"), std::string::npos) << refused[error];
    // Drop the connection with data in flight on the other two.
    client.Send(pairs[1].second, std::string(100000, 'x'));
    client.Close();
  }
  int left = -1;
  for (int i = 0; i < 40 && left != 0; ++i) {
    left = CountProcesses(echo_id_, "cat");
    if (left != 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
  EXPECT_EQ(left, 0) << "a dropped client left forwarded connections in the guest";
  EXPECT_TRUE(Running(echo_id_));
}

}  // namespace
}  // namespace chrys::e2e
