#include "guest/agent/validation.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <regex>

#include "guest/agent/oci_spec.h"
#include "guest/agent/storage.h"

namespace chrys::guest {
namespace {

using base::InvalidArgument;
using base::Status;

constexpr std::array<std::string_view, 16> kRlimits = {
    "RLIMIT_AS",      "RLIMIT_CORE",     "RLIMIT_CPU",        "RLIMIT_DATA",   "RLIMIT_FSIZE", "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE",       "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_RSS",
    "RLIMIT_RTPRIO",  "RLIMIT_RTTIME",   "RLIMIT_SIGPENDING", "RLIMIT_STACK"};

constexpr std::array<std::string_view, 9> kMountOptions = {"ro",       "rw",      "nosuid", "nodev",   "noexec",
                                                           "rprivate", "private", "rslave", "relatime"};

bool HasNul(std::string_view s) {
  return s.find('\0') != std::string_view::npos;
}

bool IsIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

Status ValidateIp(std::string_view ip, const std::string& field) {
  std::string s(ip);
  unsigned char buf[16];
  if (::inet_pton(AF_INET, s.c_str(), buf) == 1 || ::inet_pton(AF_INET6, s.c_str(), buf) == 1) {
    return Status::Ok();
  }
  return InvalidArgument(field + ": '" + s.substr(0, 64) + "' is not an IPv4 or IPv6 address");
}

Status ValidateMac(std::string_view mac, const std::string& field) {
  bool ok = mac.size() == 17;
  for (size_t i = 0; ok && i < mac.size(); ++i) {
    char c = mac[i];
    if (i % 3 == 2) {
      ok = c == ':';
    } else {
      ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    }
  }
  if (!ok) {
    return InvalidArgument(field + ": '" + std::string(mac.substr(0, 32)) + "' is not a MAC like aa:bb:cc:dd:ee:ff");
  }
  return Status::Ok();
}

Status ValidateIfName(std::string_view name, const std::string& field, bool allow_empty) {
  if (name.empty() && allow_empty) {
    return Status::Ok();
  }
  if (name.empty() || name.size() > 15 || name == "." || name == ".." ||
      !std::all_of(name.begin(), name.end(), IsIdChar)) {
    return InvalidArgument(field + ": interface name must be 1..15 of [A-Za-z0-9_.-]");
  }
  return Status::Ok();
}

Status ValidateCidr(std::string_view cidr, const std::string& field) {
  if (cidr == "default") {
    return Status::Ok();
  }
  auto slash = cidr.find('/');
  std::string_view addr = cidr.substr(0, slash);
  CHRYS_RETURN_IF_ERROR(ValidateIp(addr, field));
  if (slash != std::string_view::npos) {
    std::string_view len = cidr.substr(slash + 1);
    int max = addr.find(':') != std::string_view::npos ? 128 : 32;
    if (len.empty() || len.size() > 3 || !std::all_of(len.begin(), len.end(), ::isdigit) ||
        std::stoi(std::string(len)) > max) {
      return InvalidArgument(field + ": bad prefix length in '" + std::string(cidr.substr(0, 64)) + "'");
    }
  }
  return Status::Ok();
}

// Printable text without NUL or newline, of bounded size, for values written into config files.
Status ValidateLine(std::string_view text, size_t max, const std::string& field) {
  if (text.size() > max) {
    return InvalidArgument(field + ": longer than " + std::to_string(max) + " bytes");
  }
  for (char c : text) {
    if (c == '\0' || c == '\n' || c == '\r') {
      return InvalidArgument(field + ": must not contain NUL or line breaks");
    }
  }
  return Status::Ok();
}

Status ValidateSysctlKey(std::string_view key, const std::string& field) {
  if (key.empty() || key.size() > 128 || key.front() == '.' || key.back() == '.' ||
      key.find("..") != std::string_view::npos) {
    return InvalidArgument(field + ": bad sysctl name '" + std::string(key.substr(0, 64)) + "'");
  }
  for (char c : key) {
    if (!IsIdChar(c) && c != '/') {
      return InvalidArgument(field + ": bad sysctl name '" + std::string(key.substr(0, 64)) + "'");
    }
  }
  if (key.find('/') != std::string_view::npos && key.find("/.") != std::string_view::npos) {
    return InvalidArgument(field + ": bad sysctl name '" + std::string(key.substr(0, 64)) + "'");
  }
  return Status::Ok();
}

}  // namespace

bool IsKnownRlimit(std::string_view name) {
  return std::find(kRlimits.begin(), kRlimits.end(), name) != kRlimits.end();
}

Status ValidateId(std::string_view id, const std::string& field) {
  if (id.empty() || id.size() > kMaxIdLength) {
    return InvalidArgument(field + ": must be 1.." + std::to_string(kMaxIdLength) + " characters");
  }
  if (id.front() == '.' || id.front() == '-' || !std::all_of(id.begin(), id.end(), IsIdChar)) {
    return InvalidArgument(field + ": '" + std::string(id) +
                           "' must be made of [A-Za-z0-9_.-] and not start with '.' or '-'");
  }
  return Status::Ok();
}

Status ValidateSerial(std::string_view serial, const std::string& field) {
  if (serial.empty() || serial.size() > kMaxSerialLength) {
    return InvalidArgument(field + ": a virtio-blk serial must be 1.." + std::to_string(kMaxSerialLength) +
                           " characters");
  }
  for (char c : serial) {
    if (!IsIdChar(c) && c != ':') {
      return InvalidArgument(field + ": serial '" + std::string(serial) + "' must be made of [A-Za-z0-9_.:-]");
    }
  }
  if (serial.front() == '.') {
    return InvalidArgument(field + ": serial must not start with '.'");
  }
  return Status::Ok();
}

Status ValidateAbsolutePath(std::string_view path, const std::string& field) {
  if (path.empty() || path.front() != '/') {
    return InvalidArgument(field + ": must be an absolute path");
  }
  if (path.size() > 4096 || HasNul(path)) {
    return InvalidArgument(field + ": path too long or contains NUL");
  }
  size_t start = 1;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) {
      end = path.size();
    }
    std::string_view part = path.substr(start, end - start);
    if ((part.empty() && end != path.size()) || part == "." || part == "..") {
      return InvalidArgument(field + ": '" + std::string(path.substr(0, 256)) +
                             "' must be normalised (no '.', '..' or '//')");
    }
    start = end + 1;
  }
  return Status::Ok();
}

