// Bad input against real CNI plugins (root): each case gives a clear error and leaves nothing behind.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "e2e/netcni/net_test_env.h"
#include "netcni/netns.h"
#include "netcni/pod_network.h"

namespace chrys::netcni {
namespace {

using testing::TestNetworkEnv;

class BadInputE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) {
      GTEST_SKIP() << "needs root";
    }
    env_ = std::make_unique<TestNetworkEnv>("b" + std::to_string(::getpid() % 100000), "10.198.0");
    prefix_ = "chrys-bad-" + std::to_string(::getpid()) + "-";
  }
  void TearDown() override {
    if (!env_) {
      return;
    }
    PodNetworkManager manager(env_->ManagerConfig());
    for (const auto& id : manager.ListSandboxes()) {
      (void)manager.Teardown(id);
    }
    std::error_code ec;
    for (std::filesystem::directory_iterator it(kDefaultNetnsDir, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->path().filename().string().rfind(prefix_, 0) == 0) {
        (void)NetnsHandle::RemoveByName(it->path().filename().string());
      }
    }
    env_.reset();
  }

  PodNetworkRequest Request(const std::string& suffix) {
    PodNetworkRequest r;
    r.sandbox_id = prefix_ + suffix;
    r.pod_name = suffix;
    r.pod_namespace = "default";
    r.pod_uid = "uid-" + suffix;
    return r;
  }

  // Runs Setup expecting failure; returns the error text.
  std::string SetupError(const std::string& suffix, PodNetworkConfig config) {
    PodNetworkManager manager(std::move(config));
    auto net = manager.Setup(Request(suffix));
    EXPECT_FALSE(net.ok());
    return net.ok() ? std::string() : net.error().message();
  }

  void ExpectNothingLeft() {
    EXPECT_EQ(TestNetworkEnv::CountNetns(prefix_), 0) << "netns left behind";
    EXPECT_EQ(env_->CountBridgePorts(), 0) << "host veths left on the bridge";
    EXPECT_EQ(env_->CountIpReservations(), 0) << "host-local reservations left";
    EXPECT_EQ(env_->CountStateFiles(), 0) << "records or cached results left";
  }

  std::string ReadLog(const std::string& name) {
    std::ifstream in(env_->root() + "/" + name);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // A fake chained plugin: on ADD runs `add_script`, on DEL/CHECK records the call and passes.
  void FakeChained(const std::string& name, const std::string& add_script) {
    env_->WriteFakePlugin(name, "echo \"$CNI_COMMAND\" >> " + env_->root() + "/" + name + ".log\n" +
                                    "if [ \"$CNI_COMMAND\" = ADD ]; then\n" + add_script + "\nfi\nexit 0\n");
  }

  std::unique_ptr<TestNetworkEnv> env_;
  std::string prefix_;
};

TEST_F(BadInputE2E, MissingConfDir) {
  auto config = env_->ManagerConfig();
  config.conf_dir = env_->root() + "/no-such-dir";
  std::string error = SetupError("noconf", config);
  EXPECT_NE(error.find("CNI config directory " + config.conf_dir + " does not exist"), std::string::npos) << error;
  NetworkReadiness readiness = PodNetworkManager(config).Readiness();
  EXPECT_FALSE(readiness.ready);
  EXPECT_EQ(readiness.reason, "NetworkPluginNotReady");
  EXPECT_NE(readiness.message.find("does not exist"), std::string::npos) << readiness.message;
  ExpectNothingLeft();
}

TEST_F(BadInputE2E, MissingPluginBinary) {
  env_->WriteConflist("10-chrystest.conflist", {R"({"type": "no-such-plugin"})"});
  std::string error = SetupError("noplugin", env_->ManagerConfig());
  EXPECT_NE(error.find("CNI plugin \"no-such-plugin\" not found in " + env_->bin_dir() + ", /usr/lib/cni"),
            std::string::npos)
      << error;
  NetworkReadiness readiness = PodNetworkManager(env_->ManagerConfig()).Readiness();
  EXPECT_FALSE(readiness.ready);
  EXPECT_NE(readiness.message.find("no-such-plugin"), std::string::npos) << readiness.message;
  ExpectNothingLeft();
}

TEST_F(BadInputE2E, ConflistSyntaxErrorNamesFileAndPosition) {
  const std::string file = env_->conf_dir() + "/05-broken.conflist";
  std::ofstream(file) << "{\n  \"cniVersion\": \"1.0.0\",\n  \"name\": \"broken\"\n  \"plugins\": []\n}\n";
  env_->WriteConflist();  // a good one after it by name: the first file is the broken one
  std::string error = SetupError("syntax", env_->ManagerConfig());
  EXPECT_NE(error.find(file), std::string::npos) << error;
  EXPECT_NE(error.find("line 4, column 11"), std::string::npos) << error;
  ExpectNothingLeft();
}

