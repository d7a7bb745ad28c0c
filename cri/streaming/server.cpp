#include "cri/streaming/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <map>
#include <vector>

#include "cri/streaming/http.h"
#include "cri/streaming/port_forward.h"
#include "cri/streaming/remote_command.h"
#include "cri/streaming/spdy_handlers.h"
#include "cri/streaming/ws_session.h"

namespace chrys::cri::streaming {

namespace {

constexpr size_t kMaxRequestHead = 16 << 10;

// WebSocket remote-command subprotocols in the server's order of preference.
const std::vector<std::pair<std::string, CommandProtocol>>& WsCommandProtocols() {
  static const std::vector<std::pair<std::string, CommandProtocol>> protocols = {
      {"v5.channel.k8s.io", CommandProtocol::kV5},
      {"v4.channel.k8s.io", CommandProtocol::kV4},
      {"v3.channel.k8s.io", CommandProtocol::kV3},
      {"v2.channel.k8s.io", CommandProtocol::kV2},
      {"channel.k8s.io", CommandProtocol::kV1}};
  return protocols;
}

constexpr uint8_t kChannelStdin = 0;
constexpr uint8_t kChannelStdout = 1;
constexpr uint8_t kChannelStderr = 2;
constexpr uint8_t kChannelError = 3;
constexpr uint8_t kChannelResize = 4;
constexpr uint8_t kChannelClose = 255;  // v5: the payload names the channel the client closed

// Remote-command channels over a WebSocket session.
class WsCommandChannels : public CommandChannels {
 public:
  WsCommandChannels(Connection& connection, WsSession& ws, CommandProtocol protocol)
      : connection_(connection), ws_(ws), protocol_(protocol) {}

  base::Status WriteOutput(OutputStream stream, std::string_view data) override {
    return ws_.Send(stream == OutputStream::kStdout ? kChannelStdout : kChannelStderr, data);
  }
  base::Status WriteError(std::string_view data) override { return ws_.Send(kChannelError, data); }

  ClientEvent NextEvent() override {
    while (true) {
      auto message = ws_.Receive();
      if (!message.ok() || !message->has_value()) {
        return Gone(message.ok() ? "" : message.error().message());
      }
      const std::string& m = **message;
      if (m.empty()) {
        continue;
      }
      uint8_t channel = static_cast<uint8_t>(m[0]);
      std::string_view payload = std::string_view(m).substr(1);
      if (channel == kChannelStdin) {
        if (payload.empty()) {
          continue;  // older clients announce the stream with an empty message
        }
        ClientEvent event = ClientEvent::Make(ClientEvent::kStdin);
        event.data = std::string(payload);
        return event;
      }
      if (channel == kChannelResize && protocol_ >= CommandProtocol::kV3) {
        auto size = ParseResize(payload);
        if (!size.ok()) {
          ws_.Close(ws::kCloseProtocolError, size.error().message());
          return Gone(size.error().message());
        }
        ClientEvent event = ClientEvent::Make(ClientEvent::kResize);
        event.width = size->first;
        event.height = size->second;
        return event;
      }
      if (channel == kChannelClose && protocol_ >= CommandProtocol::kV5) {
        if (payload.size() == 1 && static_cast<uint8_t>(payload[0]) == kChannelStdin) {
          return ClientEvent::Make(ClientEvent::kStdinClosed);
        }
        continue;
      }
      ws_.Close(ws::kCloseProtocolError, "unexpected channel " + std::to_string(channel));
      return Gone("message on unexpected channel " + std::to_string(channel));
    }
  }

  void Finish() override {
    ws_.Close(ws::kCloseNormal, "");
    std::unique_lock lock(mu_);
    // Give the client a moment to answer our close so the last output is not lost to a reset.
    if (!cv_.wait_for(lock, std::chrono::seconds(2), [&] { return reader_done_; })) {
      lock.unlock();
      connection_.Shutdown();
    }
  }

 private:
  ClientEvent Gone(std::string error) {
    {
      std::lock_guard lock(mu_);
      reader_done_ = true;
    }
    cv_.notify_all();
    ClientEvent event = ClientEvent::Make(ClientEvent::kGone);
    event.error = std::move(error);
    return event;
  }