Status ValidateProcessSpec(const v1::ProcessSpec& process, const std::string& field) {
  if (process.args().empty()) {
    return InvalidArgument(field + ".args: must not be empty");
  }
  if (static_cast<size_t>(process.args_size()) > kMaxArgs) {
    return InvalidArgument(field + ".args: more than " + std::to_string(kMaxArgs) + " arguments");
  }
  size_t bytes = 0;
  for (int i = 0; i < process.args_size(); ++i) {
    const auto& arg = process.args(i);
    if (HasNul(arg)) {
      return InvalidArgument(field + ".args[" + std::to_string(i) + "]: contains NUL");
    }
    bytes += arg.size() + 1;
  }
  if (process.args(0).empty()) {
    return InvalidArgument(field + ".args[0]: the program must not be empty");
  }
  if (static_cast<size_t>(process.env_size()) > kMaxEnv) {
    return InvalidArgument(field + ".env: more than " + std::to_string(kMaxEnv) + " entries");
  }
  for (int i = 0; i < process.env_size(); ++i) {
    const auto& kv = process.env(i);
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0 || HasNul(kv)) {
      return InvalidArgument(field + ".env[" + std::to_string(i) + "]: must be KEY=VALUE with a non-empty KEY");
    }
    bytes += kv.size() + 1;
  }
  if (bytes > kMaxArgvBytes) {
    return InvalidArgument(field + ": args and env together exceed " + std::to_string(kMaxArgvBytes) + " bytes");
  }
  if (!process.cwd().empty()) {
    CHRYS_RETURN_IF_ERROR(ValidateAbsolutePath(process.cwd(), field + ".cwd"));
  }
  if (process.user().umask() > 0777) {
    return InvalidArgument(field + ".user.umask: must be at most 0777");
  }
  CHRYS_RETURN_IF_ERROR(ValidateUserName(process.user().name(), field + ".user.name"));
  CHRYS_RETURN_IF_ERROR(ValidateUserName(process.user().group(), field + ".user.group"));
  if (process.user().name().empty() && !process.user().group().empty()) {
    return InvalidArgument(field + ".user.group: only allowed together with user.name");
  }
  if (process.user().additional_gids_size() > 64) {
    return InvalidArgument(field + ".user.additional_gids: more than 64 groups");
  }
  for (int i = 0; i < process.rlimits_size(); ++i) {
    const auto& r = process.rlimits(i);
    std::string f = field + ".rlimits[" + std::to_string(i) + "]";
    if (!IsKnownRlimit(r.type())) {
      return InvalidArgument(f + ".type: unknown rlimit '" + r.type().substr(0, 64) + "'");
    }
    if (r.soft() > r.hard()) {
      return InvalidArgument(f + ": soft limit above hard limit");
    }
  }
  if (process.rlimits_size() > 32) {
    return InvalidArgument(field + ".rlimits: too many entries");
  }
  for (int i = 0; i < process.capabilities().names_size(); ++i) {
    if (!IsKnownCapability(process.capabilities().names(i))) {
      return InvalidArgument(field + ".capabilities.names[" + std::to_string(i) + "]: unknown capability '" +
                             process.capabilities().names(i).substr(0, 64) + "'");
    }
  }
  // The kernel raises an ambient capability only when it is permitted and inheritable too.
  const auto& names = process.capabilities().names();
  for (int i = 0; i < process.capabilities().ambient_size(); ++i) {
    const std::string& cap = process.capabilities().ambient(i);
    if (std::find(names.begin(), names.end(), cap) == names.end()) {
      return InvalidArgument(field + ".capabilities.ambient[" + std::to_string(i) + "]: '" + cap.substr(0, 64) +
                             "' is not in the process's capabilities (names)");
    }
  }
  if (process.tty_rows() > 10000 || process.tty_columns() > 10000) {
    return InvalidArgument(field + ": tty size out of range");
  }
  return Status::Ok();
}

