// chrys-agent's HAL mode: agent.json from the env 9P share, parsed as untrusted input.
#include <gtest/gtest.h>

#include "guest/agent/hal_mode.h"
#include "test/hal/agent_json_golden.h"

namespace chrys::guest {
namespace {

TEST(HalAgentConfigTest, ParsesWhatChrysdRenders) {
  auto c = ParseHalAgentConfig(test::kGoldenAgentJson);
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->sandbox_id, "pod1");
  EXPECT_EQ(c->channel_kind, "serial");
  EXPECT_EQ(c->container_storage, "/var/lib/chrys");
  const v1::SetupSandboxRequest& s = c->setup;
  EXPECT_EQ(s.hostname(), "web-0");
  ASSERT_EQ(s.dns().servers_size(), 1);
  EXPECT_EQ(s.dns().servers(0), "10.96.0.10");
  EXPECT_EQ(s.dns().searches(0), "default.svc.cluster.local");
  EXPECT_EQ(s.dns().options(0), "ndots:5");
  ASSERT_EQ(s.interfaces_size(), 1);
  EXPECT_EQ(s.interfaces(0).mac(), "02:42:0a:58:00:07");
  EXPECT_EQ(s.interfaces(0).name(), "eth0");
  EXPECT_EQ(s.interfaces(0).mtu(), 1500u);
  ASSERT_EQ(s.interfaces(0).addresses_size(), 1);
  EXPECT_EQ(s.interfaces(0).addresses(0).address(), "10.88.0.7");
  EXPECT_EQ(s.interfaces(0).addresses(0).prefix_length(), 16u);
  ASSERT_EQ(s.routes_size(), 1);
  EXPECT_EQ(s.routes(0).destination(), "0.0.0.0/0");
  EXPECT_EQ(s.routes(0).gateway(), "10.88.0.1");
  EXPECT_EQ(s.routes(0).device(), "eth0");
  EXPECT_EQ(s.sysctls().at("net.ipv4.ip_unprivileged_port_start"), "0");
}

TEST(HalAgentConfigTest, RefusesMalformedOrHostileConfigs) {
  const char* bad[] = {
      "",
      "[]",
      R"({"version": 2})",
      R"({"version": 1, "channel": {"kind": "tcp"}})",
      R"({"version": 1, "hostname": 7})",
      R"({"version": 1, "interfaces": [{"mac": "02:00:00:00:00:01", "addresses": ["10.0.0.1"]}]})",
      R"({"version": 1, "interfaces": [{"mac": "02:00:00:00:00:01", "addresses": ["10.0.0.1/x"]}]})",
      R"({"version": 1, "interfaces": [{"mac": "02:00:00:00:00:01", "mtu": -1}]})",
      R"({"version": 1, "sysctls": {"kernel.x": 1}})",
      // The shared validation refuses what SetupSandbox refuses: a hostname with a slash, a bad MAC.
      R"({"version": 1, "hostname": "../etc"})",
      R"({"version": 1, "interfaces": [{"mac": "not-a-mac"}]})",
  };
  for (const char* text : bad) {
    EXPECT_FALSE(ParseHalAgentConfig(text).ok()) << text;
  }
  EXPECT_FALSE(ParseHalAgentConfig(std::string(300 * 1024, ' ')).ok());
  EXPECT_TRUE(ParseHalAgentConfig(R"({"version": 1})").ok());
}

TEST(HalAgentConfigTest, HalModeIsAskedForOnTheCommandLine) {
  char prog[] = "chrys-agent";
  char hal[] = "--hal";
  char* with[] = {prog, hal};
  char* without[] = {prog};
  EXPECT_TRUE(HalModeRequested(2, with));
  EXPECT_FALSE(HalModeRequested(1, without));
}

}  // namespace
}  // namespace chrys::guest
