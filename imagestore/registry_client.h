// OCI distribution (v2) client on libcurl: manifests and blobs with auth, mirrors, retries and timeouts.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "base/result.h"
#include "imagestore/config.h"
#include "imagestore/digest.h"
#include "imagestore/reference.h"

namespace chrys::imagestore {

// Credentials for one pull, as CRI's AuthConfig carries them. `auth` is base64("user:password").
struct Credentials {
  std::string username;
  std::string password;
  std::string auth;
  std::string identity_token;  // OAuth2 refresh token, exchanged at the token realm
  std::string registry_token;  // bearer token sent as is

  bool empty() const {
    return username.empty() && password.empty() && auth.empty() && identity_token.empty() && registry_token.empty();
  }
};

using Clock = std::chrono::steady_clock;

// Receives a blob's bytes as they arrive. Restart() is called before a retry starts the body again.
class BlobSink {
 public:
  virtual ~BlobSink() = default;
  virtual base::Status Write(const char* data, size_t size) = 0;
  virtual base::Status Restart() = 0;
};

struct FetchedManifest {
  std::string body;
  std::string media_type;  // from the document or Content-Type, validated
  Digest digest;           // sha256 of body, checked against the digest asked for
  std::string endpoint;    // the base URL that served it
};

class RegistryClient {
 public:
  explicit RegistryClient(RegistryConfig config);
  ~RegistryClient();
  RegistryClient(const RegistryClient&) = delete;
  RegistryClient& operator=(const RegistryClient&) = delete;

  // Fetches a manifest or index by tag or digest (`reference`), at most config.max_manifest_bytes.
  base::Result<FetchedManifest> GetManifest(const Reference& repo, const std::string& reference,
                                            const Credentials& creds, Clock::time_point deadline);

  // Streams a blob into `sink`. Byte counts and digests are the sink's business (the content store checks).
  // `expected_size` bounds what is accepted: more bytes than that abort the download.
  base::Status FetchBlob(const Reference& repo, const Digest& digest, int64_t expected_size, const Credentials& creds,
                         BlobSink& sink, Clock::time_point deadline);

  const RegistryConfig& config() const { return config_; }

 private:
  struct Endpoint {
    std::string base_url;  // "https://host:port"
    bool insecure = false;
    std::string ca_file;
    bool is_mirror = false;
  };
  struct Request;
  struct Response;

  std::vector<Endpoint> EndpointsFor(const std::string& registry);
  base::Result<Response> Perform(Request& req, Clock::time_point deadline);
  base::Result<Response> PerformWithAuth(Request& req, const Reference& repo, const Credentials& creds,
                                         Clock::time_point deadline);
  base::Result<std::string> FetchToken(const Endpoint& ep, const std::string& challenge, const Reference& repo,
                                       const Credentials& creds, Clock::time_point deadline);
  // Plain HTTP for an insecure registry is found by trying HTTPS first; the answer is remembered.
  base::Result<std::string> ResolveScheme(const Endpoint& ep, Clock::time_point deadline);

  RegistryConfig config_;
  std::mutex mu_;
  std::map<std::string, std::string> tokens_;   // "base_url|repository" → Authorization header value
  std::map<std::string, std::string> schemes_;  // insecure host → "http" or "https"
};

// Decodes CRI's base64 `auth` field into username and password.
base::Result<std::pair<std::string, std::string>> DecodeBasicAuth(const std::string& auth);

}  // namespace chrys::imagestore
