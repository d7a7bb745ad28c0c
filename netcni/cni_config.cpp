#include "netcni/cni_config.h"

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "base/file_util.h"

namespace chrys::netcni {
namespace {

using base::InvalidArgument;
using nlohmann::json;

constexpr size_t kMaxConfigBytes = 1 << 20;

// "line L, column C" of a byte offset, for syntax errors a human can find.
std::string DescribePosition(const std::string& text, size_t byte) {
  size_t line = 1;
  size_t column = 1;
  for (size_t i = 0; i < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(column);
}

bool ValidNetworkName(const std::string& name) {
  if (name.empty()) {
    return false;
  }
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-'))) {
      return false;
    }
  }
  return true;
}

std::vector<int> VersionParts(const std::string& v) {
  std::vector<int> parts;
  std::stringstream in(v);
  std::string item;
  while (std::getline(in, item, '.')) {
    int n = 0;
    for (char c : item) {
      if (c < '0' || c > '9') {
        break;
      }
      n = n * 10 + (c - '0');
    }
    parts.push_back(n);
  }
  parts.resize(3, 0);
  return parts;
}

bool IsSupported(const std::string& version) {
  const auto& all = SupportedCniVersions();
  return std::find(all.begin(), all.end(), version) != all.end();
}

}  // namespace

const std::vector<std::string>& SupportedCniVersions() {
  static const std::vector<std::string> kVersions = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
  return kVersions;
}

int CompareCniVersions(const std::string& a, const std::string& b) {
  auto pa = VersionParts(a);
  auto pb = VersionParts(b);
  for (size_t i = 0; i < 3; ++i) {
    if (pa[i] != pb[i]) {
      return pa[i] < pb[i] ? -1 : 1;
    }
  }
  return 0;
}

std::vector<std::string> NetworkConfigList::PluginTypes() const {
  std::vector<std::string> types;
  for (const auto& p : plugins) {
    types.push_back(p.at("type").get<std::string>());
  }
  return types;
}

