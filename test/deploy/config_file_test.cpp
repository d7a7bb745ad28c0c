// deploy/config.yaml and deploy/chrysd.service against chrysd's own parser and key list.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <regex>
#include <set>
#include <sstream>

#include "test/deploy/deploy_test_util.h"

namespace chrys::deploy_test {
namespace {

std::string ConfigPath() {
  return SourceDir() + "/deploy/config.yaml";
}

TEST(DeployConfig, ParsesWithChrysd) {
  auto result = PrintConfig(ConfigPath());
  EXPECT_TRUE(result.success()) << result.DescribeExit() << ": " << result.stderr_data;
}

// The shipped file keeps every default, so its effective config is exactly chrysd's defaults.
TEST(DeployConfig, EqualsTheDefaults) {
  auto result = PrintConfig(ConfigPath());
  ASSERT_TRUE(result.success()) << result.stderr_data;
  auto printed = FlattenYaml(YAML::Load(result.stdout_data));
  auto defaults = FlattenYaml(YAML::Load(DefaultConfigYaml()));
  ASSERT_FALSE(defaults.empty());
  for (const auto& [key, value] : defaults) {
    ASSERT_TRUE(printed.count(key)) << key;
    EXPECT_EQ(YAML::Dump(printed[key]), YAML::Dump(value)) << "deploy/config.yaml changes the default of " << key;
  }
}

// Fails when chrysd learns a key that deploy/config.yaml does not list yet.
TEST(DeployConfig, ListsEveryKeyChrysdPrints) {
  auto defaults = FlattenYaml(YAML::Load(DefaultConfigYaml()));
  auto file = FlattenYaml(YAML::LoadFile(ConfigPath()));
  std::string missing;
  for (const auto& [key, value] : defaults) {
    if (!file.count(key)) {
      missing += " " + key;
    }
  }
  EXPECT_EQ(missing, "") << "keys printed by chrysd --print-config but missing from deploy/config.yaml";
  std::string unknown;
  for (const auto& [key, value] : file) {
    if (!defaults.count(key)) {
      unknown += " " + key;
    }
  }
  EXPECT_EQ(unknown, "") << "keys in deploy/config.yaml that chrysd does not print";
}

// Every key line is preceded by a comment that explains it, and no key is written twice.
TEST(DeployConfig, EveryKeyHasItsComment) {
  std::istringstream in(ReadText(ConfigPath()));
  std::regex key_line(R"(^( *)([A-Za-z_]+):(.*)$)");
  std::vector<std::pair<size_t, std::string>> stack;  // indentation, key
  std::string previous;
  std::set<std::string> seen;
  std::string line;
  int commented_leaves = 0;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, key_line)) {
      size_t indent = m[1].length();
      while (!stack.empty() && stack.back().first >= indent) {
        stack.pop_back();
      }
      std::string path;
      for (const auto& [i, k] : stack) {
        path += k + ".";
      }
      path += m[2].str();
      EXPECT_TRUE(seen.insert(path).second) << path << " appears twice";
      bool leaf = !m[3].str().empty() && m[3].str() != " ";
      if (leaf) {
        size_t start = previous.find_first_not_of(' ');
        bool commented = start != std::string::npos && previous[start] == '#';
        EXPECT_TRUE(commented) << "key " << path << " has no comment line above it";
        ++commented_leaves;
      }
      stack.emplace_back(indent, m[2].str());
    }
    previous = line;
  }
  EXPECT_EQ(static_cast<size_t>(commented_leaves), FlattenYaml(YAML::LoadFile(ConfigPath())).size());
}

TEST(DeployConfig, BrokenCopyIsRejectedNamingTheKey) {
  char dir_template[] = "/tmp/chrys-deploy-config.XXXXXX";
  std::string dir = mkdtemp(dir_template);
  std::string broken = dir + "/config.yaml";
  std::string text = ReadText(ConfigPath());
  text.replace(text.find("max_files: 5"), 12, "max_files: many");
  WriteText(broken, text);
  auto result = PrintConfig(broken);
  EXPECT_FALSE(result.success());
  EXPECT_NE(result.stderr_data.find("log.max_files"), std::string::npos) << result.stderr_data;
  unlink(broken.c_str());
  rmdir(dir.c_str());
}

// The unit's directories, config path and restart policy match the config and the design.
TEST(DeployUnit, MatchesTheConfig) {
  std::string unit = ReadText(SourceDir() + "/deploy/chrysd.service");
  auto config = YAML::LoadFile(ConfigPath());
  auto has = [&](const std::string& line) { return unit.find("\n" + line + "\n") != std::string::npos; };
  EXPECT_TRUE(has("KillMode=process"));
  EXPECT_TRUE(has("Restart=on-failure"));
  EXPECT_TRUE(has("ExecStart=/usr/local/bin/chrysd --config /etc/chrysalis/config.yaml"));
  EXPECT_TRUE(has("RuntimeDirectoryPreserve=yes"));
  // systemd's RuntimeDirectory/StateDirectory are relative to /run and /var/lib.
  EXPECT_EQ(config["run_dir"].as<std::string>(), "/run/chrysalis");
  EXPECT_TRUE(has("RuntimeDirectory=chrysalis"));
  EXPECT_EQ(config["state_dir"].as<std::string>(), "/var/lib/chrysalis");
  EXPECT_TRUE(has("StateDirectory=chrysalis"));
  EXPECT_EQ(config["socket"].as<std::string>().rfind(config["run_dir"].as<std::string>() + "/", 0), 0u);
}

TEST(DeployCni, ExampleIsABridgeChainWithLoopback) {
  std::string text = ReadText(SourceDir() + "/deploy/cni/10-chrysalis.conflist");
  auto conflist = YAML::Load(text);  // JSON is YAML
  ASSERT_TRUE(conflist["plugins"].IsSequence());
  std::vector<std::string> types;
  for (const auto& plugin : conflist["plugins"]) {
    types.push_back(plugin["type"].as<std::string>());
  }
  EXPECT_EQ(types, (std::vector<std::string>{"bridge", "portmap", "loopback"}));
  EXPECT_EQ(conflist["plugins"][0]["ipam"]["type"].as<std::string>(), "host-local");
  EXPECT_FALSE(conflist["name"].as<std::string>().empty());
  EXPECT_FALSE(conflist["cniVersion"].as<std::string>().empty());
}

}  // namespace
}  // namespace chrys::deploy_test
