#include "cri/config.h"

#include <yaml-cpp/yaml.h>

#include <functional>
#include <map>
#include <set>
#include <sstream>

namespace chrys::cri {
namespace {

using base::InvalidArgument;
using base::Status;
using nlohmann::json;

// One configurable leaf: how to read it from YAML and how to print it.
struct Field {
  std::string path;
  std::string expected;
  std::function<Status(Config&, const YAML::Node&, const std::string&)> set;
  std::function<json(const Config&)> get;
};

std::string Describe(const YAML::Node& node) {
  if (node.IsScalar()) {
    return "'" + node.Scalar() + "'";
  }
  if (node.IsSequence()) {
    return "a list";
  }
  if (node.IsMap()) {
    return "a mapping";
  }
  return "null";
}

Status TypeError(const std::string& where, const std::string& path, const std::string& expected,
                 const YAML::Node& got) {
  return InvalidArgument(where + ": key '" + path + "': expected " + expected + ", got " + Describe(got));
}

Field StringField(std::string path, std::function<std::string&(Config&)> ref) {
  Field f;
  f.path = path;
  f.expected = "a string";
  f.set = [path, ref](Config& c, const YAML::Node& n, const std::string& where) -> Status {
    if (!n.IsScalar()) {
      return TypeError(where, path, "a string", n);
    }
    ref(c) = n.Scalar();
    return Status::Ok();
  };
  f.get = [ref](const Config& c) { return json(ref(const_cast<Config&>(c))); };  // read only
  return f;
}

Field EnumField(std::string path, std::vector<std::string> allowed, std::function<std::string&(Config&)> ref) {
  std::string expected = "one of";
  for (size_t i = 0; i < allowed.size(); ++i) {
    expected += (i == 0 ? " " : ", ") + allowed[i];
  }
  Field f;
  f.path = path;
  f.expected = expected;
  f.set = [path, allowed, expected, ref](Config& c, const YAML::Node& n, const std::string& where) -> Status {
    if (!n.IsScalar() || std::find(allowed.begin(), allowed.end(), n.Scalar()) == allowed.end()) {
      return TypeError(where, path, expected, n);
    }
    ref(c) = n.Scalar();
    return Status::Ok();
  };
  f.get = [ref](const Config& c) { return json(ref(const_cast<Config&>(c))); };  // read only
  return f;
}

Field IntField(std::string path, int min, int max, std::function<int&(Config&)> ref) {
  std::string expected = "an integer from " + std::to_string(min) + " to " + std::to_string(max);
  Field f;
  f.path = path;
  f.expected = expected;
  f.set = [path, min, max, expected, ref](Config& c, const YAML::Node& n, const std::string& where) -> Status {
    if (!n.IsScalar()) {
      return TypeError(where, path, expected, n);
    }
    const std::string& text = n.Scalar();
    size_t used = 0;
    long value = 0;
    try {
      value = std::stol(text, &used, 10);
    } catch (const std::exception&) {
      return TypeError(where, path, expected, n);
    }
    if (used != text.size() || value < min || value > max) {
      return TypeError(where, path, expected, n);
    }
    ref(c) = static_cast<int>(value);
    return Status::Ok();
  };
  f.get = [ref](const Config& c) { return json(ref(const_cast<Config&>(c))); };  // read only
  return f;
}

// An integer from min to max, or "auto" (stored as kWarmPoolAuto).
Field BoolField(std::string path, std::function<bool&(Config&)> ref) {
  Field f;
  f.path = path;
  f.expected = "true or false";
  f.set = [path, ref](Config& c, const YAML::Node& n, const std::string& where) -> Status {
    if (!n.IsScalar() || (n.Scalar() != "true" && n.Scalar() != "false")) {
      return TypeError(where, path, "true or false", n);
    }
    ref(c) = n.Scalar() == "true";
    return Status::Ok();
  };
  f.get = [ref](const Config& c) { return json(ref(const_cast<Config&>(c))); };  // read only
  return f;
}

Field IntOrAutoField(std::string path, int min, int max, std::function<int&(Config&)> ref) {
  Field f = IntField(path, min, max, ref);
  f.expected = "auto or " + f.expected;
  auto set_int = f.set;
  f.set = [path, set_int, expected = f.expected, ref](Config& c, const YAML::Node& n,
                                                      const std::string& where) -> Status {
    if (n.IsScalar() && n.Scalar() == "auto") {
      ref(c) = kWarmPoolAuto;
      return Status::Ok();
    }
    if (Status s = set_int(c, n, where); !s.ok()) {
      return TypeError(where, path, expected, n);
    }
    return Status::Ok();
  };
  f.get = [ref](const Config& c) {
    int value = ref(const_cast<Config&>(c));  // read only
    return value == kWarmPoolAuto ? json("auto") : json(value);
  };
  return f;
}

Field StringListField(std::string path, std::function<std::vector<std::string>&(Config&)> ref) {
  Field f;
  f.path = path;
  f.expected = "a list of strings";
  f.set = [path, ref](Config& c, const YAML::Node& n, const std::string& where) -> Status {
    if (!n.IsSequence()) {
      return TypeError(where, path, "a list of strings", n);
    }
    std::vector<std::string> values;
    for (const auto& item : n) {
      if (!item.IsScalar()) {
        return TypeError(where, path, "a list of strings", n);
      }
      values.push_back(item.Scalar());
    }
    ref(c) = std::move(values);
    return Status::Ok();
  };
  f.get = [ref](const Config& c) { return json(ref(const_cast<Config&>(c))); };  // read only
  return f;
}

// images.registries: a mapping of registry host to {mirrors, insecure, ca_file}.
Field RegistriesField() {
  const std::string path = "images.registries";
  const std::string expected = "a mapping of registry host to {mirrors: [urls], insecure: bool, ca_file: path}";
  Field f;
  f.path = path;
  f.expected = expected;
  f.set = [path, expected](Config& c, const YAML::Node& n, const std::string& where) -> Status {
    if (n.IsNull()) {
      c.images.registries.clear();
      return Status::Ok();
    }
    if (!n.IsMap()) {
      return TypeError(where, path, expected, n);
    }
    std::map<std::string, RegistryHostConfig> hosts;
    for (const auto& entry : n) {
      std::string host = entry.first.Scalar();
      std::string host_path = path + "." + host;
      if (!entry.second.IsMap()) {
        return TypeError(where, host_path, "a mapping with keys mirrors, insecure, ca_file", entry.second);
      }
      RegistryHostConfig config;
      for (const auto& item : entry.second) {
        std::string key = item.first.Scalar();
        const YAML::Node& value = item.second;
        if (key == "mirrors") {
          if (!value.IsSequence()) {
            return TypeError(where, host_path + ".mirrors", "a list of URLs", value);
          }
          for (const auto& url : value) {
            if (!url.IsScalar() || (url.Scalar().rfind("http://", 0) != 0 && url.Scalar().rfind("https://", 0) != 0)) {
              return TypeError(where, host_path + ".mirrors", "a list of http:// or https:// URLs", url);
            }
            config.mirrors.push_back(url.Scalar());
          }
        } else if (key == "insecure") {
          if (!value.IsScalar() || (value.Scalar() != "true" && value.Scalar() != "false")) {
            return TypeError(where, host_path + ".insecure", "true or false", value);
          }
          config.insecure = value.Scalar() == "true";
        } else if (key == "ca_file") {
          if (!value.IsScalar()) {
            return TypeError(where, host_path + ".ca_file", "a path", value);
          }
          config.ca_file = value.Scalar();
        } else {
          return InvalidArgument(where + ": unknown key '" + host_path + "." + key + "' (known keys under '" +
                                 host_path + "': ca_file, insecure, mirrors)");
        }
      }
      hosts[host] = std::move(config);
    }
    c.images.registries = std::move(hosts);
    return Status::Ok();
  };
  f.get = [](const Config& c) {
    json out = json::object();
    for (const auto& [host, config] : c.images.registries) {
      out[host] = {{"mirrors", config.mirrors}, {"insecure", config.insecure}, {"ca_file", config.ca_file}};
    }
    return out;
  };
  return f;
}

const std::vector<Field>& Schema() {
  static const std::vector<Field> fields = [] {
    std::vector<Field> f;
    f.push_back(StringField("socket", [](Config& c) -> std::string& { return c.socket; }));
    f.push_back(StringField("state_dir", [](Config& c) -> std::string& { return c.state_dir; }));
    f.push_back(StringField("run_dir", [](Config& c) -> std::string& { return c.run_dir; }));
    Field cgroup;
    cgroup.path = "cgroup_driver";
    cgroup.expected = "one of cgroupfs, systemd";
    cgroup.set = [](Config& c, const YAML::Node& n, const std::string& where) -> Status {
      if (n.IsScalar() && n.Scalar() == "cgroupfs") {
        c.cgroup_driver = CgroupDriver::kCgroupfs;
      } else if (n.IsScalar() && n.Scalar() == "systemd") {
        c.cgroup_driver = CgroupDriver::kSystemd;
      } else {
        return TypeError(where, "cgroup_driver", "one of cgroupfs, systemd", n);
      }
      return Status::Ok();
    };
    cgroup.get = [](const Config& c) { return json(CgroupDriverName(c.cgroup_driver)); };
    f.push_back(cgroup);
    f.push_back(
        IntField("shutdown_grace_seconds", 0, 3600, [](Config& c) -> int& { return c.shutdown_grace_seconds; }));
    f.push_back(EnumField("log.level", {"trace", "debug", "info", "warn", "error", "critical", "off"},
                          [](Config& c) -> std::string& { return c.log.level; }));
    f.push_back(StringField("log.file", [](Config& c) -> std::string& { return c.log.file; }));
    f.push_back(IntField("log.max_size_mib", 1, 10240, [](Config& c) -> int& { return c.log.max_size_mib; }));
    f.push_back(IntField("log.max_files", 1, 100, [](Config& c) -> int& { return c.log.max_files; }));
    f.push_back(StringField("cni.conf_dir", [](Config& c) -> std::string& { return c.cni.conf_dir; }));
    f.push_back(StringListField("cni.bin_dirs", [](Config& c) -> std::vector<std::string>& { return c.cni.bin_dirs; }));
    f.push_back(StringField("cni.network_name", [](Config& c) -> std::string& { return c.cni.network_name; }));
    f.push_back(IntField("cni.plugin_timeout_seconds", 1, 3600,
                         [](Config& c) -> int& { return c.cni.plugin_timeout_seconds; }));
    f.push_back(StringField("vmm.qemu_binary", [](Config& c) -> std::string& { return c.vmm.qemu_binary; }));
    f.push_back(StringField("vmm.cloud_hypervisor_binary",
                            [](Config& c) -> std::string& { return c.vmm.cloud_hypervisor_binary; }));
    f.push_back(EnumField("vmm.accel", {"auto", "kvm", "tcg"}, [](Config& c) -> std::string& { return c.vmm.accel; }));
    f.push_back(StringField("vmm.guest_dir", [](Config& c) -> std::string& { return c.vmm.guest_dir; }));
    f.push_back(StringField("vmm.microvm_firmware", [](Config& c) -> std::string& { return c.vmm.microvm_firmware; }));
    f.push_back(
        IntField("vmm.boot_timeout_seconds", 1, 3600, [](Config& c) -> int& { return c.vmm.boot_timeout_seconds; }));
    f.push_back(IntOrAutoField("vmm.warm_pool_size", 0, 64, [](Config& c) -> int& { return c.vmm.warm_pool_size; }));
    f.push_back(BoolField("vmm.vm_template", [](Config& c) -> bool& { return c.vmm.vm_template; }));
    f.push_back(IntField("images.max_concurrent_downloads", 1, 64,
                         [](Config& c) -> int& { return c.images.max_concurrent_downloads; }));
    f.push_back(IntField("images.pull_timeout_seconds", 1, 86400,
                         [](Config& c) -> int& { return c.images.pull_timeout_seconds; }));
    f.push_back(RegistriesField());
    f.push_back(StringField("streaming.address", [](Config& c) -> std::string& { return c.streaming.address; }));
    f.push_back(IntField("streaming.port", 0, 65535, [](Config& c) -> int& { return c.streaming.port; }));
    f.push_back(
        StringField("streaming.tls_cert_file", [](Config& c) -> std::string& { return c.streaming.tls_cert_file; }));
    f.push_back(
        StringField("streaming.tls_key_file", [](Config& c) -> std::string& { return c.streaming.tls_key_file; }));
    f.push_back(IntField("streaming.idle_timeout_seconds", 1, 7 * 86400,
                         [](Config& c) -> int& { return c.streaming.idle_timeout_seconds; }));
    f.push_back(IntField("streaming.stream_creation_timeout_seconds", 1, 3600,
                         [](Config& c) -> int& { return c.streaming.stream_creation_timeout_seconds; }));
    f.push_back(StringField("confidential.hal_dir", [](Config& c) -> std::string& { return c.confidential.hal_dir; }));
    f.push_back(
        StringField("confidential.ovmf_code", [](Config& c) -> std::string& { return c.confidential.ovmf_code; }));
    f.push_back(
        StringField("confidential.ovmf_vars", [](Config& c) -> std::string& { return c.confidential.ovmf_vars; }));
    f.push_back(StringField("confidential.snp_firmware",
                            [](Config& c) -> std::string& { return c.confidential.snp_firmware; }));
    f.push_back(StringField("confidential.tdx_firmware",
                            [](Config& c) -> std::string& { return c.confidential.tdx_firmware; }));
    f.push_back(
        StringField("confidential.igvm_file", [](Config& c) -> std::string& { return c.confidential.igvm_file; }));
    f.push_back(IntField("confidential.min_memory_mib", 256, 1 << 20,
                         [](Config& c) -> int& { return c.confidential.min_memory_mib; }));
    f.push_back(IntField("confidential.boot_timeout_seconds", 10, 3600,
                         [](Config& c) -> int& { return c.confidential.boot_timeout_seconds; }));
    return f;
  }();
  return fields;
}

const Field* FindField(const std::string& path) {
  for (const auto& field : Schema()) {
    if (field.path == path) {
      return &field;
    }
  }
  return nullptr;
}

// Keys directly under `prefix` ("" for the top level), for "known keys" hints.
std::string KnownKeysUnder(const std::string& prefix) {
  std::set<std::string> keys;
  for (const auto& field : Schema()) {
    if (!prefix.empty() && field.path.rfind(prefix + ".", 0) != 0) {
      continue;
    }
    std::string rest = prefix.empty() ? field.path : field.path.substr(prefix.size() + 1);
    keys.insert(rest.substr(0, rest.find('.')));
  }
  std::string out;
  for (const auto& k : keys) {
    out += (out.empty() ? "" : ", ") + k;
  }
  return out;
}

bool IsSection(const std::string& path) {
  for (const auto& field : Schema()) {
    if (field.path.rfind(path + ".", 0) == 0) {
      return true;
    }
  }
  return false;
}

Status ApplyNode(Config& config, const YAML::Node& node, const std::string& prefix, const std::string& where) {
  for (const auto& entry : node) {
    if (!entry.first.IsScalar()) {
      return InvalidArgument(where + ": keys must be strings" + (prefix.empty() ? "" : " (under '" + prefix + "')"));
    }
    std::string path = prefix.empty() ? entry.first.Scalar() : prefix + "." + entry.first.Scalar();
    if (const Field* field = FindField(path)) {
      CHRYS_RETURN_IF_ERROR(field->set(config, entry.second, where));
      continue;
    }
    if (IsSection(path)) {
      if (entry.second.IsNull()) {
        continue;
      }
      if (!entry.second.IsMap()) {
        return TypeError(where, path, "a mapping with keys " + KnownKeysUnder(path), entry.second);
      }
      CHRYS_RETURN_IF_ERROR(ApplyNode(config, entry.second, path, where));
      continue;
    }
    return InvalidArgument(where + ": unknown key '" + path + "' (known keys" +
                           (prefix.empty() ? "" : " under '" + prefix + "'") + ": " + KnownKeysUnder(prefix) + ")");
  }
  return Status::Ok();
}

void EmitYaml(YAML::Emitter& out, const json& value) {
  if (value.is_object()) {
    out << YAML::BeginMap;
    for (const auto& [key, item] : value.items()) {
      out << YAML::Key << key << YAML::Value;
      EmitYaml(out, item);
    }
    out << YAML::EndMap;
  } else if (value.is_array()) {
    out << YAML::Flow << YAML::BeginSeq;
    for (const auto& item : value) {
      EmitYaml(out, item);
    }
    out << YAML::EndSeq;
  } else if (value.is_string()) {
    out << YAML::DoubleQuoted << value.get<std::string>();
  } else {
    out << value.dump();
  }
}

}  // namespace

const char* CgroupDriverName(CgroupDriver driver) {
  return driver == CgroupDriver::kSystemd ? "systemd" : "cgroupfs";
}

json Config::ToJson() const {
  json out = json::object();
  for (const auto& field : Schema()) {
    std::string pointer = "/" + field.path;
    std::replace(pointer.begin(), pointer.end(), '.', '/');
    out[json::json_pointer(pointer)] = field.get(*this);
  }
  return out;
}

std::string Config::ToYaml() const {
  YAML::Emitter out;
  EmitYaml(out, ToJson());
  return std::string(out.c_str()) + "\n";
}

Status ApplyYaml(Config& config, const std::string& yaml_text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    return InvalidArgument(source + ": not valid YAML at line " + std::to_string(e.mark.line + 1) + ", column " +
                           std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  if (root.IsNull()) {
    return Status::Ok();  // an empty file keeps the defaults
  }
  if (!root.IsMap()) {
    return InvalidArgument(source + ": the top level must be a mapping of keys (" + KnownKeysUnder("") + ")");
  }
  return ApplyNode(config, root, "", source);
}

Status ApplyOverride(Config& config, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    return InvalidArgument("--set " + assignment + ": expected key=value, e.g. --set log.level=debug");
  }
  std::string path = assignment.substr(0, eq);
  const Field* field = FindField(path);
  if (field == nullptr) {
    return InvalidArgument("--set: unknown key '" + path + "'");
  }
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(eq + 1));
  } catch (const YAML::ParserException& e) {
    return InvalidArgument("--set " + path + ": value is not valid YAML: " + e.msg);
  }
  if (value.IsNull()) {
    value = YAML::Node(std::string());
  }
  return field->set(config, value, "--set");
}

