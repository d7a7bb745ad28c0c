// fake_cloud_hypervisor: stands in for the cloud-hypervisor binary in unit tests. Serves canned API answers on
// --api-socket path=..., records every request (method, path, body, received fds) as JSON lines, and misbehaves on
// request (--fake-mode): create-500, die-on-boot, garbage-info, garbage-add-disk.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

using nlohmann::json;

namespace {

struct Request {
  std::string method;
  std::string path;
  std::string body;
  std::vector<int> fds;
};

bool ReadRequest(int conn, Request& req) {
  std::string raw;
  size_t head_end = std::string::npos;
  size_t content_length = 0;
  while (true) {
    char buf[8192];
    char control[CMSG_SPACE(sizeof(int) * 16)];
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
    if (n <= 0) {
      return false;
    }
    for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm != nullptr; cm = CMSG_NXTHDR(&msg, cm)) {
      if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
        size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
          int fd;
          std::memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
          req.fds.push_back(fd);
        }
      }
    }
    raw.append(buf, static_cast<size_t>(n));
    if (head_end == std::string::npos) {
      head_end = raw.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        std::string head = raw.substr(0, head_end);
        size_t sp1 = head.find(' ');
        size_t sp2 = head.find(' ', sp1 + 1);
        req.method = head.substr(0, sp1);
        req.path = head.substr(sp1 + 1, sp2 - sp1 - 1);
        std::string lower = head;
        for (auto& c : lower) {
          c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        }
        size_t cl = lower.find("content-length:");
        if (cl != std::string::npos) {
          content_length = std::stoul(head.substr(cl + 15));
        }
      }
    }
    if (head_end != std::string::npos && raw.size() >= head_end + 4 + content_length) {
      req.body = raw.substr(head_end + 4, content_length);
      return true;
    }
  }
}

void Respond(int conn, int status, const std::string& body) {
  std::string reason = status == 200 ? "OK" : status == 204 ? "No Content" : status == 404 ? "Not Found" : "Error";
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\nServer: Cloud Hypervisor API\r\n" +
                    "Connection: close\r\n";
  if (!body.empty()) {
    out += "Content-Type: application/json\r\n";
  }
  out += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  ssize_t ignored = ::send(conn, out.data(), out.size(), MSG_NOSIGNAL);
  (void)ignored;
}

std::string FdTarget(int fd) {
  char buf[256] = {};
  ssize_t n = ::readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "?";
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path, mode, record;
  for (int i = 1; i + 1 < argc; ++i) {
    std::string a = argv[i];
    if (a == "--api-socket") {
      socket_path = std::string(argv[++i]).substr(5);  // "path=..."
    } else if (a == "--fake-mode") {
      mode = argv[++i];
    } else if (a == "--fake-record") {
      record = argv[++i];
    } else if (a == "--log-file") {
      std::ofstream(argv[++i]) << "fake cloud-hypervisor log\n";
    }
  }
  if (socket_path.empty() || record.empty()) {
    std::cerr << "usage: --api-socket path=... --fake-record file [--fake-mode m]\n";
    return 2;
  }
  int lsock = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
  ::unlink(socket_path.c_str());
  if (::bind(lsock, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(lsock, 8) != 0) {
    std::perror("bind");
    return 1;
  }
  std::ofstream rec(record, std::ios::app);
  std::string serial_file;
  int net_count = 0;
  while (true) {
    int conn = ::accept4(lsock, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) {
      continue;
    }
    Request req;
    if (!ReadRequest(conn, req)) {
      ::close(conn);
      continue;
    }
    json fds = json::array();
    for (int fd : req.fds) {
      fds.push_back(FdTarget(fd));
      ::close(fd);
    }
    rec << json{{"method", req.method}, {"path", req.path}, {"body", req.body}, {"fds", fds}}.dump() << std::endl;
    std::string ep = req.path.rfind("/api/v1/", 0) == 0 ? req.path.substr(8) : req.path;
    bool exit_after = false;
    if (ep == "vmm.ping" && req.method == "GET") {
      Respond(conn, 200, json{{"version", "v53.0"}, {"build_version", "fake"}, {"pid", ::getpid()}}.dump());
    } else if (ep == "vm.create" && req.method == "PUT") {
      if (mode == "create-500") {
        Respond(conn, 500, "\"Error creating VM: fake failure\"");
      } else {
        json cfg = json::parse(req.body, nullptr, false);
        if (cfg.is_object() && cfg.contains("serial")) {
          serial_file = cfg["serial"].value("file", "");
        }
        Respond(conn, 204, "");
      }
    } else if (ep == "vm.add-net" && req.method == "PUT") {
      json cfg = json::parse(req.body, nullptr, false);
      size_t queues = cfg.is_object() ? cfg.value("num_queues", 2) : 0;
      if (queues != 2 * req.fds.size()) {
        Respond(conn, 400, "\"num_queues does not match the fds passed\"");
      } else {
        Respond(conn, 200,
                json{{"id", cfg.value("id", "_net" + std::to_string(net_count))},
                     {"bdf", "0000:00:0" + std::to_string(5 + net_count) + ".0"}}
                    .dump());
        ++net_count;
      }
    } else if (ep == "vm.boot" && req.method == "PUT") {
      if (mode == "die-on-boot") {
        return 3;
      }
      if (!serial_file.empty()) {
        std::ofstream(serial_file, std::ios::app) << "fake guest booting\n";
      }
      Respond(conn, 204, "");
    } else if (ep == "vm.add-disk" && req.method == "PUT") {
      if (mode == "garbage-add-disk") {
        Respond(conn, 200, "\x01garbage{");
      } else {
        json cfg = json::parse(req.body, nullptr, false);
        Respond(conn, 200, json{{"id", cfg.value("id", "_disk0")}, {"bdf", "0000:00:09.0"}}.dump());
      }
    } else if (ep == "vm.remove-device" && req.method == "PUT") {
      Respond(conn, 204, "");
    } else if (ep == "vm.info" && req.method == "GET") {
      if (mode == "garbage-info") {
        static const char kJunk[] = "\x00\x01 this is not HTTP\r\n\r\n";
        std::string junk(kJunk, sizeof kJunk - 1);
        ssize_t ignored = ::send(conn, junk.data(), junk.size(), MSG_NOSIGNAL);
        (void)ignored;
      } else {
        Respond(conn, 200, json{{"config", {{"payload", json::object()}}}, {"state", "Running"}}.dump());
      }
    } else if ((ep == "vm.power-button" || ep == "vmm.shutdown") && req.method == "PUT") {
      Respond(conn, 204, "");
      exit_after = true;
    } else if (ep == "vm.shutdown" && req.method == "PUT") {
      Respond(conn, 204, "");
    } else {
      Respond(conn, 404, "");
    }
    ::close(conn);
    if (exit_after) {
      ::unlink(socket_path.c_str());
      return 0;
    }
  }
}