Status ValidateContainerConfig(const v1::ContainerConfig& config) {
  CHRYS_RETURN_IF_ERROR(ValidateId(config.id(), "config.id"));
  const auto& rootfs = config.rootfs();
  if (rootfs.layer_serials().empty() && rootfs.layer_dirs().empty()) {
    return InvalidArgument("config.rootfs.layer_serials: at least one layer is needed");
  }
  if (!rootfs.layer_serials().empty() && !rootfs.layer_dirs().empty()) {
    return InvalidArgument("config.rootfs.layer_dirs: layer disks and pulled layer directories do not mix");
  }
  if (static_cast<size_t>(rootfs.layer_dirs_size()) > kMaxLayers) {
    return InvalidArgument("config.rootfs.layer_dirs: more than " + std::to_string(kMaxLayers) + " layers");
  }
  for (int i = 0; i < rootfs.layer_dirs_size(); ++i) {
    // Exactly <kPulledLayersDir>/<64 hex>: what PullImage returns; nothing else of the guest can become a layer.
    static const std::regex kPulledLayer(std::string("^") + kPulledLayersDir + "/[0-9a-f]{64}$");
    if (!std::regex_match(rootfs.layer_dirs(i), kPulledLayer)) {
      return InvalidArgument("config.rootfs.layer_dirs[" + std::to_string(i) + "]: '" + rootfs.layer_dirs(i) +
                             "' is not a layer the guest pulled (" + kPulledLayersDir + "/<sha256 hex>)");
    }
  }
  if (static_cast<size_t>(rootfs.layer_serials_size()) > kMaxLayers) {
    return InvalidArgument("config.rootfs.layer_serials: more than " + std::to_string(kMaxLayers) + " layers");
  }
  for (int i = 0; i < rootfs.layer_serials_size(); ++i) {
    CHRYS_RETURN_IF_ERROR(
        ValidateSerial(rootfs.layer_serials(i), "config.rootfs.layer_serials[" + std::to_string(i) + "]"));
  }
  if (!rootfs.scratch_serial().empty()) {
    CHRYS_RETURN_IF_ERROR(ValidateSerial(rootfs.scratch_serial(), "config.rootfs.scratch_serial"));
    for (const auto& layer : rootfs.layer_serials()) {
      if (layer == rootfs.scratch_serial()) {
        return InvalidArgument("config.rootfs.scratch_serial: the scratch disk cannot also be a layer");
      }
    }
  }
  if (!config.has_process()) {
    return InvalidArgument("config.process: missing");
  }
  CHRYS_RETURN_IF_ERROR(ValidateProcessSpec(config.process(), "config.process"));
  if (static_cast<size_t>(config.mounts_size()) > kMaxMounts) {
    return InvalidArgument("config.mounts: more than " + std::to_string(kMaxMounts) + " mounts");
  }
  for (int i = 0; i < config.mounts_size(); ++i) {
    const auto& m = config.mounts(i);
    std::string f = "config.mounts[" + std::to_string(i) + "]";
    CHRYS_RETURN_IF_ERROR(ValidateAbsolutePath(m.destination(), f + ".destination"));
    if (m.destination() == "/") {
      return InvalidArgument(f + ".destination: cannot mount over the container root");
    }
    const std::string& type = m.type().empty() ? std::string("bind") : m.type();
    if (type == "bind") {
      CHRYS_RETURN_IF_ERROR(ValidateAbsolutePath(m.source(), f + ".source"));
      // Only shares the host exported to this VM may be bound in: never the agent's own files.
      if (m.source().rfind("/run/chrys/shares/", 0) != 0) {
        return InvalidArgument(f + ".source: bind mounts must come from /run/chrys/shares/<name>");
      }
    } else if (type == "tmpfs") {
      if (!m.source().empty() && m.source() != "tmpfs") {
        return InvalidArgument(f + ".source: must be empty for a tmpfs mount");
      }
    } else {
      return InvalidArgument(f + ".type: must be 'bind' or 'tmpfs'");
    }
    for (const auto& opt : m.options()) {
      bool size_opt = type == "tmpfs" && (opt.rfind("size=", 0) == 0 || opt.rfind("mode=", 0) == 0) &&
                      opt.size() < 32 && std::all_of(opt.begin() + 5, opt.end(), [](char c) {
                        return (c >= '0' && c <= '9') || c == 'k' || c == 'm' || c == 'g' || c == '%';
                      });
      if (!size_opt && std::find(kMountOptions.begin(), kMountOptions.end(), opt) == kMountOptions.end()) {
        return InvalidArgument(f + ".options: option '" + opt.substr(0, 32) + "' is not allowed");
      }
    }
  }
  CHRYS_RETURN_IF_ERROR(ValidateResources(config.resources(), "config.resources"));
  CHRYS_RETURN_IF_ERROR(ValidateSeccomp(config.seccomp(), "config.seccomp"));
  if (config.sysctls_size() > 64) {
    return InvalidArgument("config.sysctls: too many entries");
  }
  for (const auto& [key, value] : config.sysctls()) {
    CHRYS_RETURN_IF_ERROR(ValidateSysctlKey(key, "config.sysctls"));
    bool namespaced = key.rfind("kernel.shm", 0) == 0 || key.rfind("kernel.msg", 0) == 0 || key == "kernel.sem" ||
                      key.rfind("fs.mqueue.", 0) == 0 || key.rfind("net.", 0) == 0;
    if (!namespaced) {
      return InvalidArgument("config.sysctls: '" + key + "' is not a namespaced sysctl");
    }
    CHRYS_RETURN_IF_ERROR(ValidateLine(value, 256, "config.sysctls[" + key + "]"));
  }
  if (config.annotations_size() > 64) {
    return InvalidArgument("config.annotations: more than 64 entries");
  }
  for (const auto& [key, value] : config.annotations()) {
    if (key.empty() || key.size() > 256 || value.size() > 4096 || HasNul(key) || HasNul(value)) {
      return InvalidArgument("config.annotations: keys must be 1..256 bytes, values at most 4096, no NUL");
    }
  }
  return Status::Ok();
}

