#include "imagestore/registry_client.h"

#include <curl/curl.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <thread>

#include "imagestore/manifest.h"

namespace chrys::imagestore {

namespace {

std::once_flag curl_init_once;

base::Error PermissionDenied(std::string message) {
  return base::MakeError(base::ErrorCode::kPermissionDenied, std::move(message));
}

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string Trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  size_t e = s.find_last_not_of(" \t\r\n");
  return b == std::string_view::npos ? "" : std::string(s.substr(b, e - b + 1));
}

std::string Base64Encode(const std::string& in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

// Parses `Bearer realm="...",service="...",scope="..."` into its scheme and parameters.
std::pair<std::string, std::map<std::string, std::string>> ParseChallenge(const std::string& header) {
  std::map<std::string, std::string> params;
  size_t sp = header.find(' ');
  std::string scheme = Lower(Trim(header.substr(0, sp)));
  if (sp == std::string::npos) {
    return {scheme, params};
  }
  size_t i = sp + 1;
  while (i < header.size()) {
    while (i < header.size() && (header[i] == ' ' || header[i] == ',')) {
      ++i;
    }
    size_t eq = header.find('=', i);
    if (eq == std::string::npos) {
      break;
    }
    std::string key = Lower(Trim(header.substr(i, eq - i)));
    i = eq + 1;
    std::string value;
    if (i < header.size() && header[i] == '"') {
      ++i;
      while (i < header.size() && header[i] != '"') {
        if (header[i] == '\\' && i + 1 < header.size()) {
          ++i;
        }
        value.push_back(header[i++]);
      }
      ++i;  // closing quote
    } else {
      size_t comma = header.find(',', i);
      value = Trim(header.substr(i, comma == std::string::npos ? std::string::npos : comma - i));
      i = comma == std::string::npos ? header.size() : comma;
    }
    params[key] = value;
  }
  return {scheme, params};
}

// The registry's own explanation from an error body ({"errors":[{"code":..,"message":..}]}), if any.
std::string RegistryErrorText(const std::string& body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("errors") && j["errors"].is_array() && !j["errors"].empty()) {
    const auto& e = j["errors"][0];
    std::string code = e.value("code", "");
    std::string msg =
        e.is_object() && e.contains("message") && e["message"].is_string() ? e["message"].get<std::string>() : "";
    return code + (msg.empty() ? "" : ": " + msg);
  }
  return "";
}

bool IsRetryableCurlError(CURLcode rc) {
  switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
  }
}

bool IsRetryableStatus(long status) {
  return status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

std::string EscapeQuery(const std::string& s) {
  char* e = curl_easy_escape(nullptr, s.c_str(), static_cast<int>(s.size()));
  std::string out = e != nullptr ? e : "";
  curl_free(e);
  return out;
}

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

}  // namespace

struct RegistryClient::Request {
  std::string url;
  std::string method = "GET";
  std::vector<std::string> headers;
  std::string authorization;  // full header value, e.g. "Bearer abc"
  std::string post_body;
  bool insecure = false;
  std::string ca_file;
  // Body kept in memory up to this many bytes (non-sink requests and error bodies).
  size_t max_body = 64 << 10;
  BlobSink* sink = nullptr;
  int64_t max_sink_bytes = -1;
  bool whole_request_timeout = true;  // false for blobs: only the stall timeout and the deadline apply
  std::string what;                   // "manifest x", for error messages
};

struct RegistryClient::Response {
  long status = 0;
  std::map<std::string, std::string> headers;  // lowercase names; the first of repeated headers
  std::string body;
  int64_t sink_bytes = 0;
};

