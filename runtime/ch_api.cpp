#include "runtime/ch_api.h"

#include <curl/curl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <thread>

#include "base/unique_fd.h"

namespace chrys::runtime {

using base::Result;
using nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

std::once_flag curl_once;

size_t AppendBody(char* data, size_t size, size_t n, void* user) {
  auto* out = static_cast<std::string*>(user);
  size_t bytes = size * n;
  if (out->size() + bytes > ChApiClient::kMaxResponseBytes) {
    return 0;  // aborts the transfer: a response this large is not Cloud Hypervisor's
  }
  out->append(data, bytes);
  return bytes;
}

int RemainingMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

std::string Lower(std::string s) {
  for (auto& c : s) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return s;
}

}  // namespace

Result<HttpResponse> ParseHttpResponse(const std::string& raw, bool& complete) {
  complete = false;
  size_t head_end = raw.find("\r\n\r\n");
  if (head_end == std::string::npos) {
    if (raw.size() > 64 * 1024) {
      return base::Internal("HTTP response headers exceed 64KiB");
    }
    if (raw.size() >= 5 && raw.compare(0, 5, "HTTP/") != 0) {
      return base::Internal("not an HTTP response: \"" + raw.substr(0, 60) + "\"");
    }
    return HttpResponse{};
  }
  std::string head = raw.substr(0, head_end);
  size_t line_end = head.find("\r\n");
  std::string status_line = head.substr(0, line_end);
  if (status_line.compare(0, 5, "HTTP/") != 0) {
    return base::Internal("not an HTTP response: \"" + status_line.substr(0, 60) + "\"");
  }
  size_t sp = status_line.find(' ');
  if (sp == std::string::npos || status_line.size() < sp + 4 || !std::isdigit(status_line[sp + 1]) ||
      !std::isdigit(status_line[sp + 2]) || !std::isdigit(status_line[sp + 3])) {
    return base::Internal("malformed HTTP status line: \"" + status_line.substr(0, 60) + "\"");
  }
  HttpResponse resp;
  resp.status = std::stol(status_line.substr(sp + 1, 3));
  size_t content_length = 0;
  size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
  while (pos < head.size()) {
    size_t eol = head.find("\r\n", pos);
    std::string line = head.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos);
    pos = eol == std::string::npos ? head.size() : eol + 2;
    size_t colon = line.find(':');
    if (colon == std::string::npos) {
      return base::Internal("malformed HTTP header line: \"" + line.substr(0, 60) + "\"");
    }
    if (Lower(line.substr(0, colon)) == "content-length") {
      std::string v = line.substr(colon + 1);
      v.erase(0, v.find_first_not_of(' '));
      if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos || v.size() > 9) {
        return base::Internal("malformed Content-Length \"" + v + "\"");
      }
      content_length = std::stoul(v);
    }
  }
  if (content_length > ChApiClient::kMaxResponseBytes) {
    return base::Internal("HTTP response body too large");
  }
  size_t have = raw.size() - head_end - 4;
  if (have < content_length) {
    return resp;
  }
  resp.body = raw.substr(head_end + 4, content_length);
  complete = true;
  return resp;
}

Result<HttpResponse> ChApiClient::CallWithCurl(const std::string& method, const std::string& endpoint,
                                               const std::optional<std::string>& body, milliseconds timeout) {
  std::call_once(curl_once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) {
    return base::Internal("curl_easy_init failed");
  }
  std::string url = "http://localhost/api/v1/" + endpoint;
  std::string response;
  curl_slist* headers = nullptr;
  headers = curl_slist_append(headers, "Accept: application/json");
  if (body) {
    headers = curl_slist_append(headers, "Content-Type: application/json");
  }
  // No "Expect: 100-continue" round trip: Cloud Hypervisor's micro HTTP server does not answer it.
  headers = curl_slist_append(headers, "Expect:");
  std::unique_ptr<curl_slist, void (*)(curl_slist*)> header_guard(headers, curl_slist_free_all);
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, socket_path_.c_str());
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(std::max<int64_t>(1, timeout.count())));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, AppendBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &response);
  // libcurl keeps a pointer to the payload until perform: it must outlive the call.
  const std::string payload = body.value_or(std::string());
  if (method != "GET") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(payload.size()));
  }
  CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    std::string what = method + " " + endpoint + " on " + socket_path_ + ": " + curl_easy_strerror(rc);
    if (rc == CURLE_OPERATION_TIMEDOUT) {
      return base::DeadlineExceeded(what);
    }
    if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR || rc == CURLE_GOT_NOTHING) {
      return base::Unavailable(what);
    }
    return base::Internal(what);
  }
  HttpResponse out;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out.status);
  out.body = std::move(response);
  return out;
}

