// Helpers shared by the deploy/ and chart tests: run a tool, read files, flatten YAML into dotted key paths.
#pragma once

#include <yaml-cpp/yaml.h>

#include <map>
#include <string>
#include <vector>

#include "base/subprocess.h"

namespace chrys::deploy_test {

// Paths of the tools and sources under test, from the build (compile definitions).
std::string SourceDir();
std::string ChrysdBinary();
std::string ChrysctlBinary();

// Runs argv to completion (60 s limit); a command that cannot run at all fails the calling test.
base::CommandResult RunTool(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env = {});

std::string ReadText(const std::string& path);
void WriteText(const std::string& path, const std::string& text, int mode = 0644);

// Leaf key paths of a YAML mapping ("log.level"); an empty mapping counts as a leaf.
std::map<std::string, YAML::Node> FlattenYaml(const YAML::Node& node, const std::string& prefix = "");

// chrysd --print-config for the given config file (empty: a file with no keys, i.e. the defaults).
base::CommandResult PrintConfig(const std::string& config_path);
std::string DefaultConfigYaml();

}  // namespace chrys::deploy_test
