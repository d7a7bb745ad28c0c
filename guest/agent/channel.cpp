#include "guest/agent/channel.h"

#include <dirent.h>
#include <fcntl.h>
#include <grpcpp/server.h>
#include <grpcpp/server_posix.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "base/file_util.h"
#include "base/unique_fd.h"
#include "guest/agent/log.h"

namespace chrys::guest {
namespace {

using base::UniqueFd;

// How often the bridge looks whether a host connected while none is: the port signals POLLHUP
// continuously without one, so there is no event to sleep on.
constexpr auto kHostPollInterval = std::chrono::milliseconds(5);
constexpr size_t kBridgeBuffer = 64 << 10;

// A one-direction byte queue between two descriptors.
struct Pending {
  std::string data;
  size_t offset = 0;
  bool empty() const { return offset == data.size(); }
  bool has_room() const { return data.size() - offset < kBridgeBuffer; }
};

// Reads what is available from `fd` into `q`. Returns false on EOF/error.
bool FillFrom(int fd, Pending& q) {
  char buf[16 << 10];
  ssize_t n = ::read(fd, buf, sizeof(buf));
  if (n > 0) {
    if (q.offset == q.data.size()) {
      q.data.clear();
      q.offset = 0;
    }
    q.data.append(buf, static_cast<size_t>(n));
    return true;
  }
  return n < 0 && (errno == EAGAIN || errno == EINTR);
}

// Writes what it can from `q` to `fd`. Returns false on error.
bool FlushTo(int fd, Pending& q) {
  ssize_t n = ::write(fd, q.data.data() + q.offset, q.data.size() - q.offset);
  if (n > 0) {
    q.offset += static_cast<size_t>(n);
    return true;
  }
  return n < 0 && (errno == EAGAIN || errno == EINTR);
}

// Discards whatever the previous host session left in the port.
void DrainPort(int port) {
  char buf[16 << 10];
  while (::read(port, buf, sizeof(buf)) > 0) {
  }
}

// Waits until a host is connected to the port. Without a host the port reports POLLHUP (and POLLIN, as a
// read would not block: it returns end-of-file), so only the absence of POLLHUP means connected.
void WaitForHost(int port) {
  for (;;) {
    pollfd p{port, POLLIN, 0};
    int r = ::poll(&p, 1, -1);
    if (r > 0 && !(p.revents & POLLHUP)) {
      return;
    }
    std::this_thread::sleep_for(kHostPollInterval);
  }
}

// Copies bytes both ways between the port and our end of the socketpair until either side ends.
void Bridge(int port, int sock) {
  Pending to_sock;
  Pending to_port;
  for (;;) {
    pollfd p[2] = {{port, 0, 0}, {sock, 0, 0}};
    if (to_sock.has_room()) {
      p[0].events |= POLLIN;
    }
    if (!to_port.empty()) {
      p[0].events |= POLLOUT;
    }
    if (to_port.has_room()) {
      p[1].events |= POLLIN;
    }
    if (!to_sock.empty()) {
      p[1].events |= POLLOUT;
    }
    int r = ::poll(p, 2, -1);
    if (r < 0) {
      if (errno == EINTR) {
        continue;
      }
      return;
    }
    if (p[0].revents & (POLLHUP | POLLERR)) {
      return;  // host disconnected: what it still had in flight belongs to a dead session
    }
    if ((p[0].revents & POLLIN) && !FillFrom(port, to_sock)) {
      return;
    }
    if ((p[1].revents & POLLIN) && !FillFrom(sock, to_port)) {
      return;  // gRPC closed the connection
    }
    if ((p[1].revents & (POLLHUP | POLLERR)) && !(p[1].revents & POLLIN)) {
      return;
    }
    if ((p[0].revents & POLLOUT) && !FlushTo(port, to_port)) {
      return;
    }
    if ((p[1].revents & POLLOUT) && !FlushTo(sock, to_sock)) {
      return;
    }
  }
}

}  // namespace

base::Result<std::string> FindVirtioPort(const std::string& port_name, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  do {
    DIR* dir = ::opendir("/sys/class/virtio-ports");
    if (dir != nullptr) {
      std::string found;
      while (dirent* e = ::readdir(dir)) {
        if (e->d_name[0] == '.') {
          continue;
        }
        auto name = base::ReadFile(std::string("/sys/class/virtio-ports/") + e->d_name + "/name", 256);
        if (name.ok() && (*name == port_name || *name == port_name + "\n")) {
          found = std::string("/dev/") + e->d_name;
          break;
        }
      }
      ::closedir(dir);
      if (!found.empty() && ::access(found.c_str(), F_OK) == 0) {
        return found;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  } while (std::chrono::steady_clock::now() < deadline);
  return base::NotFound("no virtio-serial port named '" + port_name + "'");
}

bool HasVirtioVsock() {
  DIR* dir = ::opendir("/sys/bus/virtio/drivers/vmw_vsock_virtio_transport");
  if (dir == nullptr) {
    return false;
  }
  bool bound = false;
  while (dirent* e = ::readdir(dir)) {
    bound = bound || std::string(e->d_name).rfind("virtio", 0) == 0;
  }
  ::closedir(dir);
  return bound;
}

base::Status ServeVsock(grpc::Server* server, uint32_t port) {
  UniqueFd listener(::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener) {
    return base::SystemError("socket(AF_VSOCK)");
  }
  sockaddr_vm addr{};
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = VMADDR_CID_ANY;
  addr.svm_port = port;
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return base::SystemError("bind vsock port " + std::to_string(port));
  }
  if (::listen(listener.get(), 16) != 0) {
    return base::SystemError("listen vsock");
  }
  std::thread([server, fd = listener.Release()] {
    for (;;) {
      int conn = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) {
        if (errno != EINTR) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        continue;
      }
      grpc::AddInsecureChannelFromFd(server, conn);
    }
  }).detach();
  return base::Status::Ok();
}

base::Status ServeVirtioSerial(grpc::Server* server, const std::string& device) {
  UniqueFd port(::open(device.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
  if (!port) {
    return base::SystemError("open " + device);
  }
  std::thread([server, device, fd = port.Release()] {
    for (;;) {
      WaitForHost(fd);
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        LogWarn("socketpair: %s", std::strerror(errno));
        std::this_thread::sleep_for(std::chrono::seconds(1));
        continue;
      }
      UniqueFd ours(sv[1]);
      ::fcntl(ours.get(), F_SETFL, O_NONBLOCK);
      grpc::AddInsecureChannelFromFd(server, sv[0]);  // gRPC owns sv[0] now
      LogInfo("host connected on %s", device.c_str());
      Bridge(fd, ours.get());
      // Closing our end makes gRPC drop that connection and cancel its calls.
      ours.Reset();
      DrainPort(fd);
      LogInfo("host session on %s ended", device.c_str());
      // Wait for this host to really go away before accepting the next session on the same stream.
      for (int i = 0; i < 200; ++i) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 0) > 0 && (p.revents & POLLHUP)) {
          break;
        }
        if (p.revents & POLLIN) {
          break;  // the same host keeps talking: give it a fresh session
        }
        std::this_thread::sleep_for(kHostPollInterval);
      }
    }
  }).detach();
  return base::Status::Ok();
}

}  // namespace chrys::guest
