#include "netcni/cni_result.h"

#include <gtest/gtest.h>

namespace chrys::netcni {
namespace {

TEST(CniResultTest, Parses110ResultWithEveryField) {
  auto r = ParseCniResultText(R"({
    "cniVersion": "1.1.0",
    "interfaces": [
      {"name": "cni0", "mac": "00:11:22:33:44:55"},
      {"name": "eth0", "mac": "AA:BB:CC:DD:EE:FF", "mtu": 9000, "sandbox": "/run/netns/p",
       "socketPath": "/run/vhost.sock", "pciID": "0000:00:04.0"}],
    "ips": [
      {"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 1},
      {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 1}],
    "routes": [
      {"dst": "0.0.0.0/0"},
      {"dst": "192.168.0.0/24", "gw": "10.1.0.254", "mtu": 1400, "advmss": 1360, "priority": 10, "table": 100,
       "scope": 253}],
    "dns": {"nameservers": ["10.1.0.1", "fd00::53"], "domain": "example", "search": ["a.example"],
            "options": ["ndots:5"]}})",
                              "test");
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->interfaces.size(), 2u);
  EXPECT_EQ(r->interfaces[1].mac, "aa:bb:cc:dd:ee:ff");
  EXPECT_EQ(r->interfaces[1].mtu, 9000u);
  EXPECT_EQ(r->interfaces[1].sandbox, "/run/netns/p");
  EXPECT_EQ(r->interfaces[1].socket_path, "/run/vhost.sock");
  EXPECT_EQ(r->interfaces[1].pci_id, "0000:00:04.0");
  ASSERT_EQ(r->ips.size(), 2u);
  EXPECT_EQ(r->ips[0].family, 4);
  EXPECT_EQ(r->ips[0].address, "10.1.0.5");
  EXPECT_EQ(r->ips[0].prefix_len, 16);
  EXPECT_EQ(r->ips[0].interface, 1u);
  EXPECT_EQ(r->ips[1].family, 6);
  EXPECT_EQ(r->ips[1].prefix_len, 64);
  ASSERT_EQ(r->routes.size(), 2u);
  EXPECT_FALSE(r->routes[0].scope.has_value());
  EXPECT_EQ(r->routes[1].gw, "10.1.0.254");
  EXPECT_EQ(r->routes[1].mtu, 1400u);
  EXPECT_EQ(r->routes[1].advmss, 1360u);
  EXPECT_EQ(r->routes[1].priority, 10u);
  EXPECT_EQ(r->routes[1].table, 100u);
  EXPECT_EQ(r->routes[1].scope, 253);
  EXPECT_EQ(r->dns.nameservers.size(), 2u);
  EXPECT_EQ(r->dns.domain, "example");
  EXPECT_EQ(r->dns.options, std::vector<std::string>{"ndots:5"});
}

TEST(CniResultTest, Parses040ResultWithIpVersions) {
  auto r = ParseCniResultText(R"({"cniVersion": "0.4.0", "interfaces": [{"name": "eth0"}],
      "ips": [{"version": "4", "address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0}],
      "routes": [{"dst": "0.0.0.0/0"}], "dns": {}})",
                              "p");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->ips[0].gateway, "10.0.0.1");
  auto mismatch =
      ParseCniResultText(R"({"cniVersion": "0.4.0", "ips": [{"version": "6", "address": "10.0.0.2/24"}]})", "p");
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.error().message().find("ips[0].version \"6\" does not match"), std::string::npos);
}

TEST(CniResultTest, Parses100Result) {
  auto r = ParseCniResultText(R"({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/n"}],
      "ips": [{"address": "10.0.0.2/24", "interface": 0}]})",
                              "p");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->raw["ips"][0]["address"], "10.0.0.2/24");
}

TEST(CniResultTest, RejectsGarbageAndOutOfRangeFields) {
  struct Case {
    std::string text;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"garbage", "is not valid JSON"},
      {"[]", "must be a JSON object"},
      {R"({"ips": []})", "result.cniVersion is missing"},
      {R"({"cniVersion": "0.2.0", "ip4": {}})", "cniVersion \"0.2.0\" is not supported"},
      {R"({"cniVersion": "1.0.0", "interfaces": {}})", "interfaces must be a list"},
      {R"({"cniVersion": "1.0.0", "interfaces": [{"name": ""}]})", "is not a valid interface name"},
      {R"({"cniVersion": "1.0.0", "interfaces": [{"name": "averyveryverylongname"}]})", "not a valid interface name"},
      {R"({"cniVersion": "1.0.0", "interfaces": [{"name": "e", "mac": "00:11:22"}]})", "is not a hardware address"},
      {R"({"cniVersion": "1.0.0", "interfaces": [{"name": "e", "mtu": -1}]})", "must be a non-negative integer"},
      {R"({"cniVersion": "1.0.0", "interfaces": [{"name": "e", "mtu": "1500"}]})", "must be a non-negative integer"},
      {R"({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2"}]})", "is not in CIDR notation"},
      {R"({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.300/24"}]})", "does not start with a valid IP"},
      {R"({"cniVersion": "1.0.0", "ips": [{"address": "fd00::1/129"}]})", "more than 128"},
      {R"({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "gateway": "fd00::1"}]})",
       "is not an IPv4 address"},
      {R"({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "interface": 0}]})",
       "ips[0].interface = 0 is out of range (0 interfaces)"},
      {R"({"cniVersion": "1.0.0", "routes": [{"dst": "0.0.0.0/0", "table": 5000000000}]})", "out of range"},
      {R"({"cniVersion": "1.0.0", "routes": [{"gw": "10.0.0.1"}]})", "routes[0].dst is missing"},
      {R"({"cniVersion": "1.0.0", "dns": {"nameservers": ["not-an-ip"]}})", "is not an IP address"},
      {R"({"cniVersion": "1.0.0", "dns": {"search": "a"}})", "dns.search must be a list of strings"},
  };
  for (const auto& c : cases) {
    auto r = ParseCniResultText(c.text, "plugin x");
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.error().message().find("CNI result from plugin x"), std::string::npos) << r.error().message();
    EXPECT_NE(r.error().message().find(c.expected), std::string::npos) << c.text << " -> " << r.error().message();
  }
}

TEST(CniResultTest, CidrHelpers) {
  EXPECT_TRUE(CidrContains("10.1.0.5", 16, "10.1.200.1"));
  EXPECT_FALSE(CidrContains("10.1.0.5", 24, "10.1.200.1"));
  EXPECT_TRUE(CidrContains("fd00::5", 64, "fd00::1"));
  EXPECT_FALSE(CidrContains("fd00::5", 64, "10.0.0.1"));
  EXPECT_EQ(IpFamily("::1"), 6);
  EXPECT_EQ(IpFamily("1.2.3"), 0);
}

}  // namespace
}  // namespace chrys::netcni
