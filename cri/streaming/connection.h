// Connection is one accepted client socket (plain TCP or TLS) with bounded reads and thread-safe writes.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "base/result.h"
#include "base/unique_fd.h"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

namespace chrys::cri::streaming {

class Connection {
 public:
  // Takes the socket. With `tls` set, runs the TLS server handshake within `handshake_timeout`.
  static base::Result<std::unique_ptr<Connection>> Accept(base::UniqueFd fd, SSL_CTX* tls,
                                                          std::chrono::milliseconds handshake_timeout);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Reads up to `size` bytes, waiting at most `timeout`. 0 means the peer closed; kDeadlineExceeded when
  // nothing came in time; kCancelled after Shutdown().
  base::Result<size_t> ReadSome(char* buffer, size_t size, std::chrono::milliseconds timeout);
  // Reads exactly `size` bytes (first from what ReadLine/ReadHead left buffered); kAborted at EOF.
  base::Status ReadExact(char* buffer, size_t size, std::chrono::milliseconds timeout);
  // Reads up to and including "\r\n\r\n" (an HTTP head), at most `max_bytes`; the rest stays buffered.
  base::Result<std::string> ReadHead(size_t max_bytes, std::chrono::milliseconds timeout);
  // Writes everything; concurrent writers are serialised. Fails after `timeout` without progress.
  base::Status WriteAll(std::string_view data, std::chrono::milliseconds timeout = std::chrono::seconds(60));
  // Wakes blocked readers and writers; both fail from now on. Thread-safe.
  void Shutdown();
  bool shut_down() const { return shut_down_.load(); }

 private:
  explicit Connection(base::UniqueFd fd) : fd_(std::move(fd)) {}
  base::Result<size_t> ReadRaw(char* buffer, size_t size, std::chrono::milliseconds timeout);

  base::UniqueFd fd_;
  base::UniqueFd wake_;  // eventfd signalled by Shutdown
  SSL* ssl_ = nullptr;
  std::mutex ssl_mu_;  // OpenSSL objects are not safe for concurrent read and write
  std::mutex write_mu_;
  std::string pending_;  // bytes read past what a caller consumed
  std::atomic<bool> shut_down_{false};
};

}  // namespace chrys::cri::streaming
