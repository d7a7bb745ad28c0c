#include "runtime/agent/transport.h"

#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

namespace chrys::runtime::agent {
namespace {

using base::Result;
using base::UniqueFd;
using Clock = std::chrono::steady_clock;

int RemainingMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

// Finishes a non-blocking connect() within the deadline.
base::Status AwaitConnect(int fd, Clock::time_point deadline, const std::string& what) {
  pollfd p{fd, POLLOUT, 0};
  int n = ::poll(&p, 1, RemainingMs(deadline));
  if (n == 0) {
    return base::DeadlineExceeded("connecting to " + what + " timed out");
  }
  if (n < 0) {
    return base::SystemError("poll on " + what);
  }
  int err = 0;
  socklen_t len = sizeof(err);
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
    return base::SystemError("getsockopt SO_ERROR on " + what);
  }
  if (err != 0) {
    return base::Unavailable("connect to " + what + ": " + std::strerror(err));
  }
  return base::Status::Ok();
}

Result<UniqueFd> ConnectUnix(const std::string& path, Clock::time_point deadline) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return base::InvalidArgument("agent socket path '" + path + "' is empty or longer than " +
                                 std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) {
    return base::SystemError("socket(AF_UNIX)");
  }
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno == ENOENT || errno == ECONNREFUSED) {
      return base::Unavailable("agent socket " + path + " is not listening: " + std::strerror(errno));
    }
    if (errno != EINPROGRESS && errno != EAGAIN) {
      return base::SystemError("connect " + path);
    }
    CHRYS_RETURN_IF_ERROR(AwaitConnect(fd.get(), deadline, path));
  }
  return fd;
}

Result<UniqueFd> ConnectVsock(uint32_t cid, uint32_t port, Clock::time_point deadline) {
  UniqueFd fd(::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) {
    return base::SystemError("socket(AF_VSOCK)");
  }
  sockaddr_vm addr{};
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = cid;
  addr.svm_port = port;
  std::string what = "vsock " + std::to_string(cid) + ":" + std::to_string(port);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno == ECONNREFUSED || errno == ECONNRESET || errno == ENODEV || errno == EHOSTUNREACH) {
      return base::Unavailable("connect " + what + ": " + std::strerror(errno));
    }
    if (errno != EINPROGRESS) {
      return base::SystemError("connect " + what);
    }
    CHRYS_RETURN_IF_ERROR(AwaitConnect(fd.get(), deadline, what));
  }
  return fd;
}

// Cloud Hypervisor hybrid vsock handshake: we send "CONNECT <port>\n", the VMM answers "OK <host port>\n"
// once the guest accepted, or closes the socket when nothing listens on that guest port.
base::Status HybridHandshake(int fd, uint32_t port, Clock::time_point deadline, const std::string& what) {
  std::string request = "CONNECT " + std::to_string(port) + "\n";
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, RemainingMs(deadline)) <= 0) {
        return base::DeadlineExceeded("sending CONNECT to " + what + " timed out");
      }
      continue;
    }
    return base::Unavailable("sending CONNECT to " + what + ": " + std::strerror(errno));
  }
  // Read byte by byte up to the newline: anything after it is already the agent's HTTP/2 stream.
  std::string line;
  while (line.size() < 64) {
    char c = 0;
    ssize_t n = ::recv(fd, &c, 1, 0);
    if (n == 1) {
      if (c == '\n') {
        break;
      }
      line.push_back(c);
      continue;
    }
    if (n == 0) {
      return base::Unavailable(what + " closed the connection after CONNECT " + std::to_string(port) +
                               " (no agent listening on that port yet)");
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno != EAGAIN) {
      return base::Unavailable("reading CONNECT reply from " + what + ": " + std::strerror(errno));
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, RemainingMs(deadline)) <= 0) {
      return base::DeadlineExceeded("waiting for the CONNECT reply from " + what + " timed out");
    }
  }
  if (line.rfind("OK ", 0) != 0) {
    return base::Unavailable(what + " refused CONNECT " + std::to_string(port) + ": '" + line.substr(0, 64) + "'");
  }
  return base::Status::Ok();
}

}  // namespace

AgentEndpoint AgentEndpoint::VirtioSerial(std::string socket_path) {
  AgentEndpoint e;
  e.kind = Kind::kVirtioSerial;
  e.socket_path = std::move(socket_path);
  return e;
}

AgentEndpoint AgentEndpoint::Vsock(uint32_t cid, uint32_t port) {
  AgentEndpoint e;
  e.kind = Kind::kVsock;
  e.cid = cid;
  e.port = port;
  return e;
}

AgentEndpoint AgentEndpoint::HybridVsock(std::string socket_path, uint32_t port) {
  AgentEndpoint e;
  e.kind = Kind::kHybridVsock;
  e.socket_path = std::move(socket_path);
  e.port = port;
  return e;
}

std::string AgentEndpoint::Describe() const {
  switch (kind) {
    case Kind::kVirtioSerial:
      return "virtio-serial:" + socket_path;
    case Kind::kVsock:
      return "vsock:" + std::to_string(cid) + ":" + std::to_string(port);
    case Kind::kHybridVsock:
      return "hybrid-vsock:" + socket_path + ":" + std::to_string(port);
  }
  return "unknown";
}

Result<UniqueFd> ConnectTransport(const AgentEndpoint& endpoint, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  switch (endpoint.kind) {
    case AgentEndpoint::Kind::kVirtioSerial:
      return ConnectUnix(endpoint.socket_path, deadline);
    case AgentEndpoint::Kind::kVsock:
      return ConnectVsock(endpoint.cid, endpoint.port, deadline);
    case AgentEndpoint::Kind::kHybridVsock: {
      CHRYS_ASSIGN_OR_RETURN(UniqueFd fd, ConnectUnix(endpoint.socket_path, deadline));
      CHRYS_RETURN_IF_ERROR(HybridHandshake(fd.get(), endpoint.port, deadline, endpoint.Describe()));
      return fd;
    }
  }
  return base::InvalidArgument("unknown agent endpoint kind");
}

}  // namespace chrys::runtime::agent
