#include "netcni/cni_runtime.h"

#include <unistd.h>

#include <filesystem>

#include "base/file_util.h"
#include "base/subprocess.h"

namespace chrys::netcni {
namespace {

using base::Status;
using nlohmann::json;

// Maps the spec's well-known error codes onto ours so callers can tell retryable failures apart.
base::ErrorCode CodeForCniError(int cni_code) {
  switch (cni_code) {
    case 11:
    case 50:
    case 51:
      return base::ErrorCode::kUnavailable;
    case 1:
    case 2:
    case 4:
    case 6:
    case 7:
      return base::ErrorCode::kFailedPrecondition;
    default:
      return base::ErrorCode::kInternal;
  }
}

}  // namespace

CniRuntime::CniRuntime(CniRuntimeConfig config) : config_(std::move(config)) {}

base::Result<std::string> CniRuntime::FindPlugin(const std::string& type) const {
  if (type.empty() || type.find('/') != std::string::npos) {
    return base::InvalidArgument("CNI plugin type \"" + type + "\" is not a file name");
  }
  for (const auto& dir : config_.bin_dirs) {
    const std::string path = dir + "/" + type;
    if (::access(path.c_str(), X_OK) == 0) {
      return path;
    }
  }
  std::string dirs;
  for (const auto& dir : config_.bin_dirs) {
    dirs += (dirs.empty() ? "" : ", ") + dir;
  }
  return base::FailedPrecondition("CNI plugin \"" + type + "\" not found in " + (dirs.empty() ? "(no dirs)" : dirs) +
                                  "; install it or fix the configured CNI bin dirs");
}

Status CniRuntime::CheckPluginsPresent(const NetworkConfigList& list) const {
  for (const auto& plugin : list.plugins) {
    CHRYS_RETURN_IF_ERROR(FindPlugin(plugin.at("type").get<std::string>()));
    if (plugin.contains("ipam") && plugin["ipam"].is_object() && plugin["ipam"].contains("type") &&
        plugin["ipam"]["type"].is_string()) {
      CHRYS_RETURN_IF_ERROR(FindPlugin(plugin["ipam"]["type"].get<std::string>()));
    }
  }
  return Status::Ok();
}

std::string CniRuntime::FormatCniArgs(const std::vector<std::pair<std::string, std::string>>& args) {
  std::string out;
  for (const auto& [key, value] : args) {
    out += (out.empty() ? "" : ";") + key + "=" + value;
  }
  return out;
}

json CniRuntime::BuildRequestConfig(const NetworkConfigList& list, size_t plugin_index, const CniAttachment& attachment,
                                    const std::optional<json>& prev_result) {
  json request = list.plugins.at(plugin_index);
  request["cniVersion"] = list.cni_version;
  request["name"] = list.name;
  json runtime_config = json::object();
  if (request.contains("capabilities")) {
    for (const auto& [capability, enabled] : request["capabilities"].items()) {
      if (enabled.is_boolean() && enabled.get<bool>() && attachment.capability_args.contains(capability)) {
        runtime_config[capability] = attachment.capability_args[capability];
      }
    }
    request.erase("capabilities");
  }
  if (!runtime_config.empty()) {
    request["runtimeConfig"] = runtime_config;
  }
  if (prev_result) {
    request["prevResult"] = *prev_result;
  } else {
    request.erase("prevResult");
  }
  return request;
}

base::Result<std::string> CniRuntime::Exec(const std::string& command, const NetworkConfigList& list,
                                           size_t plugin_index, const CniAttachment& attachment,
                                           const std::optional<json>& prev_result) const {
  const std::string type = list.plugins.at(plugin_index).at("type").get<std::string>();
  CHRYS_ASSIGN_OR_RETURN(std::string binary, FindPlugin(type));
  std::string cni_path;
  for (const auto& dir : config_.bin_dirs) {
    cni_path += (cni_path.empty() ? "" : ":") + dir;
  }
  base::CommandSpec spec;
  spec.argv = {binary};
  spec.extra_env = {"CNI_COMMAND=" + command,
                    "CNI_CONTAINERID=" + attachment.container_id,
                    "CNI_NETNS=" + attachment.netns_path,
                    "CNI_IFNAME=" + attachment.ifname,
                    "CNI_ARGS=" + FormatCniArgs(attachment.args),
                    "CNI_PATH=" + cni_path};
  spec.stdin_data = BuildRequestConfig(list, plugin_index, attachment, prev_result).dump();
  spec.timeout = config_.plugin_timeout;
  spec.max_output_bytes = 1 << 20;
  const std::string what =
      "CNI plugin " + type + " " + command + " (network " + list.name + ", container " + attachment.container_id + ")";
  const auto started = std::chrono::steady_clock::now();
  auto run = base::RunCommand(spec);
  plugin_exec_ns_ +=
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started).count();
  if (!run.ok()) {
    return run.error().Wrap(what);
  }
  if (run->success()) {
    return std::move(run->stdout_data);
  }
  // A failing plugin should print the spec's error object on stdout; show it and its stderr.
  std::string message = what + " failed (" + run->DescribeExit() + ")";
  base::ErrorCode code = base::ErrorCode::kInternal;
  json error_doc = json::parse(run->stdout_data, nullptr, /*allow_exceptions=*/false);
  if (error_doc.is_object() && (error_doc.contains("code") || error_doc.contains("msg"))) {
    if (error_doc.contains("code") && error_doc["code"].is_number_integer()) {
      int cni_code = error_doc["code"].get<int>();
      code = CodeForCniError(cni_code);
      message += ": code " + std::to_string(cni_code);
    }
    if (error_doc.contains("msg") && error_doc["msg"].is_string()) {
      message += ": " + error_doc["msg"].get<std::string>();
    }
    if (error_doc.contains("details") && error_doc["details"].is_string() &&
        !error_doc["details"].get<std::string>().empty()) {
      message += " (" + error_doc["details"].get<std::string>() + ")";
    }
  } else if (!run->stdout_data.empty()) {
    message += ": stdout: " + base::Tail(run->stdout_data, 1024);
  }
  if (!run->stderr_data.empty()) {
    message += "; stderr: " + base::Tail(run->stderr_data, 2048);
  }
  return base::MakeError(code, message);
}