namespace {

struct TransferState {
  CURL* curl = nullptr;
  std::map<std::string, std::string>* headers = nullptr;
  std::string* body = nullptr;
  size_t max_body = 0;
  BlobSink* sink = nullptr;
  int64_t max_sink_bytes = -1;
  int64_t sink_bytes = 0;
  bool body_too_large = false;
  std::optional<base::Error> sink_error;
};

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* st = static_cast<TransferState*>(user);
  std::string_view line(data, size * n);
  if (line.substr(0, 5) == "HTTP/") {
    st->headers->clear();  // a new response (after a redirect or 100-continue)
    return size * n;
  }
  size_t colon = line.find(':');
  if (colon != std::string_view::npos) {
    std::string key = Lower(std::string(line.substr(0, colon)));
    st->headers->emplace(key, Trim(line.substr(colon + 1)));
  }
  return size * n;
}

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* st = static_cast<TransferState*>(user);
  size_t len = size * n;
  long status = 0;
  curl_easy_getinfo(st->curl, CURLINFO_RESPONSE_CODE, &status);
  if (st->sink != nullptr && status >= 200 && status < 300) {
    st->sink_bytes += static_cast<int64_t>(len);
    if (st->max_sink_bytes >= 0 && st->sink_bytes > st->max_sink_bytes) {
      st->sink_error = base::InvalidArgument("the registry sent more than the " + std::to_string(st->max_sink_bytes) +
                                             " bytes the descriptor declares");
      return 0;
    }
    base::Status s = st->sink->Write(data, len);
    if (!s.ok()) {
      st->sink_error = s.error();
      return 0;
    }
    return len;
  }
  if (st->body->size() + len > st->max_body) {
    st->body_too_large = true;
    return 0;
  }
  st->body->append(data, len);
  return len;
}

}  // namespace

RegistryClient::RegistryClient(RegistryConfig config) : config_(std::move(config)) {
  std::call_once(curl_init_once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

RegistryClient::~RegistryClient() = default;

base::Result<RegistryClient::Response> RegistryClient::Perform(Request& req, Clock::time_point deadline) {
  std::chrono::milliseconds backoff = config_.retry_backoff;
  std::string last_problem;
  for (int attempt = 1;; ++attempt) {
    auto now = Clock::now();
    if (now >= deadline) {
      return base::DeadlineExceeded(req.what + ": the pull's time limit ran out" +
                                    (last_problem.empty() ? "" : " (last problem: " + last_problem + ")"));
    }
    if (req.sink != nullptr && attempt > 1) {
      CHRYS_RETURN_IF_ERROR(req.sink->Restart());
    }
    std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
    if (!curl) {
      return base::Internal("curl_easy_init failed");
    }
    Response resp;
    TransferState st;
    st.curl = curl.get();
    st.headers = &resp.headers;
    st.body = &resp.body;
    st.max_body = req.max_body;
    st.sink = req.sink;
    st.max_sink_bytes = req.max_sink_bytes;

    std::unique_ptr<curl_slist, SlistDeleter> headers;
    auto add_header = [&](const std::string& h) { headers.reset(curl_slist_append(headers.release(), h.c_str())); };
    for (const auto& h : req.headers) {
      add_header(h);
    }
    if (!req.authorization.empty()) {
      add_header("Authorization: " + req.authorization);
    }
    char errbuf[CURL_ERROR_SIZE] = {0};
    CURL* c = curl.get();
    curl_easy_setopt(c, CURLOPT_URL, req.url.c_str());
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_USERAGENT, config_.user_agent.c_str());
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    // Redirects to blob storage may go to other hosts, but never downgrade to a non-HTTP(S) scheme.
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &st);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnBody);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &st);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(config_.connect_timeout.count()));
    auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    auto limit = req.whole_request_timeout ? std::min(remaining, config_.request_timeout) : remaining;
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(std::max<int64_t>(limit.count(), 1)));
    long stall_secs = std::max<long>(1, static_cast<long>((config_.stall_timeout.count() + 999) / 1000));
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, stall_secs);
    if (req.insecure) {
      curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
      curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (!req.ca_file.empty()) {
      curl_easy_setopt(c, CURLOPT_CAINFO, req.ca_file.c_str());
    }
    if (req.method == "POST") {
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, req.post_body.c_str());
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(req.post_body.size()));
    }
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp.status);
    resp.sink_bytes = st.sink_bytes;
    if (st.sink_error) {
      return st.sink_error->Wrap(req.what);
    }
    if (st.body_too_large) {
      return base::MakeError(base::ErrorCode::kResourceExhausted,
                             req.what + " is larger than the limit of " + std::to_string(req.max_body) + " bytes");
    }
    std::string problem;
    bool retryable = false;
    if (rc != CURLE_OK) {
      problem = std::string(curl_easy_strerror(rc)) + (errbuf[0] != '\0' ? std::string(" (") + errbuf + ")" : "");
      if (rc == CURLE_OPERATION_TIMEDOUT && std::string(errbuf).find("too slow") != std::string::npos) {
        problem = "the registry stopped sending data for " + std::to_string(stall_secs) + "s";
      }
      retryable = IsRetryableCurlError(rc);
      if (!retryable) {
        return base::Unavailable(req.what + ": " + req.url + ": " + problem);
      }
    } else if (IsRetryableStatus(resp.status)) {
      problem = "HTTP " + std::to_string(resp.status);
      std::string detail = RegistryErrorText(resp.body);
      if (!detail.empty()) {
        problem += " (" + detail + ")";
      }
      retryable = true;
    } else {
      return resp;
    }
    last_problem = problem;
    if (attempt >= config_.max_attempts) {
      auto code = rc == CURLE_OPERATION_TIMEDOUT ? base::ErrorCode::kDeadlineExceeded : base::ErrorCode::kUnavailable;
      return base::MakeError(code, req.what + ": " + req.url + ": " + problem + " (gave up after " +
                                       std::to_string(attempt) + " attempts)");
    }
    auto wait = backoff;
    if (auto ra = resp.headers.find("retry-after"); ra != resp.headers.end()) {
      char* end = nullptr;
      long secs = std::strtol(ra->second.c_str(), &end, 10);
      if (end != ra->second.c_str() && secs >= 0) {
        wait = std::min<std::chrono::milliseconds>(std::chrono::seconds(secs), std::chrono::seconds(10));
      }
    }
    if (Clock::now() + wait >= deadline) {
      return base::DeadlineExceeded(req.what + ": " + problem + "; no time left in the pull's limit to retry");
    }
    std::this_thread::sleep_for(wait);
    backoff *= 2;
  }
}