Result<HttpResponse> ChApiClient::CallWithFds(const std::string& method, const std::string& endpoint,
                                              const std::string& body, milliseconds timeout,
                                              const std::vector<int>& fds) {
  auto deadline = Clock::now() + timeout;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof addr.sun_path) {
    return base::InvalidArgument("API socket path too long: " + socket_path_);
  }
  std::memcpy(addr.sun_path, socket_path_.c_str(), socket_path_.size() + 1);
  base::UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!sock.valid() || ::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return base::Unavailable(base::SystemError("connecting to " + socket_path_).message());
  }
  std::string request = method + " /api/v1/" + endpoint +
                        " HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
                        "Content-Type: application/json\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\n\r\n" + body;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()), 0);
  iovec iov{request.data(), request.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(cm), fds.data(), sizeof(int) * fds.size());
  ssize_t sent = ::sendmsg(sock.get(), &msg, MSG_NOSIGNAL);
  if (sent < 0) {
    return base::Unavailable(base::SystemError("sending " + endpoint + " to " + socket_path_).message());
  }
  // The fds went with the first bytes; the rest (if the kernel took less) goes plainly.
  size_t off = static_cast<size_t>(sent);
  while (off < request.size()) {
    ssize_t n = ::send(sock.get(), request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return base::Unavailable(base::SystemError("sending " + endpoint).message());
    }
    off += static_cast<size_t>(n);
  }
  std::string raw;
  while (true) {
    bool complete = false;
    CHRYS_ASSIGN_OR_RETURN(HttpResponse resp, ParseHttpResponse(raw, complete));
    if (complete) {
      return resp;
    }
    pollfd pfd{sock.get(), POLLIN, 0};
    int r = ::poll(&pfd, 1, RemainingMs(deadline));
    if (r == 0) {
      return base::DeadlineExceeded(method + " " + endpoint + " on " + socket_path_ + ": no reply in time");
    }
    if (r < 0) {
      if (errno == EINTR) {
        continue;
      }
      return base::SystemError("poll");
    }
    char buf[8192];
    ssize_t n = ::recv(sock.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return base::Unavailable(method + " " + endpoint + ": connection closed before a full reply");
    }
    raw.append(buf, static_cast<size_t>(n));
  }
}

Result<HttpResponse> ChApiClient::Call(const std::string& method, const std::string& endpoint,
                                       const std::optional<json>& body, milliseconds timeout,
                                       const std::vector<int>& fds) {
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<std::string> text;
  if (body) {
    text = body->dump();
  }
  if (!fds.empty()) {
    return CallWithFds(method, endpoint, text.value_or(""), timeout, fds);
  }
  return CallWithCurl(method, endpoint, text, timeout);
}

Result<HttpResponse> ChApiClient::Expect2xx(const std::string& method, const std::string& endpoint,
                                            const std::optional<json>& body, milliseconds timeout,
                                            const std::vector<int>& fds) {
  auto deadline = Clock::now() + timeout;
  while (true) {
    auto resp = Call(method, endpoint, body, milliseconds(std::max(1, RemainingMs(deadline))), fds);
    if (!resp.ok()) {
      // Only reads are safe to repeat: a PUT that reached the VMM may have taken effect.
      bool retry =
          method == "GET" && resp.error().code() == base::ErrorCode::kUnavailable && RemainingMs(deadline) > 50;
      if (!retry) {
        return resp.error();
      }
      std::this_thread::sleep_for(milliseconds(20));
      continue;
    }
    if (resp->status < 200 || resp->status >= 300) {
      std::string text = resp->body.substr(0, 400);
      auto code = resp->status == 404   ? base::ErrorCode::kNotFound
                  : resp->status == 400 ? base::ErrorCode::kInvalidArgument
                  : resp->status == 409 ? base::ErrorCode::kAlreadyExists
                                        : base::ErrorCode::kInternal;
      return base::MakeError(code, "cloud-hypervisor " + endpoint + " answered " + std::to_string(resp->status) +
                                       (text.empty() ? "" : ": " + text));
    }
    return resp;
  }
}

}  // namespace chrys::runtime
