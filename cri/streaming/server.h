// StreamingServer is chrysd's exec/attach/port-forward endpoint: single-use URLs minted by the CRI RPCs,
// HTTP/1.1 upgrades to WebSocket or SPDY/3.1, bridged to a StreamRuntime (the pod's agent).
#pragma once

#include <atomic>
#include <chrono>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "base/result.h"
#include "base/unique_fd.h"
#include "cri/streaming/requests.h"
#include "cri/streaming/stream_runtime.h"
#include "cri/streaming/token_cache.h"

typedef struct ssl_ctx_st SSL_CTX;

namespace chrys::cri::streaming {

class Connection;
struct HttpRequest;

struct StreamingServerOptions {
  std::string address = "127.0.0.1";  // IPv4 or IPv6 literal
  int port = 0;                       // 0: an ephemeral port
  std::string tls_cert_file;          // both set: serve HTTPS/WSS
  std::string tls_key_file;
  std::chrono::milliseconds idle_timeout = std::chrono::hours(4);
  std::chrono::milliseconds stream_creation_timeout = std::chrono::seconds(30);
  std::chrono::milliseconds token_ttl = std::chrono::minutes(1);
  size_t max_connections = 128;      // further clients get 503 until others finish
  size_t max_frame_bytes = 1 << 20;  // largest WebSocket/SPDY frame accepted from a client
};

class StreamingServer {
 public:
  // Listens and starts accepting. `runtime` must outlive the server.
  static base::Result<std::unique_ptr<StreamingServer>> Start(StreamingServerOptions options, StreamRuntime& runtime);
  ~StreamingServer();
  StreamingServer(const StreamingServer&) = delete;
  StreamingServer& operator=(const StreamingServer&) = delete;

  // Closes the listener and every open session (exec processes are killed), joining all threads.
  void Stop();

  // Mints a single-use URL for the request: "http[s]://<address>:<port>/exec/<token>".
  base::Result<std::string> ExecUrl(const ExecRequest& request);
  base::Result<std::string> AttachUrl(const AttachRequest& request);
  base::Result<std::string> PortForwardUrl(const PortForwardRequest& request);

  int port() const { return port_; }
  std::string base_url() const { return base_url_; }
  // Client connections being served right now.
  size_t active_connections();

 private:
  struct Session {
    std::thread thread;
    std::shared_ptr<Connection> connection;
    std::atomic<bool> done{false};
  };

  StreamingServer(StreamingServerOptions options, StreamRuntime& runtime);
  base::Result<std::string> Mint(const char* kind, StreamRequest request);
  void AcceptLoop();
  void ReapFinishedLocked();
  void Serve(Connection& connection);
  void ServeWebSocket(Connection& connection, const HttpRequest& http, StreamRequest request);
  void ServeWsPortForward(Connection& connection, const HttpRequest& http, const std::string& key,
                          const PortForwardRequest& request);
  void ServeSpdy(Connection& connection, const HttpRequest& http, StreamRequest request);

  StreamingServerOptions options_;
  StreamRuntime& runtime_;
  TokenCache tokens_;
  SSL_CTX* tls_ = nullptr;
  base::UniqueFd listener_;
  base::UniqueFd wake_;
  int port_ = 0;
  std::string base_url_;
  std::thread acceptor_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::list<std::unique_ptr<Session>> sessions_;
};

}  // namespace chrys::cri::streaming