base::Result<std::string> RegistryClient::ResolveScheme(const Endpoint& ep, Clock::time_point deadline) {
  std::string host = ep.base_url;  // "host:port" for an unresolved insecure endpoint
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = schemes_.find(host); it != schemes_.end()) {
      return it->second;
    }
  }
  CURL* raw = curl_easy_init();
  std::unique_ptr<CURL, CurlDeleter> curl(raw);
  std::string url = "https://" + host + "/v2/";
  curl_easy_setopt(raw, CURLOPT_URL, url.c_str());
  curl_easy_setopt(raw, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(raw, CURLOPT_NOBODY, 1L);
  curl_easy_setopt(raw, CURLOPT_SSL_VERIFYPEER, 0L);
  curl_easy_setopt(raw, CURLOPT_SSL_VERIFYHOST, 0L);
  curl_easy_setopt(raw, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(config_.connect_timeout.count()));
  auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  curl_easy_setopt(raw, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(std::max<int64_t>(1, std::min(remaining, config_.request_timeout).count())));
  CURLcode rc = curl_easy_perform(raw);
  std::string scheme;
  if (rc == CURLE_OK) {
    scheme = "https";
  } else if (rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_RECV_ERROR || rc == CURLE_GOT_NOTHING) {
    scheme = "http";  // the server does not speak TLS
  } else {
    return base::Unavailable("registry " + host + " is unreachable: " + curl_easy_strerror(rc));
  }
  std::lock_guard<std::mutex> lock(mu_);
  schemes_[host] = scheme;
  return scheme;
}

