#include "cri/validation.h"

#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <random>
#include <sstream>
#include <tuple>

#include "base/capabilities.h"
#include "base/text.h"

namespace chrys::cri {

namespace {

constexpr std::array<const char*, 5> kHandlers = {"chrysalis", "chrysalis-qemu", "chrysalis-cvm", "chrysalis-snp",
                                                  "chrysalis-tdx"};

bool IsAlnumLower(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

}  // namespace

base::Status ValidateDnsLabel(const std::string& field, const std::string& value) {
  if (value.empty()) {
    return base::InvalidArgument(field + " is required");
  }
  if (value.size() > 63) {
    return base::InvalidArgument(field + " '" + value.substr(0, 70) + "...' is longer than 63 characters");
  }
  for (char c : value) {
    if (!IsAlnumLower(c) && c != '-') {
      return base::InvalidArgument(field + " '" + value + "' has a character other than a-z, 0-9 and '-'");
    }
  }
  if (!IsAlnumLower(value.front()) || !IsAlnumLower(value.back())) {
    return base::InvalidArgument(field + " '" + value + "' must start and end with a-z or 0-9");
  }
  return base::Status::Ok();
}

base::Status ValidateDnsSubdomain(const std::string& field, const std::string& value) {
  if (value.empty()) {
    return base::InvalidArgument(field + " is required");
  }
  if (value.size() > 253) {
    return base::InvalidArgument(field + " is longer than 253 characters");
  }
  std::stringstream parts(value);
  std::string label;
  while (std::getline(parts, label, '.')) {
    if (label.empty() || !IsAlnumLower(label.front()) || !IsAlnumLower(label.back())) {
      return base::InvalidArgument(field + " '" + value +
                                   "' must be lower-case labels of a-z, 0-9 and '-' separated by '.'");
    }
    for (char c : label) {
      if (!IsAlnumLower(c) && c != '-') {
        return base::InvalidArgument(field + " '" + value + "' has a character other than a-z, 0-9, '-' and '.'");
      }
    }
  }
  if (value.back() == '.') {
    return base::InvalidArgument(field + " '" + value + "' must not end with '.'");
  }
  return base::Status::Ok();
}

base::Status ValidatePodSandboxConfig(const ::runtime::v1::PodSandboxConfig& config) {
  if (!config.has_metadata()) {
    return base::InvalidArgument("config.metadata is required");
  }
  const auto& md = config.metadata();
  CHRYS_RETURN_IF_ERROR(ValidateDnsSubdomain("config.metadata.name", md.name()));
  CHRYS_RETURN_IF_ERROR(ValidateDnsLabel("config.metadata.namespace", md.namespace_()));
  if (md.uid().empty()) {
    return base::InvalidArgument("config.metadata.uid is required");
  }
  if (md.uid().size() > 128 || md.uid().find_first_of("/\n\r\t ") != std::string::npos) {
    return base::InvalidArgument("config.metadata.uid must be at most 128 printable characters without '/' or spaces");
  }
  if (!config.hostname().empty()) {
    CHRYS_RETURN_IF_ERROR(ValidateDnsSubdomain("config.hostname", config.hostname()));
  }
  if (!config.log_directory().empty() && config.log_directory()[0] != '/') {
    return base::InvalidArgument("config.log_directory '" + config.log_directory() + "' must be an absolute path");
  }
  for (const auto& pm : config.port_mappings()) {
    if (pm.container_port() <= 0 || pm.container_port() > 65535) {
      return base::InvalidArgument("config.port_mappings: container_port " + std::to_string(pm.container_port()) +
                                   " is not in 1..65535");
    }
    if (pm.host_port() < 0 || pm.host_port() > 65535) {
      return base::InvalidArgument("config.port_mappings: host_port " + std::to_string(pm.host_port()) +
                                   " is not in 0..65535");
    }
  }
  return base::Status::Ok();
}

base::Result<std::string> ResolveLogPath(const std::string& log_directory, const std::string& log_path) {
  if (log_path.empty()) {
    return std::string();
  }
  if (log_directory.empty()) {
    return base::InvalidArgument("config.log_path '" + log_path + "' is set but the pod has no log_directory");
  }
  if (log_path[0] == '/') {
    return base::InvalidArgument("config.log_path '" + log_path + "' must be relative to the pod's log_directory");
  }
  std::filesystem::path relative(log_path);
  for (const auto& part : relative) {
    if (part == "..") {
      return base::InvalidArgument("config.log_path '" + log_path + "' escapes the pod's log_directory");
    }
  }
  return (std::filesystem::path(log_directory) / relative).lexically_normal().string();
}

base::Status ValidateContainerConfig(const ::runtime::v1::ContainerConfig& config,
                                     const ::runtime::v1::PodSandboxConfig& sandbox_config) {
  if (!config.has_metadata()) {
    return base::InvalidArgument("config.metadata is required");
  }
  CHRYS_RETURN_IF_ERROR(ValidateDnsLabel("config.metadata.name", config.metadata().name()));
  if (!config.has_image() || config.image().image().empty()) {
    return base::InvalidArgument("config.image.image is required");
  }
  auto log = ResolveLogPath(sandbox_config.log_directory(), config.log_path());
  if (!log.ok()) {
    return log.error();
  }
  for (const auto& mount : config.mounts()) {
    if (mount.container_path().empty() || mount.container_path()[0] != '/') {
      return base::InvalidArgument("config.mounts: container_path '" + mount.container_path() +
                                   "' must be an absolute path");
    }
  }
  for (const auto& env : config.envs()) {
    if (env.key().empty() || env.key().find('=') != std::string::npos) {
      return base::InvalidArgument("config.envs: key '" + env.key() + "' must be non-empty and have no '='");
    }
  }
  const auto& security = config.linux().security_context();
  if (!security.privileged()) {
    auto capabilities = ResolveCapabilities(security.capabilities());
    if (!capabilities.ok()) {
      return capabilities.error();
    }
  }
  return base::Status::Ok();
}

namespace {

bool IsAllCapabilities(const std::string& name) {
  return base::AsciiUpper(name) == "ALL";
}

// A capability name as the guest takes it (upper case, with the CAP_ prefix), or an error naming list[index].
base::Result<std::string> CanonicalCapability(const std::string& name, const std::string& list, int index) {
  std::string upper = base::AsciiUpper(name);
  if (upper.rfind("CAP_", 0) != 0) {
    upper = "CAP_" + upper;
  }
  if (!base::IsKnownCapability(upper)) {
    return base::InvalidArgument("config.linux.security_context.capabilities." + list + "[" + std::to_string(index) +
                                 "]: unknown capability '" + name.substr(0, 64) + "'");
  }
  return upper;
}

}  // namespace

base::Result<std::vector<std::string>> ResolveCapabilities(const ::runtime::v1::Capability& requested) {
  const auto& known = base::KnownCapabilities();
  auto index_of = [&known](const std::string& name) {
    return static_cast<size_t>(std::find(known.begin(), known.end(), name) - known.begin());
  };
  const auto& add = requested.add_capabilities();
  const auto& drop = requested.drop_capabilities();
  // "ALL" first, so that single names still refine it: add ALL + drop CHOWN is everything but CAP_CHOWN, and
  // drop ALL + add NET_BIND_SERVICE is that one capability.
  std::vector<bool> granted(known.size(), false);
  if (std::any_of(add.begin(), add.end(), IsAllCapabilities)) {
    granted.assign(known.size(), true);
  } else {
    for (const auto& name : base::DefaultCapabilities()) {
      granted[index_of(name)] = true;
    }
  }
  if (std::any_of(drop.begin(), drop.end(), IsAllCapabilities)) {
    granted.assign(known.size(), false);
  }
  for (const auto& [list, field, value] :
       {std::tuple{&add, "add_capabilities", true}, std::tuple{&drop, "drop_capabilities", false}}) {
    for (int i = 0; i < list->size(); ++i) {
      if (IsAllCapabilities(list->Get(i))) {
        continue;
      }
      CHRYS_ASSIGN_OR_RETURN(std::string cap, CanonicalCapability(list->Get(i), field, i));
      granted[index_of(cap)] = value;
    }
  }
  // An ambient capability is granted too: the kernel raises it only from the permitted and inheritable sets.
  CHRYS_ASSIGN_OR_RETURN(std::vector<std::string> ambient, ResolveAmbientCapabilities(requested));
  for (const auto& cap : ambient) {
    granted[index_of(cap)] = true;
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < known.size(); ++i) {
    if (granted[i]) {
      out.push_back(known[i]);
    }
  }
  return out;
}

base::Result<std::vector<std::string>> ResolveAmbientCapabilities(const ::runtime::v1::Capability& requested) {
  std::vector<std::string> out;
  const auto& ambient = requested.add_ambient_capabilities();
  for (int i = 0; i < ambient.size(); ++i) {
    if (IsAllCapabilities(ambient.Get(i))) {
      return base::InvalidArgument("config.linux.security_context.capabilities.add_ambient_capabilities[" +
                                   std::to_string(i) + "]: name each capability; ALL is not taken here");
    }
    CHRYS_ASSIGN_OR_RETURN(std::string cap, CanonicalCapability(ambient.Get(i), "add_ambient_capabilities", i));
    if (std::find(out.begin(), out.end(), cap) == out.end()) {
      out.push_back(cap);
    }
  }
  return out;
}

base::Result<std::string> ResolveHandler(const std::string& requested) {
  if (requested.empty()) {
    return std::string(kHandlers[0]);
  }
  for (const char* handler : kHandlers) {
    if (requested == handler) {
      return requested;
    }
  }
  std::string known;
  for (const char* handler : kHandlers) {
    known += (known.empty() ? "" : ", ") + std::string(handler);
  }
  return base::InvalidArgument("runtime_handler '" + requested + "' is not served by chrysalis (known: " + known + ")");
}

base::Status ValidateLinuxResources(const ::runtime::v1::LinuxContainerResources& r, const std::string& field) {
  auto negative = [&](const char* name, int64_t value) {
    return base::InvalidArgument(field + "." + name + ": " + std::to_string(value) + " is negative");
  };
  if (r.cpu_period() < 0) {
    return negative("cpu_period", r.cpu_period());
  }
  if (r.cpu_quota() < 0) {
    return negative("cpu_quota", r.cpu_quota());
  }
  if (r.cpu_shares() < 0) {
    return negative("cpu_shares", r.cpu_shares());
  }
  if (r.memory_limit_in_bytes() < 0) {
    return negative("memory_limit_in_bytes", r.memory_limit_in_bytes());
  }
  if (r.memory_swap_limit_in_bytes() < -1) {
    return base::InvalidArgument(field +
                                 ".memory_swap_limit_in_bytes: " + std::to_string(r.memory_swap_limit_in_bytes()) +
                                 " (only -1, unlimited, may be negative)");
  }
  if (r.cpu_period() != 0 && (r.cpu_period() < 1000 || r.cpu_period() > 1000000)) {
    return base::InvalidArgument(field + ".cpu_period: " + std::to_string(r.cpu_period()) +
                                 " is outside 1000..1000000 microseconds");
  }
  if (r.cpu_quota() != 0 && r.cpu_quota() < 1000) {
    return base::InvalidArgument(field + ".cpu_quota: " + std::to_string(r.cpu_quota()) +
                                 " is below the 1000 microseconds the kernel accepts");
  }
  if (r.cpu_shares() > 262144) {
    return base::InvalidArgument(field + ".cpu_shares: " + std::to_string(r.cpu_shares()) + " is above 262144");
  }
  if (r.memory_limit_in_bytes() != 0 && r.memory_limit_in_bytes() < (4 << 20)) {
    return base::InvalidArgument(field + ".memory_limit_in_bytes: " + std::to_string(r.memory_limit_in_bytes()) +
                                 " is below 4 MiB");
  }
  if (r.oom_score_adj() < -1000 || r.oom_score_adj() > 1000) {
    return base::InvalidArgument(field + ".oom_score_adj: " + std::to_string(r.oom_score_adj()) +
                                 " is outside -1000..1000");
  }
  for (const auto& limit : r.hugepage_limits()) {
    if (limit.page_size().empty()) {
      return base::InvalidArgument(field + ".hugepage_limits: page_size is required");
    }
  }
  return base::Status::Ok();
}

::runtime::v1::LinuxContainerResources MergeLinuxResources(const ::runtime::v1::LinuxContainerResources& current,
                                                           const ::runtime::v1::LinuxContainerResources& update) {
  ::runtime::v1::LinuxContainerResources out = current;
  if (update.cpu_period() != 0) {
    out.set_cpu_period(update.cpu_period());
  }
  if (update.cpu_quota() != 0) {
    out.set_cpu_quota(update.cpu_quota());
  }
  if (update.cpu_shares() != 0) {
    out.set_cpu_shares(update.cpu_shares());
  }
  if (update.memory_limit_in_bytes() != 0) {
    out.set_memory_limit_in_bytes(update.memory_limit_in_bytes());
  }
  if (update.memory_swap_limit_in_bytes() != 0) {
    out.set_memory_swap_limit_in_bytes(update.memory_swap_limit_in_bytes());
  }
  if (!update.cpuset_cpus().empty()) {
    out.set_cpuset_cpus(update.cpuset_cpus());
  }
  if (!update.cpuset_mems().empty()) {
    out.set_cpuset_mems(update.cpuset_mems());
  }
  for (const auto& limit : update.hugepage_limits()) {
    bool replaced = false;
    for (auto& existing : *out.mutable_hugepage_limits()) {
      if (existing.page_size() == limit.page_size()) {
        existing.set_limit(limit.limit());
        replaced = true;
      }
    }
    if (!replaced) {
      *out.add_hugepage_limits() = limit;
    }
  }
  for (const auto& [key, value] : update.unified()) {
    (*out.mutable_unified())[key] = value;
  }
  return out;
}

uint64_t CpuSharesToWeight(int64_t shares) {
  if (shares <= 0) {
    return 0;
  }
  int64_t clamped = std::clamp<int64_t>(shares, 2, 262144);
  return static_cast<uint64_t>(1 + ((clamped - 2) * 9999) / 262142);
}

std::string NewId() {
  std::array<unsigned char, 32> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
    // RAND_bytes failing means the process has no entropy source at all; ids must still be unique.
    std::random_device rd;
    for (auto& b : bytes) {
      b = static_cast<unsigned char>(rd());
    }
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id;
  id.reserve(64);
  for (unsigned char b : bytes) {
    id.push_back(kHex[b >> 4]);
    id.push_back(kHex[b & 0xf]);
  }
  return id;
}

}  // namespace chrys::cri