  Connection& connection_;
  WsSession& ws_;
  CommandProtocol protocol_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool reader_done_ = false;
};

std::string Reason(int code) {
  switch (code) {
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 403:
      return "Forbidden";
    case 405:
      return "Method Not Allowed";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

void Reply(Connection& connection, int code, const std::string& body) {
  connection.WriteAll(SimpleHttpResponse(code, Reason(code), body + "\n"), std::chrono::seconds(5)).ok();
}

base::Result<std::unique_ptr<StreamProcess>> OpenProcess(StreamRuntime& runtime, const StreamRequest& request) {
  if (const auto* exec = std::get_if<ExecRequest>(&request)) {
    return runtime.StartExec(*exec);
  }
  return runtime.Attach(std::get<AttachRequest>(request));
}

}  // namespace

StreamingServer::StreamingServer(StreamingServerOptions options, StreamRuntime& runtime)
    : options_(std::move(options)), runtime_(runtime), tokens_(options_.token_ttl) {}

base::Result<std::unique_ptr<StreamingServer>> StreamingServer::Start(StreamingServerOptions options,
                                                                      StreamRuntime& runtime) {
  std::unique_ptr<StreamingServer> server(new StreamingServer(std::move(options), runtime));
  const auto& opt = server->options_;
  if (opt.tls_cert_file.empty() != opt.tls_key_file.empty()) {
    return base::InvalidArgument("streaming.tls_cert_file and streaming.tls_key_file must be set together");
  }
  if (!opt.tls_cert_file.empty()) {
    server->tls_ = SSL_CTX_new(TLS_server_method());
    if (server->tls_ == nullptr) {
      return base::Internal("cannot create a TLS context");
    }
    SSL_CTX_set_min_proto_version(server->tls_, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(server->tls_, opt.tls_cert_file.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(server->tls_, opt.tls_key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(server->tls_) != 1) {
      ERR_clear_error();
      return base::InvalidArgument("cannot load the streaming TLS certificate " + opt.tls_cert_file + " and key " +
                                   opt.tls_key_file + " (PEM, matching pair expected)");
    }
  }

  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  bool v6 = opt.address.find(':') != std::string::npos;
  if (v6) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&addr);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(static_cast<uint16_t>(opt.port));
    if (inet_pton(AF_INET6, opt.address.c_str(), &sin6->sin6_addr) != 1) {
      return base::InvalidArgument("streaming.address: not an IP address: " + opt.address);
    }
    addr_len = sizeof(sockaddr_in6);
  } else {
    auto* sin = reinterpret_cast<sockaddr_in*>(&addr);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(static_cast<uint16_t>(opt.port));
    if (inet_pton(AF_INET, opt.address.c_str(), &sin->sin_addr) != 1) {
      return base::InvalidArgument("streaming.address: not an IP address: " + opt.address);
    }
    addr_len = sizeof(sockaddr_in);
  }
  server->listener_.Reset(::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!server->listener_) {
    return base::SystemError("streaming socket");
  }
  int one = 1;
  ::setsockopt(server->listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  std::string where = opt.address + ":" + std::to_string(opt.port);
  if (::bind(server->listener_.get(), reinterpret_cast<sockaddr*>(&addr), addr_len) != 0) {
    return base::SystemError("bind the streaming server to " + where);
  }
  if (::listen(server->listener_.get(), 64) != 0) {
    return base::SystemError("listen on " + where);
  }
  socklen_t len = sizeof(addr);
  ::getsockname(server->listener_.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  server->port_ =
      ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  std::string host = v6 ? "[" + opt.address + "]" : opt.address;
  server->base_url_ = std::string(server->tls_ ? "https" : "http") + "://" + host + ":" + std::to_string(server->port_);
  server->wake_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!server->wake_) {
    return base::SystemError("eventfd");
  }
  server->acceptor_ = std::thread([s = server.get()] { s->AcceptLoop(); });
  return server;
}

StreamingServer::~StreamingServer() {
  Stop();
  if (tls_ != nullptr) {
    SSL_CTX_free(tls_);
  }
}

void StreamingServer::Stop() {
  if (stopping_.exchange(true)) {
    return;
  }
  if (wake_) {
    uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof(one));
  }
  if (acceptor_.joinable()) {
    acceptor_.join();
  }
  std::list<std::unique_ptr<Session>> sessions;
  {
    std::lock_guard lock(mu_);
    sessions.swap(sessions_);
    for (auto& session : sessions) {
      if (session->connection) {
        session->connection->Shutdown();
      }
    }
  }
  for (auto& session : sessions) {
    session->thread.join();
  }
  listener_.Reset();
}

base::Result<std::string> StreamingServer::Mint(const char* kind, StreamRequest request) {
  if (stopping_) {
    return base::Unavailable("the streaming server is shutting down");
  }
  CHRYS_ASSIGN_OR_RETURN(std::string token, tokens_.Insert(std::move(request)));
  return base_url_ + "/" + kind + "/" + token;
}

base::Result<std::string> StreamingServer::ExecUrl(const ExecRequest& request) {
  return Mint("exec", request);
}
base::Result<std::string> StreamingServer::AttachUrl(const AttachRequest& request) {
  return Mint("attach", request);
}
base::Result<std::string> StreamingServer::PortForwardUrl(const PortForwardRequest& request) {
  return Mint("portforward", request);
}

size_t StreamingServer::active_connections() {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (auto& session : sessions_) {
    n += session->done ? 0 : 1;
  }
  return n;
}

void StreamingServer::ReapFinishedLocked() {
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if ((*it)->done) {
      (*it)->thread.join();
      it = sessions_.erase(it);
    } else {
      ++it;
    }
  }
}

void StreamingServer::AcceptLoop() {
  while (!stopping_) {
    pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    int n = ::poll(fds, 2, 1000);
    {
      std::lock_guard lock(mu_);
      ReapFinishedLocked();
    }
    if (n <= 0 || fds[1].revents != 0 || (fds[0].revents & POLLIN) == 0) {
      continue;
    }
    base::UniqueFd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!client) {
      continue;
    }
    int one = 1;
    ::setsockopt(client.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::lock_guard lock(mu_);
    size_t active = 0;
    for (auto& session : sessions_) {
      active += session->done ? 0 : 1;
    }
    bool full = active >= options_.max_connections;
    auto session = std::make_unique<Session>();
    Session* raw = session.get();
    auto fd = std::make_shared<base::UniqueFd>(std::move(client));
    raw->thread = std::thread([this, raw, fd, full] {
      auto conn = Connection::Accept(std::move(*fd), tls_, options_.stream_creation_timeout);
      if (conn.ok()) {
        std::shared_ptr<Connection> shared = std::move(*conn);
        {
          std::lock_guard l(mu_);
          raw->connection = shared;
        }
        if (stopping_) {
          shared->Shutdown();
        } else if (full) {
          Reply(*shared, 503, "too many streaming connections; retry later");
        } else {
          Serve(*shared);
        }
        shared->Shutdown();
      } else {
        spdlog::info("stream: client connection failed: {}", conn.error().message());
      }
      raw->done = true;
    });
    sessions_.push_back(std::move(session));
  }
}

void StreamingServer::Serve(Connection& connection) {
  auto head = connection.ReadHead(kMaxRequestHead, options_.stream_creation_timeout);
  if (!head.ok()) {
    if (head.error().code() == base::ErrorCode::kInvalidArgument) {
      Reply(connection, 400, head.error().message());
    }
    return;
  }
  auto http = ParseHttpRequest(*head);
  if (!http.ok()) {
    Reply(connection, 400, http.error().message());
    return;
  }
  if (http->method != "GET" && http->method != "POST") {
    Reply(connection, 405, "only GET and POST upgrade requests are served");
    return;
  }
  std::string_view path = http->path;
  std::string kind;
  for (const char* k : {"exec", "attach", "portforward"}) {
    std::string prefix = std::string("/") + k + "/";
    if (path.substr(0, prefix.size()) == prefix) {
      kind = k;
      path.remove_prefix(prefix.size());
      break;
    }
  }
  std::optional<StreamRequest> request;
  if (!kind.empty() && !path.empty() && path.find('/') == std::string_view::npos) {
    request = tokens_.Take(std::string(path));
  }
  bool kind_matches = request && ((kind == "exec" && std::holds_alternative<ExecRequest>(*request)) ||
                                  (kind == "attach" && std::holds_alternative<AttachRequest>(*request)) ||
                                  (kind == "portforward" && std::holds_alternative<PortForwardRequest>(*request)));
  if (!kind_matches) {
    Reply(connection, 404, "unknown, expired or already used streaming token");
    return;
  }
  if (http->HasToken("upgrade", "websocket")) {
    ServeWebSocket(connection, *http, std::move(*request));
  } else if (http->HasToken("upgrade", "SPDY/3.1")) {
    ServeSpdy(connection, *http, std::move(*request));
  } else {
    Reply(connection, 400, "expected an upgrade to websocket or SPDY/3.1");
  }
}

void StreamingServer::ServeWebSocket(Connection& connection, const HttpRequest& http, StreamRequest request) {
  std::string key = http.Header("sec-websocket-key");
  if (!http.HasToken("connection", "upgrade") || key.empty() || http.Header("sec-websocket-version") != "13") {
    Reply(connection, 400, "WebSocket upgrade needs Connection: Upgrade, Sec-WebSocket-Key and version 13");
    return;
  }
  if (auto* forward = std::get_if<PortForwardRequest>(&request)) {
    ServeWsPortForward(connection, http, key, *forward);
    return;
  }
  std::string chosen;
  CommandProtocol protocol = CommandProtocol::kV1;
  auto offered = http.HeaderTokens("sec-websocket-protocol");
  for (const auto& [name, version] : WsCommandProtocols()) {
    if (std::find(offered.begin(), offered.end(), name) != offered.end()) {
      chosen = name;
      protocol = version;
      break;
    }
  }
  if (chosen.empty()) {
    Reply(connection, 400, "no supported subprotocol offered (want v5.channel.k8s.io or v4.channel.k8s.io)");
    return;
  }
  // Open the process before answering, so a failure is a plain HTTP error.
  auto opened = OpenProcess(runtime_, request);
  if (!opened.ok()) {
    Reply(connection, opened.error().code() == base::ErrorCode::kNotFound ? 404 : 500, opened.error().message());
    return;
  }
  std::unique_ptr<StreamProcess> process = std::move(*opened);

  std::string response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
  response += "Sec-WebSocket-Accept: " + ws::AcceptKey(key) + "\r\n";
  response += "Sec-WebSocket-Protocol: " + chosen + "\r\n\r\n";
  if (!connection.WriteAll(response).ok()) {
    process->Abort();
    return;
  }
  WsSession ws(connection, options_.max_frame_bytes, options_.idle_timeout);
  WsCommandChannels channels(connection, ws, protocol);
  RunRemoteCommand(*process, channels, protocol);
}

namespace {

// One forwarded connection's client side over WebSocket: data channel 2i, error channel 2i+1.
class WsPortSide : public PortClientSide {
 public:
  WsPortSide(WsSession& ws, uint8_t data_channel) : ws_(ws), data_channel_(data_channel) {}
  bool WriteData(std::string_view data) override { return ws_.Send(data_channel_, data).ok(); }
  void WriteError(std::string_view message) override { ws_.Send(data_channel_ + 1, message).ok(); }
  // The WebSocket port-forward protocol has no per-channel close: the session ends when every port is done.
  void CloseData() override {}