base::Result<NetworkConfigList> ParseNetworkConfigList(const std::string& text, const std::string& source) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::parse_error& e) {
    // e.byte counts the characters read, so the offending one is at e.byte - 1.
    std::string detail = e.what();
    if (auto colon = detail.find(": "); colon != std::string::npos) {
      detail = detail.substr(colon + 2);  // drop nlohmann's "[json.exception...] parse error at ...: " prefix
    }
    const size_t offset = e.byte > 0 ? e.byte - 1 : 0;
    return InvalidArgument("CNI config " + source + ": JSON syntax error at " + DescribePosition(text, offset) +
                           " (byte offset " + std::to_string(offset) + "): " + detail);
  }
  auto bad = [&source](const std::string& what) { return InvalidArgument("CNI config " + source + ": " + what); };
  if (!doc.is_object()) {
    return bad("top level must be a JSON object");
  }
  if (!doc.contains("plugins") && doc.contains("type")) {
    // A single plugin configuration: the network fields live beside the plugin's own.
    json list = {{"name", doc.value("name", json())}, {"plugins", json::array({doc})}};
    if (doc.contains("cniVersion")) {
      list["cniVersion"] = doc["cniVersion"];
    }
    doc = std::move(list);
  }

  NetworkConfigList out;
  out.source = source;
  out.text = text;
  if (!doc.contains("name") || !doc["name"].is_string() || !ValidNetworkName(doc["name"].get<std::string>())) {
    return bad("\"name\" must be a string starting with a letter or digit, then letters, digits, '_', '.', '-'");
  }
  out.name = doc["name"].get<std::string>();

  std::vector<std::string> offered;
  if (doc.contains("cniVersion")) {
    if (!doc["cniVersion"].is_string()) {
      return bad("\"cniVersion\" must be a string");
    }
    offered.push_back(doc["cniVersion"].get<std::string>());
  }
  if (doc.contains("cniVersions")) {
    if (!doc["cniVersions"].is_array()) {
      return bad("\"cniVersions\" must be a list of strings");
    }
    for (const auto& v : doc["cniVersions"]) {
      if (!v.is_string()) {
        return bad("\"cniVersions\" must be a list of strings");
      }
      offered.push_back(v.get<std::string>());
    }
  }
  if (offered.empty()) {
    return bad("\"cniVersion\" is missing");
  }
  for (const auto& v : offered) {
    if (IsSupported(v) && (out.cni_version.empty() || CompareCniVersions(v, out.cni_version) > 0)) {
      out.cni_version = v;
    }
  }
  if (out.cni_version.empty()) {
    std::string list;
    for (const auto& v : SupportedCniVersions()) {
      list += (list.empty() ? "" : ", ") + v;
    }
    return bad("none of the CNI versions it declares is supported (supported: " + list + ")");
  }

  if (doc.contains("disableCheck")) {
    if (!doc["disableCheck"].is_boolean()) {
      return bad("\"disableCheck\" must be true or false");
    }
    out.disable_check = doc["disableCheck"].get<bool>();
  }
  if (!doc.contains("plugins") || !doc["plugins"].is_array() || doc["plugins"].empty()) {
    return bad("\"plugins\" must be a non-empty list");
  }
  for (size_t i = 0; i < doc["plugins"].size(); ++i) {
    const json& plugin = doc["plugins"][i];
    std::string where = "plugins[" + std::to_string(i) + "]";
    if (!plugin.is_object()) {
      return bad(where + " must be an object");
    }
    if (!plugin.contains("type") || !plugin["type"].is_string()) {
      return bad(where + ".type must be a string");
    }
    const std::string type = plugin["type"].get<std::string>();
    if (type.empty() || type.find('/') != std::string::npos || type == "." || type == "..") {
      return bad(where + ".type \"" + type + "\" is not a plugin file name");
    }
    if (plugin.contains("capabilities") && !plugin["capabilities"].is_object()) {
      return bad(where + ".capabilities must be an object");
    }
    out.plugins.push_back(plugin);
  }
  return out;
}

base::Result<NetworkConfigList> LoadNetworkConfigList(const std::string& conf_dir, const std::string& network_name) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(conf_dir, ec)) {
    return base::FailedPrecondition("CNI config directory " + conf_dir +
                                    " does not exist or is not a directory; install a CNI network config there");
  }
  std::vector<std::string> files;
  for (fs::directory_iterator it(conf_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const auto ext = it->path().extension().string();
    if ((ext == ".conflist" || ext == ".conf" || ext == ".json") && it->is_regular_file(ec)) {
      files.push_back(it->path().string());
    }
  }
  if (ec) {
    return base::SystemError("list CNI config directory " + conf_dir, ec.value());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    return base::FailedPrecondition("no CNI network config (*.conflist, *.conf, *.json) in " + conf_dir);
  }
  std::vector<std::string> seen;
  std::vector<std::string> broken;
  for (const auto& file : files) {
    CHRYS_ASSIGN_OR_RETURN(std::string text, base::ReadFile(file, kMaxConfigBytes));
    // With a network name asked for, a broken unrelated file must not hide the right one.
    auto parsed = ParseNetworkConfigList(text, file);
    if (!network_name.empty()) {
      if (parsed.ok() && parsed->name == network_name) {
        return parsed;
      }
      if (parsed.ok()) {
        seen.push_back(parsed->name);
      } else {
        broken.push_back(parsed.error().message());
      }
      continue;
    }
    return parsed;
  }
  std::string names;
  for (const auto& n : seen) {
    names += (names.empty() ? "" : ", ") + n;
  }
  return base::FailedPrecondition("no valid CNI network config named \"" + network_name + "\" in " + conf_dir +
                                  (names.empty() ? "" : " (found: " + names + ")") +
                                  (broken.empty() ? "" : "; unreadable: " + broken.front()));
}

}  // namespace chrys::netcni
