// CniRuntime executes CNI plugin chains (ADD, CHECK, DEL) per the CNI spec and caches ADD results on disk.
#pragma once

#include <atomic>
#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"
#include "netcni/cni_config.h"
#include "netcni/cni_result.h"

namespace chrys::netcni {

struct CniRuntimeConfig {
  std::vector<std::string> bin_dirs = {"/opt/cni/bin", "/usr/lib/cni"};
  // ADD results are kept under <cache_dir>/results so that DEL works after a restart or a config change.
  std::string cache_dir = "/var/lib/chrysalis/cni-cache";
  std::chrono::milliseconds plugin_timeout{std::chrono::seconds(60)};
};

// The per-attachment parameters of the spec: identical for ADD, CHECK and DEL of one attachment.
struct CniAttachment {
  std::string container_id;
  std::string netns_path;  // may be empty for DEL when the namespace is gone
  std::string ifname;
  std::vector<std::pair<std::string, std::string>> args;  // CNI_ARGS, in order
  // Capability arguments (portMappings, bandwidth, dns, ...); only those a plugin declares reach it.
  nlohmann::json capability_args = nlohmann::json::object();
};

// What an ADD left on disk for its DEL.
struct CachedAttachment {
  NetworkConfigList config;
  CniAttachment attachment;
  nlohmann::json result;
};

class CniRuntime {
 public:
  explicit CniRuntime(CniRuntimeConfig config);

  // The first executable <dir>/<type> over the bin dirs.
  base::Result<std::string> FindPlugin(const std::string& type) const;
  // Every plugin of the list (and the IPAM plugins they delegate to) is present.
  base::Status CheckPluginsPresent(const NetworkConfigList& list) const;

  // Runs ADD through the chain and caches the final result. On a plugin failure returns its error; the
  // caller must still call Del (the spec requires a DEL after a failed ADD).
  base::Result<CniResult> Add(const NetworkConfigList& list, const CniAttachment& attachment);
  // The same without the cache write, for a caller that writes the cache itself (e.g. overlapped with other
  // work); the result must reach WriteCache before the caller reports success.
  base::Result<CniResult> AddUncached(const NetworkConfigList& list, const CniAttachment& attachment);
  base::Status WriteCache(const NetworkConfigList& list, const CniAttachment& attachment,
                          const nlohmann::json& result) const;
  // CHECK with the cached result; a list with disableCheck, or older than 0.4.0, passes without running.
  base::Status Check(const NetworkConfigList& list, const CniAttachment& attachment, const nlohmann::json& prev_result);
  // DEL in reverse order. `prev_result` is the ADD result when there was one.
  base::Status Del(const NetworkConfigList& list, const CniAttachment& attachment,
                   const std::optional<nlohmann::json>& prev_result);

  base::Result<CachedAttachment> ReadCache(const std::string& network, const std::string& container_id,
                                           const std::string& ifname) const;
  // Every cached attachment of a container, whatever its network or interface (for DEL without other state).
  std::vector<CachedAttachment> ReadCacheFor(const std::string& container_id) const;
  base::Status RemoveCache(const std::string& network, const std::string& container_id,
                           const std::string& ifname) const;
  std::string CachePath(const std::string& network, const std::string& container_id, const std::string& ifname) const;

  // The exact JSON handed to one plugin on stdin (exposed for tests).
  static nlohmann::json BuildRequestConfig(const NetworkConfigList& list, size_t plugin_index,
                                           const CniAttachment& attachment,
                                           const std::optional<nlohmann::json>& prev_result);
  static std::string FormatCniArgs(const std::vector<std::pair<std::string, std::string>>& args);

  // Wall time spent running plugin processes so far, to tell our own cost from the plugins' in benchmarks.
  std::chrono::nanoseconds plugin_time() const { return std::chrono::nanoseconds(plugin_exec_ns_.load()); }

 private:
  base::Result<std::string> Exec(const std::string& command, const NetworkConfigList& list, size_t plugin_index,
                                 const CniAttachment& attachment,
                                 const std::optional<nlohmann::json>& prev_result) const;
  base::Result<CachedAttachment> ReadCacheFile(const std::string& path) const;

  CniRuntimeConfig config_;
  mutable std::atomic<int64_t> plugin_exec_ns_{0};
};

}  // namespace chrys::netcni