Status ValidateSetupSandbox(const v1::SetupSandboxRequest& request) {
  const auto& hostname = request.hostname();
  if (!hostname.empty()) {
    if (hostname.size() > 64 || hostname.front() == '-' || hostname.front() == '.' ||
        !std::all_of(hostname.begin(), hostname.end(), [](char c) { return IsIdChar(c) && c != '_'; })) {
      return InvalidArgument("hostname: must be 1..64 of [A-Za-z0-9.-]");
    }
  }
  const auto& dns = request.dns();
  if (dns.servers_size() > 8 || dns.searches_size() > 32 || dns.options_size() > 32) {
    return InvalidArgument("dns: at most 8 servers, 32 searches and 32 options");
  }
  for (int i = 0; i < dns.servers_size(); ++i) {
    CHRYS_RETURN_IF_ERROR(ValidateIp(dns.servers(i), "dns.servers[" + std::to_string(i) + "]"));
  }
  for (int i = 0; i < dns.searches_size(); ++i) {
    const auto& s = dns.searches(i);
    if (s.empty() || s.find(' ') != std::string::npos) {
      return InvalidArgument("dns.searches[" + std::to_string(i) + "]: must be a non-empty domain");
    }
    CHRYS_RETURN_IF_ERROR(ValidateLine(s, 253, "dns.searches[" + std::to_string(i) + "]"));
  }
  for (int i = 0; i < dns.options_size(); ++i) {
    const auto& o = dns.options(i);
    if (o.empty() || o.find(' ') != std::string::npos) {
      return InvalidArgument("dns.options[" + std::to_string(i) + "]: must be a single word like ndots:5");
    }
    CHRYS_RETURN_IF_ERROR(ValidateLine(o, 64, "dns.options[" + std::to_string(i) + "]"));
  }
  if (static_cast<size_t>(request.interfaces_size()) > kMaxInterfaces) {
    return InvalidArgument("interfaces: more than " + std::to_string(kMaxInterfaces));
  }
  for (int i = 0; i < request.interfaces_size(); ++i) {
    const auto& itf = request.interfaces(i);
    std::string f = "interfaces[" + std::to_string(i) + "]";
    CHRYS_RETURN_IF_ERROR(ValidateMac(itf.mac(), f + ".mac"));
    CHRYS_RETURN_IF_ERROR(ValidateIfName(itf.name(), f + ".name", true));
    if (itf.mtu() != 0 && (itf.mtu() < 68 || itf.mtu() > 65535)) {
      return InvalidArgument(f + ".mtu: must be 68..65535");
    }
    if (itf.addresses_size() > 32) {
      return InvalidArgument(f + ".addresses: more than 32");
    }
    for (int j = 0; j < itf.addresses_size(); ++j) {
      const auto& a = itf.addresses(j);
      std::string fa = f + ".addresses[" + std::to_string(j) + "]";
      CHRYS_RETURN_IF_ERROR(ValidateIp(a.address(), fa + ".address"));
      uint32_t max = a.address().find(':') != std::string::npos ? 128 : 32;
      if (a.prefix_length() > max) {
        return InvalidArgument(fa + ".prefix_length: at most " + std::to_string(max));
      }
    }
  }
  if (static_cast<size_t>(request.routes_size()) > kMaxRoutes) {
    return InvalidArgument("routes: more than " + std::to_string(kMaxRoutes));
  }
  for (int i = 0; i < request.routes_size(); ++i) {
    const auto& r = request.routes(i);
    std::string f = "routes[" + std::to_string(i) + "]";
    CHRYS_RETURN_IF_ERROR(ValidateCidr(r.destination(), f + ".destination"));
    if (!r.gateway().empty()) {
      CHRYS_RETURN_IF_ERROR(ValidateIp(r.gateway(), f + ".gateway"));
    }
    if (!r.source().empty()) {
      CHRYS_RETURN_IF_ERROR(ValidateIp(r.source(), f + ".source"));
    }
    CHRYS_RETURN_IF_ERROR(ValidateIfName(r.device(), f + ".device", true));
    if (r.gateway().empty() && r.device().empty()) {
      return InvalidArgument(f + ": needs a gateway or a device");
    }
  }
  if (request.neighbors_size() > 256) {
    return InvalidArgument("neighbors: more than 256");
  }
  for (int i = 0; i < request.neighbors_size(); ++i) {
    const auto& n = request.neighbors(i);
    std::string f = "neighbors[" + std::to_string(i) + "]";
    CHRYS_RETURN_IF_ERROR(ValidateIp(n.address(), f + ".address"));
    CHRYS_RETURN_IF_ERROR(ValidateMac(n.mac(), f + ".mac"));
    CHRYS_RETURN_IF_ERROR(ValidateIfName(n.device(), f + ".device", false));
  }
  if (request.sysctls_size() > 128) {
    return InvalidArgument("sysctls: more than 128");
  }
  for (const auto& [key, value] : request.sysctls()) {
    CHRYS_RETURN_IF_ERROR(ValidateSysctlKey(key, "sysctls"));
    CHRYS_RETURN_IF_ERROR(ValidateLine(value, 256, "sysctls[" + key + "]"));
  }
  if (request.extra_hosts_size() > 256) {
    return InvalidArgument("extra_hosts: more than 256");
  }
  for (int i = 0; i < request.extra_hosts_size(); ++i) {
    CHRYS_RETURN_IF_ERROR(ValidateLine(request.extra_hosts(i), 1024, "extra_hosts[" + std::to_string(i) + "]"));
  }
  return Status::Ok();
}

