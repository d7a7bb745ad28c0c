#include "cri/streaming/connection.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace chrys::cri::streaming {

namespace {

using Clock = std::chrono::steady_clock;

std::string TlsErrorText() {
  unsigned long err = ERR_get_error();
  if (err == 0) {
    return "TLS error";
  }
  char text[256];
  ERR_error_string_n(err, text, sizeof(text));
  ERR_clear_error();
  return text;
}

// Waits for `events` on `fd` or a wake-up; kDeadlineExceeded on timeout, kCancelled when woken.
base::Status WaitFor(int fd, int wake, short events, std::chrono::milliseconds timeout) {
  pollfd fds[2] = {{fd, events, 0}, {wake, POLLIN, 0}};
  auto deadline = Clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() < 0) {
      return base::DeadlineExceeded("no progress on the connection for " + std::to_string(timeout.count()) + " ms");
    }
    int n = ::poll(fds, 2, static_cast<int>(std::min<int64_t>(left.count(), 1 << 30)));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return base::SystemError("poll");
    }
    if (fds[1].revents != 0) {
      return base::MakeError(base::ErrorCode::kCancelled, "connection shut down");
    }
    if (n > 0) {
      return base::Status::Ok();
    }
  }
}

}  // namespace

base::Result<std::unique_ptr<Connection>> Connection::Accept(base::UniqueFd fd, SSL_CTX* tls,
                                                             std::chrono::milliseconds handshake_timeout) {
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return base::SystemError("set the client socket non-blocking");
  }
  std::unique_ptr<Connection> conn(new Connection(std::move(fd)));
  conn->wake_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!conn->wake_) {
    return base::SystemError("eventfd");
  }
  if (tls == nullptr) {
    return conn;
  }
  conn->ssl_ = SSL_new(tls);
  if (conn->ssl_ == nullptr || SSL_set_fd(conn->ssl_, conn->fd_.get()) != 1) {
    return base::Internal("TLS session: " + TlsErrorText());
  }
  auto deadline = Clock::now() + handshake_timeout;
  while (true) {
    int rc = SSL_accept(conn->ssl_);
    if (rc == 1) {
      return conn;
    }
    int err = SSL_get_error(conn->ssl_, rc);
    short events = err == SSL_ERROR_WANT_READ ? POLLIN : err == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
    if (events == 0) {
      return base::Unavailable("TLS handshake failed: " + TlsErrorText());
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    CHRYS_RETURN_IF_ERROR(WaitFor(conn->fd_.get(), conn->wake_.get(), events, left));
  }
}

Connection::~Connection() {
  if (ssl_ != nullptr) {
    SSL_free(ssl_);
  }
}

void Connection::Shutdown() {
  if (shut_down_.exchange(true)) {
    return;
  }
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof(one));
  ::shutdown(fd_.get(), SHUT_RDWR);
}

base::Result<size_t> Connection::ReadRaw(char* buffer, size_t size, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (true) {
    if (shut_down_) {
      return base::MakeError(base::ErrorCode::kCancelled, "connection shut down");
    }
    short want = POLLIN;
    if (ssl_ != nullptr) {
      std::lock_guard lock(ssl_mu_);
      int rc = SSL_read(ssl_, buffer, static_cast<int>(std::min<size_t>(size, 1 << 30)));
      if (rc > 0) {
        return static_cast<size_t>(rc);
      }
      int err = SSL_get_error(ssl_, rc);
      if (err == SSL_ERROR_ZERO_RETURN) {
        return size_t{0};
      }
      if (err == SSL_ERROR_WANT_WRITE) {
        want = POLLOUT;
      } else if (err != SSL_ERROR_WANT_READ) {
        if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
          return size_t{0};  // the peer closed without close_notify
        }
        return base::Unavailable("TLS read: " + TlsErrorText());
      }
    } else {
      ssize_t n = ::recv(fd_.get(), buffer, size, 0);
      if (n >= 0) {
        return static_cast<size_t>(n);
      }
      if (errno == ECONNRESET) {
        return size_t{0};
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return base::SystemError("read from client");
      }
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    CHRYS_RETURN_IF_ERROR(WaitFor(fd_.get(), wake_.get(), want, left));
  }
}

base::Result<size_t> Connection::ReadSome(char* buffer, size_t size, std::chrono::milliseconds timeout) {
  if (!pending_.empty()) {
    size_t n = std::min(size, pending_.size());
    std::memcpy(buffer, pending_.data(), n);
    pending_.erase(0, n);
    return n;
  }
  return ReadRaw(buffer, size, timeout);
}

base::Status Connection::ReadExact(char* buffer, size_t size, std::chrono::milliseconds timeout) {
  size_t done = 0;
  while (done < size) {
    CHRYS_ASSIGN_OR_RETURN(size_t n, ReadSome(buffer + done, size - done, timeout));
    if (n == 0) {
      return base::MakeError(base::ErrorCode::kAborted, "the client closed the connection");
    }
    done += n;
  }
  return base::Status::Ok();
}

base::Result<std::string> Connection::ReadHead(size_t max_bytes, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  std::string head = std::move(pending_);
  pending_.clear();
  char chunk[4096];
  while (true) {
    size_t end = head.find("\r\n\r\n");
    if (end != std::string::npos) {
      pending_ = head.substr(end + 4);
      head.resize(end + 4);
      return head;
    }
    if (head.size() > max_bytes) {
      return base::InvalidArgument("request head larger than " + std::to_string(max_bytes) + " bytes");
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      return base::DeadlineExceeded("no complete request within " + std::to_string(timeout.count()) + " ms");
    }
    CHRYS_ASSIGN_OR_RETURN(size_t n, ReadRaw(chunk, sizeof(chunk), left));
    if (n == 0) {
      return base::MakeError(base::ErrorCode::kAborted, "the client closed the connection before a request");
    }
    head.append(chunk, n);
  }
}

base::Status Connection::WriteAll(std::string_view data, std::chrono::milliseconds timeout) {
  std::lock_guard write_lock(write_mu_);
  while (!data.empty()) {
    if (shut_down_) {
      return base::MakeError(base::ErrorCode::kCancelled, "connection shut down");
    }
    short want = POLLOUT;
    if (ssl_ != nullptr) {
      std::lock_guard lock(ssl_mu_);
      int rc = SSL_write(ssl_, data.data(), static_cast<int>(std::min<size_t>(data.size(), 1 << 20)));
      if (rc > 0) {
        data.remove_prefix(static_cast<size_t>(rc));
        continue;
      }
      int err = SSL_get_error(ssl_, rc);
      if (err == SSL_ERROR_WANT_READ) {
        want = POLLIN;
      } else if (err != SSL_ERROR_WANT_WRITE) {
        return base::Unavailable("TLS write: " + TlsErrorText());
      }
    } else {
      ssize_t n = ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
      if (n > 0) {
        data.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return base::SystemError("write to client");
      }
    }
    CHRYS_RETURN_IF_ERROR(WaitFor(fd_.get(), wake_.get(), want, timeout));
  }
  return base::Status::Ok();
}

}  // namespace chrys::cri::streaming
