#include "guest/agent/hal_mode.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "guest/agent/guest_init.h"
#include "guest/agent/log.h"
#include "guest/agent/sandbox.h"
#include "guest/agent/validation.h"

namespace chrys::guest {

using base::Result;
using nlohmann::json;

namespace {

constexpr size_t kMaxConfigBytes = 256 * 1024;
constexpr size_t kMaxListItems = 64;

base::Error Bad(const std::string& what) {
  return base::InvalidArgument("agent.json: " + what);
}

Result<std::string> StringField(const json& obj, const char* key, const std::string& where) {
  if (!obj.contains(key)) {
    return std::string();
  }
  if (!obj[key].is_string()) {
    return Bad(where + key + " must be a string");
  }
  return obj[key].get<std::string>();
}

Result<std::vector<std::string>> StringList(const json& obj, const char* key, const std::string& where) {
  std::vector<std::string> out;
  if (!obj.contains(key)) {
    return out;
  }
  if (!obj[key].is_array() || obj[key].size() > kMaxListItems) {
    return Bad(where + key + " must be a list of at most " + std::to_string(kMaxListItems) + " strings");
  }
  for (const json& item : obj[key]) {
    if (!item.is_string()) {
      return Bad(where + key + " must hold strings only");
    }
    out.push_back(item.get<std::string>());
  }
  return out;
}

// "10.244.1.7/24" -> address + prefix length.
Result<v1::IpAddress> ParseCidr(const std::string& cidr, const std::string& where) {
  size_t slash = cidr.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 >= cidr.size() || slash + 4 < cidr.size()) {
    return Bad(where + " \"" + cidr + "\" is not ADDRESS/PREFIX");
  }
  std::string prefix = cidr.substr(slash + 1);
  if (prefix.find_first_not_of("0123456789") != std::string::npos) {
    return Bad(where + " \"" + cidr + "\" has a non-numeric prefix length");
  }
  v1::IpAddress ip;
  ip.set_address(cidr.substr(0, slash));
  ip.set_prefix_length(static_cast<uint32_t>(std::stoul(prefix)));
  return ip;
}

}  // namespace

bool HalModeRequested(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--hal") == 0) {
      return true;
    }
  }
  return false;
}

