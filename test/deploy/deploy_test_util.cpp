#include "test/deploy/deploy_test_util.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

namespace chrys::deploy_test {

std::string SourceDir() {
  return CHRYS_SOURCE_DIR;
}
std::string ChrysdBinary() {
  return CHRYSD_BINARY;
}
std::string ChrysctlBinary() {
  return CHRYSCTL_BINARY;
}

base::CommandResult RunTool(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env) {
  base::CommandSpec spec;
  spec.argv = argv;
  spec.extra_env = extra_env;
  spec.timeout = std::chrono::seconds(60);
  auto result = base::RunCommand(spec);
  if (!result.ok()) {
    ADD_FAILURE() << "cannot run " << argv.front() << ": " << result.error().message();
    return {};
  }
  return *result;
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

void WriteText(const std::string& path, const std::string& text, int mode) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  chmod(path.c_str(), static_cast<mode_t>(mode));
}

std::map<std::string, YAML::Node> FlattenYaml(const YAML::Node& node, const std::string& prefix) {
  std::map<std::string, YAML::Node> out;
  if (!node.IsMap() || node.size() == 0) {
    out[prefix] = node;
    return out;
  }
  for (const auto& entry : node) {
    std::string key = entry.first.as<std::string>();
    auto child = FlattenYaml(entry.second, prefix.empty() ? key : prefix + "." + key);
    out.insert(child.begin(), child.end());
  }
  return out;
}

base::CommandResult PrintConfig(const std::string& config_path) {
  return RunTool({ChrysdBinary(), "--config", config_path, "--print-config"});
}

std::string DefaultConfigYaml() {
  char dir_template[] = "/tmp/chrys-deploy-defaults.XXXXXX";
  std::string dir = mkdtemp(dir_template);
  std::string empty = dir + "/empty.yaml";
  WriteText(empty, "");
  auto result = PrintConfig(empty);
  unlink(empty.c_str());
  rmdir(dir.c_str());
  EXPECT_TRUE(result.success()) << result.stderr_data;
  return result.stdout_data;
}

}  // namespace chrys::deploy_test