Status ValidateMountShare(const v1::MountShareRequest& request) {
  CHRYS_RETURN_IF_ERROR(ValidateId(request.tag(), "tag"));
  return ValidateId(request.name(), "name");
}

Status ValidateResume(const v1::ResumeRequest& request) {
  if (request.unix_time_ns() <= 0) {
    return InvalidArgument("unix_time_ns: " + std::to_string(request.unix_time_ns()) + " is not a time after 1970");
  }
  if (request.entropy().size() < 32 || request.entropy().size() > 512) {
    return InvalidArgument("entropy: " + std::to_string(request.entropy().size()) + " bytes is outside 32..512");
  }
  return Status::Ok();
}

Status ValidatePrepareTemplate(const v1::PrepareTemplateRequest& request) {
  if (request.keep_free_mib() > 1024) {
    return InvalidArgument("keep_free_mib: " + std::to_string(request.keep_free_mib()) + " is over 1024");
  }
  return Status::Ok();
}

Status ValidateOnlineResources(const v1::OnlineResourcesRequest& request) {
  if (request.vcpus() < 1 || request.vcpus() > 255) {
    return InvalidArgument("vcpus: " + std::to_string(request.vcpus()) + " is outside 1..255");
  }
  if (request.added_memory_mib() > (1U << 22)) {
    return InvalidArgument("added_memory_mib: " + std::to_string(request.added_memory_mib()) + " is over 4194304");
  }
  if (request.timeout_ms() > 60000) {
    return InvalidArgument("timeout_ms: " + std::to_string(request.timeout_ms()) + " is over 60000");
  }
  return Status::Ok();
}

