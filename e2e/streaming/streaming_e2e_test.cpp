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
#include <thread>

#include "cri/streaming/websocket.h"
#include "e2e/pods/pod_env.h"

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
        if (seen)
          *seen = got;
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

  static inline PodEnv* env_ = nullptr;
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

}  // namespace
}  // namespace chrys::e2e
