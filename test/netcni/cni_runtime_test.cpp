// CniRuntime against fake plugins: executables in a temp dir that print canned results and record their input.
#include "netcni/cni_runtime.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace chrys::netcni {
namespace {

using nlohmann::json;

constexpr const char* kResult110 = R"({"cniVersion": "1.1.0",
  "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "mtu": 1450, "sandbox": "/run/netns/fake"}],
  "ips": [{"address": "10.9.0.7/24", "gateway": "10.9.0.1", "interface": 0}],
  "routes": [{"dst": "0.0.0.0/0", "priority": 5}],
  "dns": {"nameservers": ["10.9.0.53"], "search": ["svc.local"]}})";

class CniRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/chrys-cnirt-XXXXXX";
    root_ = ::mkdtemp(tmpl);
    std::filesystem::create_directories(root_ + "/bin");
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  // Each fake plugin appends "<name> <command>" to calls.log and saves its env and stdin.
  void Plugin(const std::string& name, const std::string& body) {
    const std::string path = root_ + "/bin/" + name;
    std::ofstream(path) << "#!/bin/sh\n"
                        << "echo \"" << name << " $CNI_COMMAND\" >> " << root_ << "/calls.log\n"
                        << "env | grep '^CNI_' | sort > " << root_ << "/" << name << ".$CNI_COMMAND.env\n"
                        << "cat > " << root_ << "/" << name << ".$CNI_COMMAND.stdin\n"
                        << body << "\n";
    ::chmod(path.c_str(), 0755);
  }
  std::string Read(const std::string& name) {
    std::ifstream in(root_ + "/" + name);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  CniRuntime Runtime(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return CniRuntime(CniRuntimeConfig{{root_ + "/nothing-here", root_ + "/bin"}, root_ + "/cache", timeout});
  }
  NetworkConfigList List(const std::string& plugins, const std::string& version = "1.1.0") {
    auto list = ParseNetworkConfigList(
        R"({"cniVersion": ")" + version + R"(", "name": "fakenet", "plugins": [)" + plugins + "]}", "fake.conflist");
    EXPECT_TRUE(list.ok()) << list.error().message();
    return list.value();
  }
  CniAttachment Attachment() {
    CniAttachment a;
    a.container_id = "sandbox1";
    a.netns_path = "/run/netns/fake";
    a.ifname = "eth0";
    a.args = {{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "ns"}, {"K8S_POD_NAME", "pod"}};
    a.capability_args = {{"portMappings", json::array({{{"hostPort", 8080}, {"containerPort", 80}}})},
                         {"bandwidth", {{"ingressRate", 1000}}}};
    return a;
  }

  std::string root_;
};

TEST_F(CniRuntimeTest, RequestConfigFollowsTheSpec) {
  auto list = List(R"({"type": "a", "capabilities": {"portMappings": true, "dns": true, "bandwidth": false},
                       "keep": {"x": 1}, "prevResult": "stale"})");
  json prev = {{"cniVersion", "1.1.0"}};
  json request = CniRuntime::BuildRequestConfig(list, 0, Attachment(), prev);
  EXPECT_EQ(request["cniVersion"], "1.1.0");
  EXPECT_EQ(request["name"], "fakenet");
  EXPECT_EQ(request["type"], "a");
  EXPECT_EQ(request["keep"]["x"], 1);
  EXPECT_FALSE(request.contains("capabilities"));
  // Only declared and enabled capabilities that the runtime provides.
  EXPECT_EQ(request["runtimeConfig"],
            json({{"portMappings", json::array({{{"hostPort", 8080}, {"containerPort", 80}}})}}));
  EXPECT_EQ(request["prevResult"], prev);
  json first = CniRuntime::BuildRequestConfig(list, 0, Attachment(), std::nullopt);
  EXPECT_FALSE(first.contains("prevResult"));
  EXPECT_EQ(CniRuntime::FormatCniArgs(Attachment().args), "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod");
}

