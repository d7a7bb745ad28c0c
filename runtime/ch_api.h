// ChApiClient: Cloud Hypervisor's REST API over its unix socket — one call at a time, each with a deadline.
#pragma once

#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"

namespace chrys::runtime {

struct HttpResponse {
  long status = 0;
  std::string body;
};

class ChApiClient {
 public:
  explicit ChApiClient(std::string socket_path) : socket_path_(std::move(socket_path)) {}

  const std::string& socket_path() const { return socket_path_; }

  // One request to http://localhost/api/v1/<endpoint>. Transport failures are errors; HTTP error statuses are
  // returned for the caller to judge. With `fds`, the request goes out in one sendmsg carrying them as
  // SCM_RIGHTS (how Cloud Hypervisor takes tap fds for vm.add-net); libcurl cannot attach fds, so that path uses a
  // minimal HTTP/1.1 exchange of its own.
  base::Result<HttpResponse> Call(const std::string& method, const std::string& endpoint,
                                  const std::optional<nlohmann::json>& body, std::chrono::milliseconds timeout,
                                  const std::vector<int>& fds = {});

  // A call that must answer 2xx; a non-2xx status becomes an error quoting Cloud Hypervisor's message. Only
  // idempotent reads (GET) are retried, while the deadline allows, when the connection fails.
  base::Result<HttpResponse> Expect2xx(const std::string& method, const std::string& endpoint,
                                       const std::optional<nlohmann::json>& body, std::chrono::milliseconds timeout,
                                       const std::vector<int>& fds = {});

  static constexpr size_t kMaxResponseBytes = 4 << 20;

 private:
  base::Result<HttpResponse> CallWithCurl(const std::string& method, const std::string& endpoint,
                                          const std::optional<std::string>& body, std::chrono::milliseconds timeout);
  base::Result<HttpResponse> CallWithFds(const std::string& method, const std::string& endpoint,
                                         const std::string& body, std::chrono::milliseconds timeout,
                                         const std::vector<int>& fds);

  std::string socket_path_;
  std::mutex mu_;  // the API is driven one call at a time
};

// Parses an HTTP/1.1 response (status line, headers, Content-Length body); errors on anything else.
base::Result<HttpResponse> ParseHttpResponse(const std::string& raw, bool& complete);

}  // namespace chrys::runtime
