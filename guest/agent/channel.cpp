#include "guest/agent/channel.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <memory>
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
// The guest-to-host pipe: room for a whole port-forward frame (256 KiB), so one splice moves it.
constexpr size_t kSplicePipeBytes = 256 << 10;

// A one-direction byte queue between two descriptors.
struct Pending {
  std::string data;
  size_t offset = 0;
  bool empty() const { return offset == data.size(); }
  bool has_room() const { return data.size() - offset < kBridgeBuffer; }
};

// Reads what is available from `fd` into `q` through `buf` (kBridgeBuffer bytes). Returns false on EOF/error.
// Large reads: under TCG each syscall and poll round is many emulated instructions. The buffer is the bridge's
// own: a thread_local one would sit in the static TLS block of every thread the agent starts (gRPC's too), and
// each thread start would zero it.
bool FillFrom(int fd, Pending& q, char* buf) {
  ssize_t n = ::read(fd, buf, kBridgeBuffer);
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

// Guest → host bytes go socket → pipe → port by splice(2): the pages move between kernel buffers instead of
// being read into this process and written back out (each copy is emulated guest work under TCG, and the
// downloads of port-forward and logs are the bulk of what crosses the channel).
class SplicePipe {
 public:
  // Empty (ok() false) when the kernel gives no pipe; the error names why.
  SplicePipe() {
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
      error_ = std::string("pipe: ") + std::strerror(errno);
      return;
    }
    read_end_.Reset(fds[0]);
    write_end_.Reset(fds[1]);
    ::fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(kSplicePipeBytes));  // best effort: the default is 64 KiB
    int size = ::fcntl(fds[1], F_GETPIPE_SZ);
    capacity_ = size > 0 ? static_cast<size_t>(size) : 4096;
  }
  bool ok() const { return static_cast<bool>(read_end_); }
  const std::string& error() const { return error_; }
  bool empty() const { return bytes_ == 0; }
  bool has_room() const { return bytes_ < capacity_; }

  // Moves what `from` has (up to the free room) into the pipe. False on end-of-file or error.
  bool FillFrom(int from) {
    ssize_t n =
        ::splice(from, nullptr, write_end_.get(), nullptr, capacity_ - bytes_, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    if (n > 0) {
      bytes_ += static_cast<size_t>(n);
      return true;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      return true;
    }
    if (n < 0) {
      error_ = std::string("splice from the socket: ") + std::strerror(errno);
    }
    return false;
  }

  // Moves what the pipe holds to `to`, adding the count to `moved`. False on error.
  bool FlushTo(int to, uint64_t& moved) {
    ssize_t n = ::splice(read_end_.get(), nullptr, to, nullptr, bytes_, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    if (n > 0) {
      bytes_ -= static_cast<size_t>(n);
      moved += static_cast<uint64_t>(n);
      return true;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      return true;
    }
    error_ = std::string("splice to the host channel: ") + (n < 0 ? std::strerror(errno) : "nothing moved");
    return false;
  }

 private:
  UniqueFd read_end_;
  UniqueFd write_end_;
  size_t capacity_ = 0;
  size_t bytes_ = 0;
  std::string error_;
};

// Opens a fresh connection to the agent's own gRPC listener: each host session becomes an ordinary
// accepted connection there. (Connections handed to gRPC with AddInsecureChannelFromFd are read once and
// then never polled again by a synchronous server in this gRPC version.)
UniqueFd ConnectLocal(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    return fd;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    LogWarn("connecting to %s: %s", path.c_str(), std::strerror(errno));
    return UniqueFd();
  }
  ::fcntl(fd.get(), F_SETFL, O_NONBLOCK);
  return fd;
}

// Waits until a connected host has sent its first bytes. Without a host the port reports POLLHUP (and
// POLLIN, as a read would not block: it returns end-of-file). Right after the guest opens the port it can
// also look connected before any host is: anything the guest writes then is dropped by the VMM. The HTTP/2
// client always speaks first, so a session starts only on real data from a connected host.
void WaitForHost(int port) {
  for (;;) {
    pollfd p{port, POLLIN, 0};
    int r = ::poll(&p, 1, -1);
    if (r > 0 && !(p.revents & POLLHUP) && (p.revents & POLLIN)) {
      return;
    }
    if (r < 0 || (p.revents & POLLHUP)) {
      std::this_thread::sleep_for(kHostPollInterval);
    }
  }
}

// Copies bytes both ways between the port and our end of the socketpair until either side ends.
constexpr std::string_view kHttp2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// On a shared byte stream (virtio-serial) a new host connection can follow the old one before the guest
// notices, and bytes of the old one can linger. Every HTTP/2 connection starts with the client preface, so
// the bridge starts a session at a preface and ends it when a new preface shows up inside it.
struct PrefaceSync {
  bool enabled = false;
  bool synced = false;
  std::string carry;  // bytes of the next session, read while serving the previous one
};