std::vector<RegistryClient::Endpoint> RegistryClient::EndpointsFor(const std::string& registry) {
  std::vector<Endpoint> out;
  RegistryHostConfig host_cfg;
  if (auto it = config_.hosts.find(registry); it != config_.hosts.end()) {
    host_cfg = it->second;
  }
  for (const auto& mirror : host_cfg.mirrors) {
    Endpoint ep;
    ep.base_url = mirror;
    while (!ep.base_url.empty() && ep.base_url.back() == '/') {
      ep.base_url.pop_back();
    }
    if (ep.base_url.find("://") == std::string::npos) {
      ep.base_url = "https://" + ep.base_url;
    }
    std::string mirror_host = ep.base_url.substr(ep.base_url.find("://") + 3);
    if (auto it = config_.hosts.find(mirror_host); it != config_.hosts.end()) {
      ep.insecure = it->second.insecure;
      ep.ca_file = it->second.ca_file;
    }
    ep.is_mirror = true;
    out.push_back(ep);
  }
  Endpoint self;
  self.insecure = host_cfg.insecure;
  self.ca_file = host_cfg.ca_file;
  // An insecure registry's scheme is resolved on first use; a secure one is always HTTPS.
  self.base_url = host_cfg.insecure ? RegistryApiHost(registry) : "https://" + RegistryApiHost(registry);
  out.push_back(self);
  return out;
}

base::Result<std::string> RegistryClient::FetchToken(const Endpoint& ep, const std::string& challenge,
                                                     const Reference& repo, const Credentials& creds,
                                                     Clock::time_point deadline) {
  auto [scheme, params] = ParseChallenge(challenge);
  std::string realm = params["realm"];
  if (realm.empty()) {
    return base::Unavailable("registry " + ep.base_url + " sent a bearer challenge without a realm");
  }
  if (realm.rfind("https://", 0) != 0 && !(ep.insecure && realm.rfind("http://", 0) == 0)) {
    return PermissionDenied("token realm " + realm + " is not HTTPS and the registry is not marked insecure");
  }
  std::string scope = params.count("scope") != 0 ? params["scope"] : "repository:" + repo.repository + ":pull";
  Request req;
  req.what = "token for " + repo.Name();
  req.insecure = ep.insecure;
  req.ca_file = ep.ca_file;
  std::string user = creds.username;
  std::string pass = creds.password;
  if (!creds.auth.empty() && user.empty()) {
    CHRYS_ASSIGN_OR_RETURN(auto up, DecodeBasicAuth(creds.auth));
    user = up.first;
    pass = up.second;
  }
  if (!creds.identity_token.empty()) {
    req.method = "POST";
    req.url = realm;
    req.headers.push_back("Content-Type: application/x-www-form-urlencoded");
    req.post_body = "grant_type=refresh_token&client_id=chrysalis&service=" + EscapeQuery(params["service"]) +
                    "&scope=" + EscapeQuery(scope) + "&refresh_token=" + EscapeQuery(creds.identity_token);
  } else {
    req.url = realm + (realm.find('?') == std::string::npos ? "?" : "&") + "service=" + EscapeQuery(params["service"]) +
              "&scope=" + EscapeQuery(scope);
    if (!user.empty()) {
      req.authorization = "Basic " + Base64Encode(user + ":" + pass);
    }
  }
  CHRYS_ASSIGN_OR_RETURN(Response resp, Perform(req, deadline));
  if (resp.status == 401 || resp.status == 403) {
    return PermissionDenied("the token service " + realm + " refused " +
                            (user.empty() && creds.identity_token.empty() ? "anonymous access" : "the credentials") +
                            " for " + repo.Name() + " (HTTP " + std::to_string(resp.status) + ")");
  }
  if (resp.status != 200) {
    return base::Unavailable("token service " + realm + " answered HTTP " + std::to_string(resp.status));
  }
  auto j = nlohmann::json::parse(resp.body, nullptr, false);
  if (!j.is_object()) {
    return base::Unavailable("token service " + realm + " sent a body that is not JSON");
  }
  for (const char* key : {"token", "access_token"}) {
    if (j.contains(key) && j[key].is_string() && !j[key].get<std::string>().empty()) {
      return "Bearer " + j[key].get<std::string>();
    }
  }
  return base::Unavailable("token service " + realm + " sent no token");
}