Status ValidateProcessRef(const v1::ProcessRef& ref, const std::string& field) {
  CHRYS_RETURN_IF_ERROR(ValidateId(ref.container_id(), field + ".container_id"));
  if (!ref.exec_id().empty()) {
    CHRYS_RETURN_IF_ERROR(ValidateId(ref.exec_id(), field + ".exec_id"));
  }
  return Status::Ok();
}

Status ValidateSignal(int signal) {
  if (signal < 1 || signal > 64) {
    return InvalidArgument("signal: must be 1..64");
  }
  return Status::Ok();
}

Status ValidateWriteStdin(const v1::WriteStdinRequest& request) {
  CHRYS_RETURN_IF_ERROR(ValidateProcessRef(request.process(), "process"));
  if (request.data().size() > kMaxStdinChunk) {
    return InvalidArgument("data: at most " + std::to_string(kMaxStdinChunk) + " bytes per call");
  }
  return Status::Ok();
}

Status ValidateUserName(std::string_view name, const std::string& field) {
  if (name.size() > 256) {
    return InvalidArgument(field + ": longer than 256 characters");
  }
  for (char c : name) {
    // ':' separates passwd fields and user:group; control characters and '/' never appear in names.
    if (c == ':' || c == '/' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return InvalidArgument(field + ": '" + std::string(name.substr(0, 64)) + "' is not a valid user or group name");
    }
  }
  return Status::Ok();
}

namespace {

bool IsCpuList(std::string_view list) {
  return list.size() <= 256 &&
         std::all_of(list.begin(), list.end(), [](char c) { return ::isdigit(c) || c == ',' || c == '-'; });
}

// "2MB", "1GB", "64KB": the page-size part of hugetlb.<size>.max.
bool IsHugepageSize(std::string_view size) {
  if (size.size() < 3 || size.size() > 8 || size.substr(size.size() - 1) != "B") {
    return false;
  }
  char unit = size[size.size() - 2];
  if (unit != 'K' && unit != 'M' && unit != 'G') {
    return false;
  }
  auto digits = size.substr(0, size.size() - 2);
  return std::all_of(digits.begin(), digits.end(), ::isdigit);
}

}  // namespace