base::Result<CniResult> CniRuntime::Add(const NetworkConfigList& list, const CniAttachment& attachment) {
  CHRYS_ASSIGN_OR_RETURN(CniResult result, AddUncached(list, attachment));
  CHRYS_RETURN_IF_ERROR(WriteCache(list, attachment, result.raw));
  return result;
}

base::Result<CniResult> CniRuntime::AddUncached(const NetworkConfigList& list, const CniAttachment& attachment) {
  std::optional<json> prev;
  CniResult last;
  for (size_t i = 0; i < list.plugins.size(); ++i) {
    const std::string type = list.plugins[i].at("type").get<std::string>();
    CHRYS_ASSIGN_OR_RETURN(std::string out, Exec("ADD", list, i, attachment, prev));
    CHRYS_ASSIGN_OR_RETURN(last, ParseCniResultText(out, "plugin " + type + " (network " + list.name + ")"));
    prev = last.raw;
  }
  return last;
}

Status CniRuntime::Check(const NetworkConfigList& list, const CniAttachment& attachment, const json& prev_result) {
  if (list.disable_check || CompareCniVersions(list.cni_version, "0.4.0") < 0) {
    return Status::Ok();
  }
  for (size_t i = 0; i < list.plugins.size(); ++i) {
    CHRYS_RETURN_IF_ERROR(Exec("CHECK", list, i, attachment, prev_result));
  }
  return Status::Ok();
}

