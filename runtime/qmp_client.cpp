#include "runtime/qmp_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <thread>

namespace chrys::runtime {

using base::Result;
using base::Status;
using nlohmann::json;

namespace {

int RemainingMs(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

}  // namespace

Result<QmpClient> QmpClient::Connect(const std::string& socket_path, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path) {
    return base::InvalidArgument("QMP socket path too long: " + socket_path);
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  QmpClient client;
  client.socket_path_ = socket_path;
  int last_errno = 0;
  while (true) {
    base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
      return base::SystemError("socket");
    }
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      client.fd_ = std::move(fd);
      break;
    }
    last_errno = errno;
    if (Clock::now() >= deadline) {
      return base::DeadlineExceeded("connecting to QMP socket " + socket_path + ": " + std::strerror(last_errno));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHRYS_ASSIGN_OR_RETURN(json greeting, client.ReadMessage(deadline));
  if (!greeting.is_object() || !greeting.contains("QMP")) {
    return base::Internal("QMP socket " + socket_path + " sent no QMP greeting: " + greeting.dump().substr(0, 200));
  }
  CHRYS_RETURN_IF_ERROR(
      client.Execute("qmp_capabilities", json::object(), std::chrono::milliseconds(RemainingMs(deadline))));
  return client;
}

Status QmpClient::WriteAll(const std::string& data, Clock::time_point deadline, int pass_fd) {
  size_t off = 0;
  while (off < data.size()) {
    pollfd pfd{fd_.get(), POLLOUT, 0};
    int r = ::poll(&pfd, 1, RemainingMs(deadline));
    if (r == 0) {
      Drop();
      return base::DeadlineExceeded("writing to QMP socket " + socket_path_);
    }
    if (r < 0) {
      if (errno == EINTR) {
        continue;
      }
      return base::SystemError("poll QMP");
    }
    ssize_t n = 0;
    if (off == 0 && pass_fd >= 0) {
      iovec iov{const_cast<char*>(data.data()), data.size()};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(cmsg), &pass_fd, sizeof(int));
      n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    } else {
      n = ::send(fd_.get(), data.data() + off, data.size() - off, MSG_NOSIGNAL);
    }
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) {
        continue;
      }
      base::Error err = base::SystemError("writing to QMP socket " + socket_path_);
      Drop();
      return err;
    }
    off += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<json> QmpClient::ReadMessage(Clock::time_point deadline) {
  while (true) {
    size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      if (line.find_first_not_of(" \r\t") == std::string::npos) {
        continue;
      }
      json msg = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (msg.is_discarded() || !msg.is_object()) {
        Drop();
        return base::Internal("QMP socket " + socket_path_ + " sent something that is not a QMP message: \"" +
                              line.substr(0, 120) + "\"");
      }
      return msg;
    }
    if (buffer_.size() > kMaxMessageBytes) {
      Drop();
      return base::Internal("QMP message from " + socket_path_ + " exceeds " + std::to_string(kMaxMessageBytes) +
                            " bytes");
    }
    if (!fd_.valid()) {
      return base::Unavailable("QMP connection " + socket_path_ + " is closed");
    }
    pollfd pfd{fd_.get(), POLLIN, 0};
    int r = ::poll(&pfd, 1, RemainingMs(deadline));
    if (r == 0) {
      return base::DeadlineExceeded("no reply on QMP socket " + socket_path_ + " within the deadline");
    }
    if (r < 0) {
      if (errno == EINTR) {
        continue;
      }
      return base::SystemError("poll QMP");
    }
    char chunk[8192];
    ssize_t n = ::recv(fd_.get(), chunk, sizeof chunk, 0);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) {
        continue;
      }
      base::Error err = base::SystemError("reading QMP socket " + socket_path_);
      Drop();
      return err;
    }
    if (n == 0) {
      Drop();
      return base::Unavailable("QMP socket " + socket_path_ + " closed the connection (VMM exited?)");
    }
    buffer_.append(chunk, static_cast<size_t>(n));
  }
}

Result<json> QmpClient::Execute(const std::string& command, const json& arguments, std::chrono::milliseconds timeout) {
  return ExecuteWithFd(command, arguments, -1, timeout);
}

Result<json> QmpClient::ExecuteWithFd(const std::string& command, const json& arguments, int fd,
                                      std::chrono::milliseconds timeout) {
  if (!fd_.valid()) {
    return base::Unavailable("QMP connection " + socket_path_ + " is closed");
  }
  auto deadline = Clock::now() + timeout;
  uint64_t id = next_id_++;
  json request = {{"execute", command}, {"id", id}};
  if (!arguments.is_null() && !arguments.empty()) {
    request["arguments"] = arguments;
  }
  CHRYS_RETURN_IF_ERROR(WriteAll(request.dump() + "\n", deadline, fd));
  while (true) {
    CHRYS_ASSIGN_OR_RETURN(json msg, ReadMessage(deadline));
    if (msg.contains("event")) {
      if (events_.size() < 256) {
        events_.push_back(std::move(msg));
      }
      continue;
    }
    if (!msg.contains("id") || msg["id"] != id) {
      Drop();
      return base::Internal("QMP reply to " + command + " does not match the request: " + msg.dump().substr(0, 200));
    }
    if (msg.contains("return")) {
      return msg["return"];
    }
    if (msg.contains("error") && msg["error"].is_object()) {
      const json& e = msg["error"];
      std::string cls = e.value("class", std::string("GenericError"));
      std::string desc = e.value("desc", std::string("(no description)"));
      std::string what = "QMP " + command;
      what.append(" failed: ").append(cls).append(": ").append(desc);
      return base::Internal(what);
    }
    Drop();
    return base::Internal("QMP reply to " + command + " has neither return nor error: " + msg.dump().substr(0, 200));
  }
}

Result<json> QmpClient::WaitEvent(const std::string& name, const std::function<bool(const json&)>& match,
                                  std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  auto matches = [&](const json& ev) {
    return ev.value("event", std::string()) == name && match(ev.contains("data") ? ev["data"] : json::object());
  };
  for (auto it = events_.begin(); it != events_.end(); ++it) {
    if (matches(*it)) {
      json ev = *it;
      events_.erase(it);
      return ev;
    }
  }
  while (true) {
    CHRYS_ASSIGN_OR_RETURN(json msg, ReadMessage(deadline));
    if (!msg.contains("event")) {
      continue;  // a late reply to a timed-out command
    }
    if (matches(msg)) {
      return msg;
    }
    if (events_.size() < 256) {
      events_.push_back(std::move(msg));
    }
  }
}

}  // namespace chrys::runtime