base::Result<RegistryClient::Response> RegistryClient::PerformWithAuth(Request& req, const Reference& repo,
                                                                       const Credentials& creds,
                                                                       Clock::time_point deadline) {
  std::string base = req.url.substr(0, req.url.find("/v2/"));
  std::string key = base + "|" + repo.repository;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = tokens_.find(key); it != tokens_.end()) {
      req.authorization = it->second;
    }
  }
  if (req.authorization.empty() && !creds.registry_token.empty()) {
    req.authorization = "Bearer " + creds.registry_token;
  }
  CHRYS_ASSIGN_OR_RETURN(Response resp, Perform(req, deadline));
  if (resp.status != 401) {
    return resp;
  }
  auto challenge_it = resp.headers.find("www-authenticate");
  std::string challenge = challenge_it == resp.headers.end() ? "" : challenge_it->second;
  auto [scheme, params] = ParseChallenge(challenge);
  Endpoint ep;
  ep.base_url = base;
  ep.insecure = req.insecure;
  ep.ca_file = req.ca_file;
  std::string authorization;
  if (scheme == "bearer") {
    CHRYS_ASSIGN_OR_RETURN(authorization, FetchToken(ep, challenge, repo, creds, deadline));
  } else if (scheme == "basic") {
    std::string user = creds.username;
    std::string pass = creds.password;
    if (!creds.auth.empty() && user.empty()) {
      CHRYS_ASSIGN_OR_RETURN(auto up, DecodeBasicAuth(creds.auth));
      user = up.first;
      pass = up.second;
    }
    if (user.empty()) {
      return PermissionDenied("registry " + repo.registry + " requires authentication (HTTP 401) for " + repo.Name() +
                              " and no credentials were given; pass them in the pull's auth");
    }
    authorization = "Basic " + Base64Encode(user + ":" + pass);
  } else {
    return PermissionDenied("registry " + repo.registry + " answered HTTP 401 for " + repo.Name() +
                            " with no usable challenge (" + (challenge.empty() ? "none" : challenge) + ")");
  }
  if (authorization == req.authorization) {
    return PermissionDenied("registry " + repo.registry + " refused the credentials for " + repo.Name() +
                            " (HTTP 401)");
  }
  req.authorization = authorization;
  CHRYS_ASSIGN_OR_RETURN(resp, Perform(req, deadline));
  if (resp.status == 401) {
    return PermissionDenied("registry " + repo.registry + " refused the credentials for " + repo.Name() +
                            " (HTTP 401)");
  }
  std::lock_guard<std::mutex> lock(mu_);
  tokens_[key] = authorization;
  return resp;
}

base::Result<FetchedManifest> RegistryClient::GetManifest(const Reference& repo, const std::string& reference,
                                                          const Credentials& creds, Clock::time_point deadline) {
  std::optional<base::Error> last_error;
  for (const Endpoint& ep : EndpointsFor(repo.registry)) {
    std::string base_url = ep.base_url;
    if (base_url.find("://") == std::string::npos) {
      auto scheme = ResolveScheme(ep, deadline);
      if (!scheme.ok()) {
        last_error = scheme.error();
        continue;
      }
      base_url = *scheme + "://" + base_url;
    }
    Request req;
    req.what = "manifest " + repo.Name() + ":" + reference;
    req.url = base_url + "/v2/" + repo.repository + "/manifests/" + reference;
    req.headers.push_back("Accept: " + ManifestAcceptHeader());
    req.insecure = ep.insecure;
    req.ca_file = ep.ca_file;
    req.max_body = config_.max_manifest_bytes;
    auto resp = PerformWithAuth(req, repo, creds, deadline);
    if (!resp.ok()) {
      last_error = resp.error();
      if (resp.error().code() == base::ErrorCode::kResourceExhausted ||
          resp.error().code() == base::ErrorCode::kPermissionDenied) {
        return resp.error();  // the same document or credentials would fail the same way elsewhere
      }
      continue;
    }
    if (resp->status == 404) {
      last_error =
          base::NotFound(req.what + " not found at " + base_url +
                         (RegistryErrorText(resp->body).empty() ? "" : " (" + RegistryErrorText(resp->body) + ")"));
      continue;
    }
    if (resp->status != 200) {
      std::string detail = RegistryErrorText(resp->body);
      last_error = base::Unavailable(req.what + ": " + base_url + " answered HTTP " + std::to_string(resp->status) +
                                     (detail.empty() ? "" : " (" + detail + ")"));
      continue;
    }
    FetchedManifest out;
    out.body = std::move(resp->body);
    out.endpoint = base_url;
    out.digest = Sha256Of(out.body);
    if (reference.rfind("sha256:", 0) == 0 && out.digest.str() != reference) {
      return base::InvalidArgument(req.what + ": " + base_url + " sent a document whose digest is " + out.digest.str() +
                                   ", not the " + reference + " asked for");
    }
    std::string content_type;
    if (auto it = resp->headers.find("content-type"); it != resp->headers.end()) {
      content_type = it->second;
    }
    auto mt = DetectManifestMediaType(out.body, content_type);
    if (!mt.ok()) {
      return mt.error().Wrap(req.what);
    }
    out.media_type = *mt;
    return out;
  }
  return last_error.value_or(base::Unavailable("no endpoint for registry " + repo.registry));
}

