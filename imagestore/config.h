// Settings of the image store and its registry client; cri's config.yaml fills these.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace chrys::imagestore {

// How to reach one registry (keyed by the name used in image references: "docker.io", "10.0.0.5:5000").
struct RegistryHostConfig {
  // Endpoints tried in order before the registry itself, each "https://host[:port]" or "http://host[:port]".
  std::vector<std::string> mirrors;
  // Allows plain HTTP and TLS without verification for this registry (and only this one).
  bool insecure = false;
  // A PEM CA bundle trusted for this registry in addition to the system store (self-signed registries).
  std::string ca_file;
};

struct RegistryConfig {
  std::map<std::string, RegistryHostConfig> hosts;
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(10)};
  // Whole-request limit for manifests and tokens.
  std::chrono::milliseconds request_timeout{std::chrono::seconds(60)};
  // A blob download that receives nothing for this long is abandoned (and retried).
  std::chrono::milliseconds stall_timeout{std::chrono::seconds(30)};
  // Attempts per request on 429, 5xx, resets and stalls, with exponential backoff from retry_backoff.
  int max_attempts = 4;
  std::chrono::milliseconds retry_backoff{std::chrono::milliseconds(500)};
  // Manifests and indexes larger than this are refused (the distribution spec's 4 MiB).
  size_t max_manifest_bytes = 4UL << 20;
  std::string user_agent = "chrysalis/0.1";
};

struct ImageStoreConfig {
  // Everything lives below this directory: blobs, image records, layer images, temp files.
  std::string root = "/var/lib/chrysalis/images";
  RegistryConfig registry;
  // Layers downloaded at once per pull.
  int max_concurrent_downloads = 3;
  // Whole pull (all manifests and blobs) limit.
  std::chrono::milliseconds pull_timeout{std::chrono::minutes(30)};
  // Build each layer's EROFS image as part of Pull, so the first pod start does not wait for it.
  bool build_layer_images_on_pull = true;
  // mkfs.erofs binary (a name looked up in PATH or a path).
  std::string mkfs_erofs = "mkfs.erofs";
  std::chrono::milliseconds mkfs_timeout{std::chrono::minutes(10)};
};

}  // namespace chrys::imagestore