Result<HalAgentConfig> ParseHalAgentConfig(const std::string& text) {
  if (text.size() > kMaxConfigBytes) {
    return Bad("larger than " + std::to_string(kMaxConfigBytes) + " bytes");
  }
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) {
    return Bad("not a JSON object");
  }
  if (!j.contains("version") || !j["version"].is_number_integer() || j["version"].get<int>() != 1) {
    return Bad("version must be 1");
  }
  HalAgentConfig c;
  CHRYS_ASSIGN_OR_RETURN(c.sandbox_id, StringField(j, "sandbox_id", ""));
  std::string hostname;
  CHRYS_ASSIGN_OR_RETURN(hostname, StringField(j, "hostname", ""));
  c.setup.set_hostname(hostname);
  if (j.contains("channel")) {
    const json& ch = j["channel"];
    if (!ch.is_object()) {
      return Bad("channel must be an object");
    }
    CHRYS_ASSIGN_OR_RETURN(c.channel_kind, StringField(ch, "kind", "channel."));
    if (c.channel_kind != "serial" && c.channel_kind != "vsock") {
      return Bad("channel.kind must be serial or vsock");
    }
    if (ch.contains("port")) {
      if (!ch["port"].is_number_unsigned() || ch["port"].get<uint64_t>() > 0xffffffffu) {
        return Bad("channel.port must be a 32-bit unsigned number");
      }
      c.vsock_port = ch["port"].get<uint32_t>();
    }
  }
  if (j.contains("dns")) {
    if (!j["dns"].is_object()) {
      return Bad("dns must be an object");
    }
    auto* dns = c.setup.mutable_dns();
    CHRYS_ASSIGN_OR_RETURN(auto servers, StringList(j["dns"], "servers", "dns."));
    CHRYS_ASSIGN_OR_RETURN(auto searches, StringList(j["dns"], "searches", "dns."));
    CHRYS_ASSIGN_OR_RETURN(auto options, StringList(j["dns"], "options", "dns."));
    for (auto& s : servers)
      dns->add_servers(s);
    for (auto& s : searches)
      dns->add_searches(s);
    for (auto& s : options)
      dns->add_options(s);
  }
  if (j.contains("interfaces")) {
    if (!j["interfaces"].is_array() || j["interfaces"].size() > 16) {
      return Bad("interfaces must be a list of at most 16 objects");
    }
    for (size_t i = 0; i < j["interfaces"].size(); ++i) {
      const json& in = j["interfaces"][i];
      std::string where = "interfaces[" + std::to_string(i) + "].";
      if (!in.is_object()) {
        return Bad(where + " must be an object");
      }
      auto* nic = c.setup.add_interfaces();
      CHRYS_ASSIGN_OR_RETURN(std::string mac, StringField(in, "mac", where));
      CHRYS_ASSIGN_OR_RETURN(std::string name, StringField(in, "name", where));
      nic->set_mac(mac);
      nic->set_name(name);
      if (in.contains("mtu")) {
        if (!in["mtu"].is_number_unsigned() || in["mtu"].get<uint64_t>() > 65535) {
          return Bad(where + "mtu must be 0..65535");
        }
        nic->set_mtu(in["mtu"].get<uint32_t>());
      }
      CHRYS_ASSIGN_OR_RETURN(auto addresses, StringList(in, "addresses", where));
      for (const auto& a : addresses) {
        CHRYS_ASSIGN_OR_RETURN(v1::IpAddress ip, ParseCidr(a, where + "addresses"));
        *nic->add_addresses() = ip;
      }
      if (in.contains("routes")) {
        if (!in["routes"].is_array() || in["routes"].size() > kMaxListItems) {
          return Bad(where + "routes must be a list");
        }
        for (const json& r : in["routes"]) {
          if (!r.is_object()) {
            return Bad(where + "routes must hold objects");
          }
          auto* route = c.setup.add_routes();
          CHRYS_ASSIGN_OR_RETURN(std::string dst, StringField(r, "dst", where + "routes[]."));
          CHRYS_ASSIGN_OR_RETURN(std::string gateway, StringField(r, "gateway", where + "routes[]."));
          route->set_destination(dst);
          route->set_gateway(gateway);
          route->set_device(name);
          if (r.contains("metric")) {
            if (!r["metric"].is_number_unsigned() || r["metric"].get<uint64_t>() > 0xffffffffu) {
              return Bad(where + "routes[].metric must be a 32-bit unsigned number");
            }
            route->set_metric(r["metric"].get<uint32_t>());
          }
        }
      }
    }
  }
  if (j.contains("sysctls")) {
    if (!j["sysctls"].is_object() || j["sysctls"].size() > kMaxListItems) {
      return Bad("sysctls must be an object of at most " + std::to_string(kMaxListItems) + " strings");
    }
    for (const auto& [key, value] : j["sysctls"].items()) {
      if (!value.is_string()) {
        return Bad("sysctls." + key + " must be a string");
      }
      (*c.setup.mutable_sysctls())[key] = value.get<std::string>();
    }
  }
  CHRYS_ASSIGN_OR_RETURN(std::string storage, StringField(j, "container_storage", ""));
  if (!storage.empty()) {
    c.container_storage = storage;
  }
  auto valid = ValidateSetupSandbox(c.setup);
  if (!valid.ok()) {
    return valid.error().Wrap("agent.json");
  }
  return c;
}

Result<HalAgentConfig> StartHalMode(const std::string& config_path) {
  CHRYS_ASSIGN_OR_RETURN(std::string text, base::ReadFile(config_path, kMaxConfigBytes + 1));
  CHRYS_ASSIGN_OR_RETURN(HalAgentConfig config, ParseHalAgentConfig(text));
  auto applied = ApplySandboxSetup(config.setup);
  if (!applied.ok()) {
    return applied.error().Wrap("applying the sandbox setup of " + config_path);
  }
  auto cgroups = EnableCgroupControllers();
  if (!cgroups.ok()) {
    LogWarn("%s", cgroups.error().message().c_str());
  }
  LogInfo("HAL mode: sandbox %s configured from %s", config.sandbox_id.c_str(), config_path.c_str());
  return config;
}

}  // namespace chrys::guest