TEST_F(BadInputE2E, PluginFailingHalfwayThroughAddIsUndone) {
  FakeChained("halfway",
              "echo '{\"cniVersion\": \"1.0.0\", \"code\": 7, \"msg\": \"halfway failure\", \"details\": \"injected by "
              "test\"}'\necho 'stderr-marker from plugin' >&2\nexit 1");
  env_->WriteConflist("10-chrystest.conflist", {R"({"type": "halfway"})"});
  std::string error = SetupError("halfway", env_->ManagerConfig());
  EXPECT_NE(error.find("CNI plugin halfway ADD"), std::string::npos) << error;
  EXPECT_NE(error.find("exited with status 1"), std::string::npos) << error;
  EXPECT_NE(error.find("code 7: halfway failure (injected by test)"), std::string::npos) << error;
  EXPECT_NE(error.find("stderr: stderr-marker from plugin"), std::string::npos) << error;
  // DEL ran for the whole chain (our plugin saw it; bridge released the veth and the IP).
  EXPECT_EQ(ReadLog("halfway.log"), "ADD\nDEL\n");
  ExpectNothingLeft();
}

TEST_F(BadInputE2E, GarbageResultIsRejectedAndUndone) {
  FakeChained("garbage", "cat > /dev/null\necho 'this is {not json'");
  env_->WriteConflist("10-chrystest.conflist", {R"({"type": "garbage"})"});
  std::string error = SetupError("garbage", env_->ManagerConfig());
  EXPECT_NE(error.find("CNI result from plugin garbage"), std::string::npos) << error;
  EXPECT_NE(error.find("is not valid JSON"), std::string::npos) << error;
  EXPECT_EQ(ReadLog("garbage.log"), "ADD\nDEL\n");
  ExpectNothingLeft();
}

TEST_F(BadInputE2E, OutOfRangeResultFieldsAreRejectedAndUndone) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.198.0.9/24","interface":7}]})",
       "ips[0].interface = 7 is out of range (1 interfaces)"},
      {R"({"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mtu":70000}]})",
       "interfaces[0].mtu = 70000 is out of range (max 65535)"},
      {R"({"cniVersion":"1.0.0","ips":[{"address":"10.198.0.9/33"}]})", "prefix length 33, more than 32"},
      {R"({"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"zz:11:22:33:44:55"}]})",
       "interfaces[0].mac \"zz:11:22:33:44:55\" is not a hardware address"},
      {R"({"cniVersion":"1.0.0","routes":[{"dst":"0.0.0.0/0","scope":300}]})",
       "routes[0].scope = 300 is out of range (max 255)"},
  };
  int n = 0;
  for (const auto& [result, expected] : cases) {
    const std::string name = "range" + std::to_string(n);
    FakeChained(name, "cat > /dev/null\necho '" + result + "'");
    env_->WriteConflist("10-chrystest.conflist", {R"({"type": ")" + name + R"("})"});
    std::string error = SetupError("range" + std::to_string(n), env_->ManagerConfig());
    EXPECT_NE(error.find(expected), std::string::npos) << error;
    EXPECT_EQ(ReadLog(name + ".log"), "ADD\nDEL\n");
    ExpectNothingLeft();
    ++n;
  }
}

TEST_F(BadInputE2E, PluginTimeoutIsReportedAndUndone) {
  FakeChained("slow", "exec sleep 30");
  env_->WriteConflist("10-chrystest.conflist", {R"({"type": "slow"})"});
  auto config = env_->ManagerConfig();
  config.plugin_timeout = std::chrono::milliseconds(1500);
  PodNetworkManager manager(config);
  auto net = manager.Setup(Request("slow"));
  ASSERT_FALSE(net.ok());
  EXPECT_EQ(net.error().code(), base::ErrorCode::kDeadlineExceeded);
  EXPECT_NE(net.error().message().find("did not finish within 1500 ms"), std::string::npos) << net.error().message();
  ExpectNothingLeft();
}

TEST_F(BadInputE2E, InvalidRequestsCreateNothing) {
  env_->WriteConflist();
  PodNetworkManager manager(env_->ManagerConfig());
  auto request = Request("bad");
  request.sandbox_id = "../etc";
  auto net = manager.Setup(request);
  ASSERT_FALSE(net.ok());
  EXPECT_EQ(net.error().code(), base::ErrorCode::kInvalidArgument);
  EXPECT_NE(net.error().message().find("sandbox id"), std::string::npos);

  request = Request("badq");
  request.queues = 0;
  net = manager.Setup(request);
  ASSERT_FALSE(net.ok());
  EXPECT_NE(net.error().message().find("queues (vCPUs) must be 1..256, got 0"), std::string::npos);

  request = Request("badport");
  request.port_mappings = {{"icmp", 80, 8080, ""}};
  net = manager.Setup(request);
  ASSERT_FALSE(net.ok());
  EXPECT_NE(net.error().message().find("protocol \"icmp\""), std::string::npos);

  request = Request("dup");
  auto first = manager.Setup(request);
  ASSERT_TRUE(first.ok()) << first.error().message();
  auto second = manager.Setup(request);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code(), base::ErrorCode::kAlreadyExists);
  ASSERT_TRUE(manager.Teardown(request.sandbox_id).ok());
  ExpectNothingLeft();
}

}  // namespace
}  // namespace chrys::netcni
