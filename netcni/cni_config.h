// Loading and validating CNI network configuration lists (.conflist, or single-plugin .conf/.json files).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/result.h"

namespace chrys::netcni {

// The CNI spec versions this runtime speaks, oldest first.
const std::vector<std::string>& SupportedCniVersions();
// -1, 0, 1 like strcmp for dotted versions ("0.4.0" < "1.0.0"); non-numeric parts compare as 0.
int CompareCniVersions(const std::string& a, const std::string& b);

struct NetworkConfigList {
  std::string name;
  // The version selected for execution: the highest of cniVersion/cniVersions that we support.
  std::string cni_version;
  bool disable_check = false;
  // Plugin configuration objects in execution order, passed through unchanged apart from the fields the
  // spec makes the runtime insert.
  std::vector<nlohmann::json> plugins;
  // Where it came from, and its exact text: the text is cached with each ADD so DEL can run without it.
  std::string source;
  std::string text;

  std::vector<std::string> PluginTypes() const;
};

// Parses one configuration; `source` names the file in error messages. A single plugin configuration (the
// old .conf form, with a top-level "type") becomes a list of one.
base::Result<NetworkConfigList> ParseNetworkConfigList(const std::string& text, const std::string& source);

// Reads `conf_dir` (files *.conflist, *.conf, *.json), and returns the network named `network_name`, or
// when that is empty the first file by name. Errors name the directory or file and what is wrong.
base::Result<NetworkConfigList> LoadNetworkConfigList(const std::string& conf_dir, const std::string& network_name);

}  // namespace chrys::netcni