 private:
  WsSession& ws_;
  const uint8_t data_channel_;
};

}  // namespace

void StreamingServer::ServeWsPortForward(Connection& connection, const HttpRequest& http, const std::string& key,
                                         const PortForwardRequest& request) {
  auto offered = http.HeaderTokens("sec-websocket-protocol");
  std::string chosen;
  if (!offered.empty()) {
    for (const char* name : {"v4.channel.k8s.io", "portforward.k8s.io"}) {
      if (std::find(offered.begin(), offered.end(), name) != offered.end()) {
        chosen = name;
        break;
      }
    }
    if (chosen.empty()) {
      Reply(connection, 400, "no supported port-forward subprotocol offered (want v4.channel.k8s.io)");
      return;
    }
  }
  std::vector<int32_t> ports;
  for (const auto& value : http.QueryValues("port")) {
    auto port = ParsePort(value);
    if (!port.ok()) {
      Reply(connection, 400, port.error().message());
      return;
    }
    if (!request.ports.empty() && std::find(request.ports.begin(), request.ports.end(), *port) == request.ports.end()) {
      Reply(connection, 400, "port " + value + " was not granted by the PortForward request");
      return;
    }
    ports.push_back(*port);
  }
  if (ports.empty()) {
    ports = request.ports;
  }
  if (ports.empty() || ports.size() > 64) {
    Reply(connection, 400, "name 1..64 ports with the query parameter \"port\"");
    return;
  }
  std::string response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
  response += "Sec-WebSocket-Accept: " + ws::AcceptKey(key) + "\r\n";
  if (!chosen.empty()) {
    response += "Sec-WebSocket-Protocol: " + chosen + "\r\n";
  }
  response += "\r\n";
  if (!connection.WriteAll(response).ok()) {
    return;
  }
  WsSession ws(connection, options_.max_frame_bytes, options_.idle_timeout);
  std::vector<std::unique_ptr<WsPortSide>> sides;
  std::vector<std::unique_ptr<ForwardedConnection>> forwards;
  for (size_t i = 0; i < ports.size(); ++i) {
    // Each channel starts with its port, little-endian, so the client can match channels to ports.
    std::string prefix = {static_cast<char>(ports[i] & 0xFF), static_cast<char>((ports[i] >> 8) & 0xFF)};
    ws.Send(static_cast<uint8_t>(2 * i), prefix).ok();
    ws.Send(static_cast<uint8_t>(2 * i + 1), prefix).ok();
    sides.push_back(std::make_unique<WsPortSide>(ws, static_cast<uint8_t>(2 * i)));
    forwards.push_back(std::make_unique<ForwardedConnection>(ports[i], *sides.back()));
  }
  for (auto& forward : forwards) {
    forward->Start(runtime_, request);
  }
  // Ends the session once every pod side is done (a watcher closes the WebSocket, which ends Receive).
  std::atomic<bool> client_gone{false};
  std::mutex mu;
  std::condition_variable cv;
  std::thread watcher([&] {
    std::unique_lock lock(mu);
    while (!client_gone) {
      bool all_done = std::all_of(forwards.begin(), forwards.end(), [](auto& f) { return f->pod_done(); });
      if (all_done) {
        lock.unlock();
        for (auto& forward : forwards) {
          forward->ClientDone();
        }
        ws.Close(ws::kCloseNormal, "");
        // Give the client a moment to answer the close, then end the read side ourselves.
        lock.lock();
        if (!cv.wait_for(lock, std::chrono::seconds(2), [&] { return client_gone.load(); })) {
          connection.Shutdown();
        }
        return;
      }
      cv.wait_for(lock, std::chrono::milliseconds(100));
    }
  });
  while (true) {
    auto message = ws.Receive();
    if (!message.ok() || !message->has_value()) {
      if (!message.ok()) {
        spdlog::info("stream: port-forward client: {}", message.error().message());
      }
      break;
    }
    const std::string& m = **message;
    if (m.empty()) {
      continue;
    }
    size_t channel = static_cast<uint8_t>(m[0]);
    if (channel >= 2 * forwards.size() || channel % 2 != 0) {
      ws.Close(ws::kCloseProtocolError, "unexpected channel " + std::to_string(channel));
      break;
    }
    if (m.size() > 1) {
      forwards[channel / 2]->FromClient(std::string_view(m).substr(1));
    }
  }
  {
    std::lock_guard lock(mu);
    client_gone = true;
  }
  cv.notify_all();
  watcher.join();
  // The client cannot read anymore: tear every connection down (the agent closes the pod sockets).
  for (auto& forward : forwards) {
    forward->Abort();
  }
  for (auto& forward : forwards) {
    forward->Join();
  }
  connection.Shutdown();
}

void StreamingServer::ServeSpdy(Connection& connection, const HttpRequest& http, StreamRequest request) {
  if (!http.HasToken("connection", "upgrade")) {
    Reply(connection, 400, "SPDY upgrade needs Connection: Upgrade");
    return;
  }
  // X-Stream-Protocol-Version: the client's protocols in its order of preference; the server picks the first
  // it speaks.
  auto offered = http.HeaderTokens("x-stream-protocol-version");
  bool forward = std::holds_alternative<PortForwardRequest>(request);
  std::string chosen;
  CommandProtocol protocol = CommandProtocol::kV1;
  for (const auto& name : offered) {
    if (forward && name == "portforward.k8s.io") {
      chosen = name;
      break;
    }
    if (!forward) {
      auto it = std::find_if(WsCommandProtocols().begin(), WsCommandProtocols().end(),
                             [&](const auto& p) { return p.first == name && p.second != CommandProtocol::kV5; });
      if (it != WsCommandProtocols().end()) {
        chosen = name;
        protocol = it->second;
        break;
      }
    }
  }
  if (chosen.empty()) {
    Reply(connection, 403,
          std::string("unable to upgrade: no supported X-Stream-Protocol-Version offered (want ") +
              (forward ? "portforward.k8s.io" : "v4.channel.k8s.io, v3.channel.k8s.io or v2.channel.k8s.io") + ")");
    return;
  }
  std::string response = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n";
  response += "X-Stream-Protocol-Version: " + chosen + "\r\n\r\n";
  if (!connection.WriteAll(response).ok()) {
    return;
  }
  SpdySession session(connection, options_.max_frame_bytes, options_.idle_timeout);
  if (forward) {
    ServeSpdyPortForward(connection, session, runtime_, std::get<PortForwardRequest>(request),
                         options_.stream_creation_timeout);
  } else {
    ServeSpdyCommand(connection, session, runtime_, request, protocol, options_.stream_creation_timeout);
  }
}

}  // namespace chrys::cri::streaming