const char* Bridge(int port, int sock, uint64_t& host_bytes, uint64_t& guest_bytes, PrefaceSync& sync) {
  Pending to_sock;
  std::unique_ptr<char[]> read_buf(new char[kBridgeBuffer]);  // uninitialised: only read() writes it
  SplicePipe to_port;
  if (!to_port.ok()) {
    LogWarn("channel bridge: %s", to_port.error().c_str());
    return "no pipe for the bridge";
  }
  if (!sync.carry.empty()) {
    to_sock.data = std::move(sync.carry);  // starts with the preface
    sync.carry.clear();
    sync.synced = true;
  }
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
    if (!to_sock.empty() && (!sync.enabled || sync.synced)) {
      p[1].events |= POLLOUT;
    }
    int r = ::poll(p, 2, -1);
    if (r < 0) {
      if (errno == EINTR) {
        continue;
      }
      return "poll failed";
    }
    if (p[0].revents & (POLLHUP | POLLERR)) {
      return "host disconnected";  // what it still had in flight belongs to a dead session
    }
    if (p[0].revents & POLLIN) {
      size_t before = to_sock.data.size();
      if (!FillFrom(port, to_sock, read_buf.get())) {
        return "port read failed";
      }
      if (to_sock.data.size() < before) {
        before = 0;  // FillFrom restarted the buffer
      }
      host_bytes += to_sock.data.size() - before;
      if (sync.enabled) {
        std::string& d = to_sock.data;
        if (!sync.synced) {
          size_t at = d.find(kHttp2Preface, to_sock.offset);
          if (at == std::string::npos) {
            // Leftovers of an earlier connection: keep only what could be the start of a preface.
            size_t keep = std::min(d.size() - to_sock.offset, kHttp2Preface.size() - 1);
            d.erase(0, d.size() - keep);
            to_sock.offset = 0;
          } else {
            d.erase(0, at);
            to_sock.offset = 0;
            sync.synced = true;
          }
        } else {
          size_t from = before > kHttp2Preface.size() ? before - kHttp2Preface.size() : 0;
          size_t at = d.find(kHttp2Preface, std::max(from, to_sock.offset + 1));
          if (at != std::string::npos && at > 0) {
            sync.carry = d.substr(at);
            d.resize(at);
            // The old session's host is gone: end that session and start the next one at its preface.
            return "a new host connection started";
          }
        }
      }
    }
    if ((p[1].revents & POLLIN) && !to_port.FillFrom(sock)) {
      if (!to_port.error().empty()) {
        LogWarn("channel bridge: %s", to_port.error().c_str());
      }
      return "gRPC closed the connection";
    }
    if ((p[1].revents & (POLLHUP | POLLERR)) && !(p[1].revents & POLLIN)) {
      return "gRPC side hung up";
    }
    if ((p[0].revents & POLLOUT) && !to_port.FlushTo(port, guest_bytes)) {
      LogWarn("channel bridge: %s", to_port.error().c_str());
      return "port write failed";
    }
    if ((p[1].revents & POLLOUT) && !FlushTo(sock, to_sock)) {
      return "socket write failed";
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

base::Status ServeVsock(const std::string& local_socket, uint32_t port) {
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
  std::thread([local_socket, fd = listener.Release()] {
    for (;;) {
      int conn = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (conn < 0) {
        if (errno != EINTR) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        continue;
      }
      // One bridge thread per host connection; each is its own HTTP/2 session.
      std::thread([local_socket, conn] {
        UniqueFd host(conn);
        UniqueFd local = ConnectLocal(local_socket);
        if (local) {
          uint64_t in = 0;
          uint64_t out = 0;
          PrefaceSync no_sync;
          Bridge(host.get(), local.get(), in, out, no_sync);
        }
      }).detach();
    }
  }).detach();
  return base::Status::Ok();
}

base::Status ServeVirtioSerial(const std::string& local_socket, const std::string& device) {
  UniqueFd port(::open(device.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
  if (!port) {
    return base::SystemError("open " + device);
  }
  std::thread([local_socket, device, fd = port.Release()] {
    PrefaceSync sync;
    sync.enabled = true;
    for (;;) {
      if (sync.carry.empty()) {
        WaitForHost(fd);
      }
      sync.synced = false;
      UniqueFd ours = ConnectLocal(local_socket);
      if (!ours) {
        std::this_thread::sleep_for(std::chrono::seconds(1));
        continue;
      }
      LogInfo("host connected on %s", device.c_str());
      uint64_t host_bytes = 0;
      uint64_t guest_bytes = 0;
      const char* why = Bridge(fd, ours.get(), host_bytes, guest_bytes, sync);
      // Closing our connection makes gRPC drop that session and cancel its calls.
      ours.Reset();
      if (!sync.carry.empty()) {
        continue;  // the next host already started talking
      }
      LogInfo("host session on %s ended: %s (%llu bytes in, %llu out)", device.c_str(), why,
              static_cast<unsigned long long>(host_bytes), static_cast<unsigned long long>(guest_bytes));
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
