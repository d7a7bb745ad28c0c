#include "cri/validation.h"

#include <openssl/rand.h>

#include <array>
#include <filesystem>
#include <random>
#include <sstream>

namespace chrys::cri {

namespace {

constexpr std::array<const char*, 5> kHandlers = {"chrysalis", "chrysalis-qemu", "chrysalis-cvm", "chrysalis-snp",
                                                  "chrysalis-tdx"};

bool IsAlnumLower(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

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
  return base::Status::Ok();
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
  return base::InvalidArgument("runtime_handler '" + requested + "' is not served by chrysalis (known: " + known +
                               ")");
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