TEST_F(CniRuntimeTest, AddChainPassesEnvPrevResultAndCachesFor110) {
  Plugin("first", std::string("echo '") + kResult110 + "'");
  Plugin("second", std::string("echo '") + kResult110 + "'");
  auto list = List(R"({"type": "first"}, {"type": "second", "capabilities": {"portMappings": true}})");
  CniRuntime runtime = Runtime();
  auto result = runtime.Add(list, Attachment());
  ASSERT_TRUE(result.ok()) << result.error().message();
  EXPECT_EQ(result->cni_version, "1.1.0");
  EXPECT_EQ(result->interfaces.at(0).mtu, 1450u);
  EXPECT_EQ(result->routes.at(0).priority, 5u);
  EXPECT_EQ(result->dns.search, std::vector<std::string>{"svc.local"});

  const std::string env = Read("first.ADD.env");
  EXPECT_NE(env.find("CNI_COMMAND=ADD\n"), std::string::npos);
  EXPECT_NE(env.find("CNI_CONTAINERID=sandbox1\n"), std::string::npos);
  EXPECT_NE(env.find("CNI_NETNS=/run/netns/fake\n"), std::string::npos);
  EXPECT_NE(env.find("CNI_IFNAME=eth0\n"), std::string::npos);
  EXPECT_NE(env.find("CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod\n"), std::string::npos);
  EXPECT_NE(env.find("CNI_PATH=" + root_ + "/nothing-here:" + root_ + "/bin\n"), std::string::npos);
  json first_in = json::parse(Read("first.ADD.stdin"));
  EXPECT_FALSE(first_in.contains("prevResult"));
  EXPECT_FALSE(first_in.contains("runtimeConfig"));
  json second_in = json::parse(Read("second.ADD.stdin"));
  EXPECT_EQ(second_in["prevResult"], json::parse(kResult110));
  EXPECT_EQ(second_in["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);

  auto cached = runtime.ReadCache("fakenet", "sandbox1", "eth0");
  ASSERT_TRUE(cached.ok()) << cached.error().message();
  EXPECT_EQ(cached->config.name, "fakenet");
  EXPECT_EQ(cached->attachment.args, Attachment().args);
  EXPECT_EQ(cached->result, json::parse(kResult110));

  // DEL: reverse order, the ADD result as prevResult, cache removed.
  ASSERT_TRUE(runtime.Del(cached->config, cached->attachment, cached->result).ok());
  EXPECT_EQ(Read("calls.log"), "first ADD\nsecond ADD\nsecond DEL\nfirst DEL\n");
  EXPECT_EQ(json::parse(Read("first.DEL.stdin"))["prevResult"], json::parse(kResult110));
  EXPECT_FALSE(runtime.ReadCache("fakenet", "sandbox1", "eth0").ok());

  ASSERT_TRUE(runtime.Check(list, Attachment(), json::parse(kResult110)).ok());
  EXPECT_NE(Read("second.CHECK.env").find("CNI_COMMAND=CHECK"), std::string::npos);
}

TEST_F(CniRuntimeTest, FailingPluginErrorJsonAndStderrAreInTheError) {
  Plugin("bad",
         "echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"busy\",\"details\":\"try later\"}'\n"
         "echo 'trace line' >&2\nexit 3");
  CniRuntime runtime = Runtime();
  auto result = runtime.Add(List(R"({"type": "bad"})", "1.0.0"), Attachment());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code(), base::ErrorCode::kUnavailable);
  EXPECT_EQ(result.error().message(),
            "CNI plugin bad ADD (network fakenet, container sandbox1) failed (exited with status 3): code 11: busy "
            "(try later); stderr: trace line");
  EXPECT_FALSE(runtime.ReadCache("fakenet", "sandbox1", "eth0").ok());
}

TEST_F(CniRuntimeTest, MissingPluginTimeoutAndGarbage) {
  CniRuntime runtime = Runtime(std::chrono::milliseconds(300));
  auto missing = runtime.Add(List(R"({"type": "absent"})"), Attachment());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("CNI plugin \"absent\" not found in " + root_ + "/nothing-here, " + root_ +
                                           "/bin"),
            std::string::npos)
      << missing.error().message();

  Plugin("slow", "exec sleep 10");
  auto slow = runtime.Add(List(R"({"type": "slow"})"), Attachment());
  ASSERT_FALSE(slow.ok());
  EXPECT_EQ(slow.error().code(), base::ErrorCode::kDeadlineExceeded);

  Plugin("junk", "echo '{\"cniVersion\": \"1.1.0\", \"ips\": [{\"address\": \"1.2.3.4/99\"}]}'");
  // A generous timeout here: only the slow plugin above is meant to hit one, and a loaded machine can take
  // more than 300 ms to start a shell.
  CniRuntime patient = Runtime(std::chrono::seconds(20));
  auto junk = patient.Add(List(R"({"type": "junk"})"), Attachment());
  ASSERT_FALSE(junk.ok());
  EXPECT_NE(junk.error().message().find("CNI result from plugin junk (network fakenet): ips[0].address"),
            std::string::npos)
      << junk.error().message();
}

TEST_F(CniRuntimeTest, OldVersionsSkipCheckAndPrevResultOnDel) {
  Plugin("old", "echo '{\"cniVersion\": \"0.3.1\"}'");
  auto list = List(R"({"type": "old"})", "0.3.1");
  CniRuntime runtime = Runtime();
  ASSERT_TRUE(runtime.Check(list, Attachment(), json::object()).ok());
  EXPECT_TRUE(Read("calls.log").empty());
  ASSERT_TRUE(runtime.Del(list, Attachment(), json::parse(R"({"cniVersion": "0.3.1"})")).ok());
  EXPECT_FALSE(json::parse(Read("old.DEL.stdin")).contains("prevResult"));
}

}  // namespace
}  // namespace chrys::netcni
