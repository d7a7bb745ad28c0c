#include "netcni/cni_config.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

namespace chrys::netcni {
namespace {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/chrys-cniconf-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  void Write(const std::string& name, const std::string& text) const { std::ofstream(path_ + "/" + name) << text; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(CniConfigTest, SelectsHighestSupportedVersionAndKeepsPluginFields) {
  auto list = ParseNetworkConfigList(R"({"cniVersion": "0.4.0", "cniVersions": ["0.3.1", "1.0.0", "9.9.9"],
      "name": "net1", "disableCheck": true,
      "plugins": [{"type": "bridge", "bridge": "cni0", "custom": [1, 2]}, {"type": "portmap"}]})",
                                     "test.conflist");
  ASSERT_TRUE(list.ok()) << list.error().message();
  EXPECT_EQ(list->name, "net1");
  EXPECT_EQ(list->cni_version, "1.0.0");
  EXPECT_TRUE(list->disable_check);
  ASSERT_EQ(list->plugins.size(), 2u);
  EXPECT_EQ(list->plugins[0]["custom"], nlohmann::json::array({1, 2}));
  EXPECT_EQ(list->PluginTypes(), (std::vector<std::string>{"bridge", "portmap"}));
}

TEST(CniConfigTest, SinglePluginConfBecomesListOfOne) {
  auto list = ParseNetworkConfigList(R"({"cniVersion": "0.3.1", "name": "old", "type": "bridge", "bridge": "b"})",
                                     "10-old.conf");
  ASSERT_TRUE(list.ok()) << list.error().message();
  EXPECT_EQ(list->cni_version, "0.3.1");
  ASSERT_EQ(list->plugins.size(), 1u);
  EXPECT_EQ(list->plugins[0]["bridge"], "b");
}

TEST(CniConfigTest, RejectsInvalidConfigsWithTheField) {
  struct Case {
    std::string text;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {R"([1])", "top level must be a JSON object"},
      {R"({"cniVersion": "1.0.0", "plugins": [{"type": "x"}]})", "\"name\" must be a string"},
      {R"({"cniVersion": "1.0.0", "name": "-bad", "plugins": [{"type": "x"}]})", "\"name\" must be a string"},
      {R"({"name": "n", "plugins": [{"type": "x"}]})", "\"cniVersion\" is missing"},
      {R"({"cniVersion": "0.2.0", "name": "n", "plugins": [{"type": "x"}]})", "none of the CNI versions"},
      {R"({"cniVersion": "1.0.0", "name": "n", "plugins": []})", "\"plugins\" must be a non-empty list"},
      {R"({"cniVersion": "1.0.0", "name": "n", "plugins": [{"bridge": "x"}]})", "plugins[0].type must be a string"},
      {R"({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../sh"}]})", "is not a plugin file name"},
      {R"({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "a", "capabilities": 1}]})",
       "plugins[0].capabilities must be an object"},
  };
  for (const auto& c : cases) {
    auto list = ParseNetworkConfigList(c.text, "f.conflist");
    ASSERT_FALSE(list.ok()) << c.text;
    EXPECT_NE(list.error().message().find("CNI config f.conflist: "), std::string::npos);
    EXPECT_NE(list.error().message().find(c.expected), std::string::npos) << list.error().message();
  }
}

TEST(CniConfigTest, SyntaxErrorNamesLineAndColumn) {
  auto list = ParseNetworkConfigList("{\n  \"name\": \"n\",\n  \"plugins\": [,]\n}", "/etc/cni/net.d/x.conflist");
  ASSERT_FALSE(list.ok());
  EXPECT_NE(list.error().message().find("/etc/cni/net.d/x.conflist: JSON syntax error at line 3, column 15"),
            std::string::npos)
      << list.error().message();
}

TEST(CniConfigTest, LoadPicksFirstFileByNameOrTheNamedNetwork) {
  TempDir dir;
  dir.Write("20-b.conflist", R"({"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "x"}]})");
  dir.Write("10-a.conf", R"({"cniVersion": "1.0.0", "name": "a", "type": "y"})");
  dir.Write("00-ignored.txt", "not a config");
  auto first = LoadNetworkConfigList(dir.path(), "");
  ASSERT_TRUE(first.ok()) << first.error().message();
  EXPECT_EQ(first->name, "a");
  EXPECT_EQ(first->source, dir.path() + "/10-a.conf");
  auto named = LoadNetworkConfigList(dir.path(), "b");
  ASSERT_TRUE(named.ok()) << named.error().message();
  EXPECT_EQ(named->name, "b");
  auto missing = LoadNetworkConfigList(dir.path(), "c");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("no valid CNI network config named \"c\""), std::string::npos);
  EXPECT_NE(missing.error().message().find("found: a, b"), std::string::npos) << missing.error().message();
}

TEST(CniConfigTest, LoadReportsMissingOrEmptyDirectory) {
  TempDir dir;
  auto empty = LoadNetworkConfigList(dir.path(), "");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().code(), base::ErrorCode::kFailedPrecondition);
  EXPECT_NE(empty.error().message().find("no CNI network config"), std::string::npos);
  auto missing = LoadNetworkConfigList(dir.path() + "/nope", "");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("does not exist"), std::string::npos);
}

TEST(CniConfigTest, ComparesVersions) {
  EXPECT_LT(CompareCniVersions("0.4.0", "1.0.0"), 0);
  EXPECT_GT(CompareCniVersions("1.1.0", "1.0.0"), 0);
  EXPECT_EQ(CompareCniVersions("0.3.1", "0.3.1"), 0);
}

}  // namespace
}  // namespace chrys::netcni
