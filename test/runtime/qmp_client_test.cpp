// QmpClient against a scripted fake QMP server on a real unix socket: normal exchange, events, errors, garbage.
#include "runtime/qmp_client.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <thread>

namespace chrys::runtime {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// Serves one connection on a unix socket with `script`, which reads requests and writes replies.
class FakeQmpServer {
 public:
  using Script = std::function<void(int fd)>;
  explicit FakeQmpServer(Script script) {
    static int counter = 0;
    path_ = "/tmp/qmp-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".sock";
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
    ::unlink(path_.c_str());
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(listen_fd_, 1), 0);
    thread_ = std::thread([this, script] {
      int conn = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn >= 0) {
        script(conn);
        ::close(conn);
      }
    });
  }
  ~FakeQmpServer() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    ::close(listen_fd_);
    ::unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }

  static void Send(int fd, const std::string& s) {
    ssize_t ignored = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    (void)ignored;
  }
  // Reads one request line and returns it parsed.
  static json Receive(int fd) {
    std::string line;
    char c;
    while (::read(fd, &c, 1) == 1 && c != '\n') {
      line += c;
    }
    return json::parse(line, nullptr, false);
  }
  static void Greet(int fd) {
    Send(fd, R"({"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": []}})"
             "\n");
    json caps = Receive(fd);
    Send(fd, json{{"return", json::object()}, {"id", caps["id"]}}.dump() + "\n");
  }

 private:
  std::string path_;
  int listen_fd_ = -1;
  std::thread thread_;
};

TEST(QmpClientTest, NegotiatesExecutesAndKeepsEvents) {
  FakeQmpServer server([](int fd) {
    FakeQmpServer::Greet(fd);
    json req = FakeQmpServer::Receive(fd);
    EXPECT_EQ(req["execute"], "device_del");
    EXPECT_EQ(req["arguments"]["id"], "disk-a");
    // An event arrives before the reply; then the device really goes.
    FakeQmpServer::Send(fd, R"({"event": "SOMETHING_ELSE", "data": {}})"
                            "\n");
    FakeQmpServer::Send(fd, json{{"return", json::object()}, {"id", req["id"]}}.dump() + "\n");
    FakeQmpServer::Send(fd, R"({"event": "DEVICE_DELETED", "data": {"device": "disk-a", "path": "/x"}})"
                            "\n");
    json status = FakeQmpServer::Receive(fd);
    FakeQmpServer::Send(
        fd, json{{"return", {{"status", "running"}, {"running", true}}}, {"id", status["id"]}}.dump() + "\n");
  });
  auto client = QmpClient::Connect(server.path(), 5s);
  ASSERT_TRUE(client.ok()) << client.error().message();
  ASSERT_TRUE(client->Execute("device_del", {{"id", "disk-a"}}, 5s).ok());
  auto ev = client->WaitEvent(
      "DEVICE_DELETED", [](const json& d) { return d.value("device", "") == "disk-a"; }, 5s);
  ASSERT_TRUE(ev.ok()) << ev.error().message();
  EXPECT_EQ(client->pending_events(), 1u) << "the unrelated event is kept";
  auto status = client->Execute("query-status", json::object(), 5s);
  ASSERT_TRUE(status.ok());
  EXPECT_EQ((*status)["status"], "running");
}

TEST(QmpClientTest, ErrorReplyIsAnErrorWithClassAndDescription) {
  FakeQmpServer server([](int fd) {
    FakeQmpServer::Greet(fd);
    json req = FakeQmpServer::Receive(fd);
    FakeQmpServer::Send(
        fd,
        json{{"error", {{"class", "GenericError"}, {"desc", "Duplicate device ID 'x'"}}}, {"id", req["id"]}}.dump() +
            "\n");
  });
  auto client = QmpClient::Connect(server.path(), 5s);
  ASSERT_TRUE(client.ok());
  auto r = client->Execute("device_add", {{"id", "x"}}, 5s);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("Duplicate device ID"), std::string::npos);
  EXPECT_TRUE(client->connected()) << "a QMP error is a normal reply";
}

TEST(QmpClientTest, GarbageGreetingFailsConnect) {
  FakeQmpServer server([](int fd) { FakeQmpServer::Send(fd, "SSH-2.0-OpenSSH\r\n"); });
  auto client = QmpClient::Connect(server.path(), 5s);
  ASSERT_FALSE(client.ok());
  EXPECT_NE(client.error().message().find("not a QMP message"), std::string::npos) << client.error().message();
}