Status ValidateResources(const v1::Resources& res, const std::string& field) {
  if (res.cpu_quota_us() < 0) {
    return InvalidArgument(field + ".cpu_quota_us: must not be negative");
  }
  if (res.memory_limit_bytes() < 0) {
    return InvalidArgument(field + ".memory_limit_bytes: must not be negative");
  }
  if (res.pids_limit() < 0) {
    return InvalidArgument(field + ".pids_limit: must not be negative");
  }
  if (res.memory_swap_limit_bytes() < -1) {
    return InvalidArgument(field + ".memory_swap_limit_bytes: must be -1 (unlimited), 0 or a size");
  }
  if (res.cpu_quota_us() > 0 && res.cpu_quota_us() < 1000) {
    return InvalidArgument(field + ".cpu_quota_us: at least 1000");
  }
  if (res.cpu_period_us() != 0 && (res.cpu_period_us() < 1000 || res.cpu_period_us() > 1000000)) {
    return InvalidArgument(field + ".cpu_period_us: must be 1000..1000000");
  }
  if (res.cpu_weight() > 10000) {
    return InvalidArgument(field + ".cpu_weight: must be 1..10000");
  }
  if (res.memory_limit_bytes() > 0 && res.memory_limit_bytes() < (4 << 20)) {
    return InvalidArgument(field + ".memory_limit_bytes: at least 4 MiB");
  }
  if (res.memory_swap_limit_bytes() > 0 && res.memory_limit_bytes() > 0 &&
      res.memory_swap_limit_bytes() < res.memory_limit_bytes()) {
    return InvalidArgument(field + ".memory_swap_limit_bytes: memory plus swap cannot be below the memory limit");
  }
  if (!IsCpuList(res.cpuset_cpus())) {
    return InvalidArgument(field + ".cpuset_cpus: must look like '0-2,4'");
  }
  if (!IsCpuList(res.cpuset_mems())) {
    return InvalidArgument(field + ".cpuset_mems: must look like '0' or '0-1'");
  }
  if (res.hugepage_limits_size() > 8) {
    return InvalidArgument(field + ".hugepage_limits: more than 8 page sizes");
  }
  for (const auto& [size, limit] : res.hugepage_limits()) {
    if (!IsHugepageSize(size)) {
      return InvalidArgument(field + ".hugepage_limits: page size '" + size.substr(0, 16) +
                             "' must look like '2MB' or '1GB'");
    }
  }
  if (res.unified_size() > 64) {
    return InvalidArgument(field + ".unified: more than 64 entries");
  }
  for (const auto& [key, value] : res.unified()) {
    // A cgroup interface file of this very cgroup: "controller.name", nothing that walks elsewhere.
    bool file_name = !key.empty() && key.size() <= 64 && key.find('.') != std::string::npos && key[0] != '.' &&
                     std::all_of(key.begin(), key.end(), [](char c) {
                       return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_';
                     });
    if (!file_name || key.rfind("cgroup.", 0) == 0) {
      return InvalidArgument(field + ".unified: '" + key.substr(0, 64) + "' is not a controller file of the cgroup");
    }
    CHRYS_RETURN_IF_ERROR(ValidateLine(value, 256, field + ".unified[" + key + "]"));
  }
  return Status::Ok();
}

Status ValidateSeccomp(const v1::Seccomp& seccomp, const std::string& field) {
  if (seccomp.mode() == v1::Seccomp::LOCALHOST) {
    if (seccomp.profile_json().empty()) {
      return InvalidArgument(field + ".profile_json: required for a Localhost profile");
    }
    if (seccomp.profile_json().size() > (512 << 10)) {
      return InvalidArgument(field + ".profile_json: larger than 512 KiB");
    }
    if (auto profile = LocalhostSeccomp(seccomp.profile_json()); !profile.ok()) {
      return InvalidArgument(field + ".profile_json: " + profile.error().message());
    }
  } else if (!seccomp.profile_json().empty()) {
    return InvalidArgument(field + ".profile_json: only for a Localhost profile");
  }
  if (!v1::Seccomp::Mode_IsValid(seccomp.mode())) {
    return InvalidArgument(field + ".mode: unknown mode " + std::to_string(seccomp.mode()));
  }
  return Status::Ok();
}

Status ValidateUpdateResources(const v1::UpdateContainerResourcesRequest& request) {
  CHRYS_RETURN_IF_ERROR(ValidateId(request.container_id(), "container_id"));
  return ValidateResources(request.resources(), "resources");
}

}  // namespace chrys::guest