Status Validate(const Config& config) {
  auto absolute = [](const std::string& key, const std::string& value) -> Status {
    if (value.empty() || value[0] != '/') {
      return InvalidArgument("config: key '" + key + "': expected an absolute path, got '" + value + "'");
    }
    return Status::Ok();
  };
  CHRYS_RETURN_IF_ERROR(absolute("socket", config.socket));
  CHRYS_RETURN_IF_ERROR(absolute("state_dir", config.state_dir));
  CHRYS_RETURN_IF_ERROR(absolute("run_dir", config.run_dir));
  CHRYS_RETURN_IF_ERROR(absolute("cni.conf_dir", config.cni.conf_dir));
  CHRYS_RETURN_IF_ERROR(absolute("vmm.guest_dir", config.vmm.guest_dir));
  CHRYS_RETURN_IF_ERROR(absolute("confidential.hal_dir", config.confidential.hal_dir));
  if (!config.log.file.empty()) {
    CHRYS_RETURN_IF_ERROR(absolute("log.file", config.log.file));
  }
  for (const auto& dir : config.cni.bin_dirs) {
    CHRYS_RETURN_IF_ERROR(absolute("cni.bin_dirs", dir));
  }
  if (config.socket.size() >= 108) {
    return InvalidArgument("config: key 'socket': a unix socket path must be shorter than 108 bytes");
  }
  return Status::Ok();
}

int WarmPoolSizeFor(const VmmConfig& vmm, bool cloud_hypervisor_runs_default_handler) {
  if (vmm.warm_pool_size != kWarmPoolAuto) {
    return vmm.warm_pool_size;
  }
  return cloud_hypervisor_runs_default_handler ? 0 : 1;
}

}  // namespace chrys::cri