Status CniRuntime::Del(const NetworkConfigList& list, const CniAttachment& attachment,
                       const std::optional<json>& prev_result) {
  // prevResult on DEL arrived with spec 0.4.0; older plugins would reject it.
  std::optional<json> prev = CompareCniVersions(list.cni_version, "0.4.0") < 0 ? std::nullopt : prev_result;
  for (size_t i = list.plugins.size(); i-- > 0;) {
    CHRYS_RETURN_IF_ERROR(Exec("DEL", list, i, attachment, prev));
  }
  return RemoveCache(list.name, attachment.container_id, attachment.ifname);
}

std::string CniRuntime::CachePath(const std::string& network, const std::string& container_id,
                                  const std::string& ifname) const {
  return config_.cache_dir + "/results/" + network + "-" + container_id + "-" + ifname;
}

Status CniRuntime::WriteCache(const NetworkConfigList& list, const CniAttachment& attachment,
                              const json& result) const {
  json args = json::array();
  for (const auto& [key, value] : attachment.args) {
    args.push_back(json::array({key, value}));
  }
  json doc = {{"kind", "cniCacheV1"},
              {"containerId", attachment.container_id},
              {"ifName", attachment.ifname},
              {"netns", attachment.netns_path},
              {"networkName", list.name},
              {"configSource", list.source},
              {"config", list.text},
              {"cniArgs", args},
              {"capabilityArgs", attachment.capability_args},
              {"result", result}};
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(config_.cache_dir + "/results", 0700));
  return base::WriteFileAtomic(CachePath(list.name, attachment.container_id, attachment.ifname), doc.dump(), 0600);
}

base::Result<CachedAttachment> CniRuntime::ReadCache(const std::string& network, const std::string& container_id,
                                                     const std::string& ifname) const {
  return ReadCacheFile(CachePath(network, container_id, ifname));
}

std::vector<CachedAttachment> CniRuntime::ReadCacheFor(const std::string& container_id) const {
  std::vector<CachedAttachment> out;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(config_.cache_dir + "/results", ec), end; !ec && it != end;
       it.increment(ec)) {
    if (it->path().filename().string().find("-" + container_id + "-") == std::string::npos) {
      continue;
    }
    auto cached = ReadCacheFile(it->path().string());
    if (cached.ok() && cached->attachment.container_id == container_id) {
      out.push_back(std::move(cached).value());
    }
  }
  return out;
}

base::Result<CachedAttachment> CniRuntime::ReadCacheFile(const std::string& path) const {
  CHRYS_ASSIGN_OR_RETURN(std::string text, base::ReadFile(path, 4 << 20));
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto corrupt = [&path](const std::string& what) {
    return base::Internal("CNI result cache " + path + " is corrupt: " + what);
  };
  if (!doc.is_object() || doc.value("kind", "") != "cniCacheV1" || !doc.contains("config") ||
      !doc["config"].is_string() || !doc.contains("result")) {
    return corrupt("missing kind, config or result");
  }
  CachedAttachment out;
  auto config = ParseNetworkConfigList(doc["config"].get<std::string>(), path + " (cached config)");
  if (!config.ok()) {
    return corrupt(config.error().message());
  }
  out.config = std::move(config).value();
  out.attachment.container_id = doc.value("containerId", "");
  out.attachment.ifname = doc.value("ifName", "");
  out.attachment.netns_path = doc.value("netns", "");
  if (doc.contains("cniArgs") && doc["cniArgs"].is_array()) {
    for (const auto& kv : doc["cniArgs"]) {
      if (kv.is_array() && kv.size() == 2 && kv[0].is_string() && kv[1].is_string()) {
        out.attachment.args.emplace_back(kv[0].get<std::string>(), kv[1].get<std::string>());
      }
    }
  }
  if (doc.contains("capabilityArgs") && doc["capabilityArgs"].is_object()) {
    out.attachment.capability_args = doc["capabilityArgs"];
  }
  out.result = doc["result"];
  return out;
}

Status CniRuntime::RemoveCache(const std::string& network, const std::string& container_id,
                               const std::string& ifname) const {
  return base::RemoveFileIfExists(CachePath(network, container_id, ifname));
}

}  // namespace chrys::netcni