base::Status RegistryClient::FetchBlob(const Reference& repo, const Digest& digest, int64_t expected_size,
                                       const Credentials& creds, BlobSink& sink, Clock::time_point deadline) {
  std::optional<base::Error> last_error;
  for (const Endpoint& ep : EndpointsFor(repo.registry)) {
    std::string base_url = ep.base_url;
    if (base_url.find("://") == std::string::npos) {
      auto scheme = ResolveScheme(ep, deadline);
      if (!scheme.ok()) {
        last_error = scheme.error();
        continue;
      }
      base_url = *scheme + "://" + base_url;
    }
    Request req;
    req.what = "blob " + digest.str() + " of " + repo.Name();
    req.url = base_url + "/v2/" + repo.repository + "/blobs/" + digest.str();
    req.insecure = ep.insecure;
    req.ca_file = ep.ca_file;
    req.sink = &sink;
    req.max_sink_bytes = expected_size;
    req.whole_request_timeout = false;
    CHRYS_RETURN_IF_ERROR(sink.Restart());
    auto resp = PerformWithAuth(req, repo, creds, deadline);
    if (!resp.ok()) {
      last_error = resp.error();
      if (resp.error().code() == base::ErrorCode::kPermissionDenied ||
          resp.error().code() == base::ErrorCode::kInvalidArgument) {
        return resp.error();
      }
      continue;
    }
    if (resp->status == 200 || resp->status == 206) {
      if (resp->status == 206) {
        return base::Unavailable(req.what + ": " + base_url + " sent a partial response to a full request");
      }
      return base::Status::Ok();
    }
    std::string detail = RegistryErrorText(resp->body);
    if (resp->status == 404) {
      last_error = base::NotFound(req.what + " not found at " + base_url + (detail.empty() ? "" : " (" + detail + ")"));
    } else {
      last_error = base::Unavailable(req.what + ": " + base_url + " answered HTTP " + std::to_string(resp->status) +
                                     (detail.empty() ? "" : " (" + detail + ")"));
    }
  }
  return last_error.value_or(base::Unavailable("no endpoint for registry " + repo.registry));
}

base::Result<std::pair<std::string, std::string>> DecodeBasicAuth(const std::string& auth) {
  std::string in = Trim(auth);
  if (in.empty() || in.size() % 4 != 0) {
    return base::InvalidArgument("auth is not valid base64 of \"user:password\"");
  }
  std::string out(in.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  if (n < 0) {
    return base::InvalidArgument("auth is not valid base64 of \"user:password\"");
  }
  size_t padding = 0;
  for (size_t i = in.size(); i > 0 && in[i - 1] == '='; --i) {
    ++padding;
  }
  out.resize(static_cast<size_t>(n) - padding);
  size_t colon = out.find(':');
  if (colon == std::string::npos) {
    return base::InvalidArgument("auth does not decode to \"user:password\"");
  }
  return std::make_pair(out.substr(0, colon), out.substr(colon + 1));
}

}  // namespace chrys::imagestore