TEST(QmpClientTest, GarbageReplyDropsTheConnection) {
  FakeQmpServer server([](int fd) {
    FakeQmpServer::Greet(fd);
    FakeQmpServer::Receive(fd);
    FakeQmpServer::Send(fd, "{\"return\": {\"unterminated\n");
  });
  auto client = QmpClient::Connect(server.path(), 5s);
  ASSERT_TRUE(client.ok());
  auto r = client->Execute("query-status", json::object(), 5s);
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(client->connected());
  EXPECT_EQ(client->Execute("query-status", json::object(), 1s).error().code(), base::ErrorCode::kUnavailable);
}

TEST(QmpClientTest, MismatchedIdAndOversizeAndSilenceAreErrors) {
  {
    FakeQmpServer server([](int fd) {
      FakeQmpServer::Greet(fd);
      FakeQmpServer::Receive(fd);
      FakeQmpServer::Send(fd, R"({"return": {}, "id": 999999})"
                              "\n");
    });
    auto client = QmpClient::Connect(server.path(), 5s);
    ASSERT_TRUE(client.ok());
    EXPECT_FALSE(client->Execute("query-status", json::object(), 5s).ok());
  }
  {
    FakeQmpServer server([](int fd) {
      FakeQmpServer::Greet(fd);
      FakeQmpServer::Receive(fd);
      FakeQmpServer::Send(fd, std::string(QmpClient::kMaxMessageBytes + 10, 'a'));
    });
    auto client = QmpClient::Connect(server.path(), 5s);
    ASSERT_TRUE(client.ok());
    auto r = client->Execute("query-status", json::object(), 5s);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("exceeds"), std::string::npos) << r.error().message();
  }
  {
    FakeQmpServer server([](int fd) {
      FakeQmpServer::Greet(fd);
      FakeQmpServer::Receive(fd);
      std::this_thread::sleep_for(600ms);
    });
    auto client = QmpClient::Connect(server.path(), 5s);
    ASSERT_TRUE(client.ok());
    auto r = client->Execute("query-status", json::object(), 200ms);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), base::ErrorCode::kDeadlineExceeded);
  }
}

TEST(QmpClientTest, ExecuteWithFdPassesTheFdWithTheCommand) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  struct stat passed {};
  ASSERT_EQ(::fstat(pipe_fds[1], &passed), 0);
  FakeQmpServer server([&passed](int fd) {
    FakeQmpServer::Greet(fd);
    // The fd rides on the command's first bytes (SCM_RIGHTS), as QEMU's monitor expects for getfd.
    char first[1];
    iovec iov{first, sizeof first};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ASSERT_EQ(::recvmsg(fd, &msg, 0), 1);
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    ASSERT_NE(cmsg, nullptr);
    ASSERT_EQ(cmsg->cmsg_type, SCM_RIGHTS);
    int received = -1;
    std::memcpy(&received, CMSG_DATA(cmsg), sizeof(int));
    struct stat got {};
    EXPECT_EQ(::fstat(received, &got), 0);
    EXPECT_EQ(got.st_ino, passed.st_ino) << "a different file arrived";
    ::close(received);
    std::string line(1, first[0]);
    char c;
    while (::read(fd, &c, 1) == 1 && c != '\n') {
      line += c;
    }
    json req = json::parse(line, nullptr, false);
    EXPECT_EQ(req["execute"], "getfd");
    EXPECT_EQ(req["arguments"]["fdname"], "hnet29q0");
    FakeQmpServer::Send(fd, json{{"return", json::object()}, {"id", req["id"]}}.dump() + "\n");
  });
  auto client = QmpClient::Connect(server.path(), 2s);
  ASSERT_TRUE(client.ok()) << client.error().message();
  auto got = client->ExecuteWithFd("getfd", {{"fdname", "hnet29q0"}}, pipe_fds[1], 2s);
  EXPECT_TRUE(got.ok()) << got.error().message();
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
}

TEST(QmpClientTest, ConnectTimesOutWhenNobodyListens) {
  auto start = std::chrono::steady_clock::now();
  auto client = QmpClient::Connect("/tmp/does-not-exist-qmp.sock", 300ms);
  EXPECT_FALSE(client.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

}  // namespace
}  // namespace chrys::runtime
