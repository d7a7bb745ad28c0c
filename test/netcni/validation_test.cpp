// Input checks that run before anything touches the kernel, so they need no root.
#include <gtest/gtest.h>

#include "netcni/netns.h"
#include "netcni/pod_network.h"
#include "netcni/tap_link.h"

namespace chrys::netcni {
namespace {

TEST(ValidationTest, NetnsNames) {
  EXPECT_TRUE(NetnsHandle::ValidateName("a1b2c3_d.e-f").ok());
  for (const std::string& bad : std::vector<std::string>{"", "-x", ".x", "a/b", "..", "a b", std::string(201, 'a')}) {
    auto st = NetnsHandle::ValidateName(bad);
    EXPECT_FALSE(st.ok()) << bad;
    EXPECT_EQ(st.error().code(), base::ErrorCode::kInvalidArgument);
  }
  EXPECT_FALSE(NetnsHandle::Exists("../../etc/passwd"));
  EXPECT_FALSE(NetnsHandle::Create("../escape", "/tmp").ok());
}

TEST(ValidationTest, TapLinkRejectsBadSpecsBeforeTouchingTheKernel) {
  auto queues = TapLink::Create(-1, {"eth0", "tap0_eth0", 0, 5000});
  ASSERT_FALSE(queues.ok());
  EXPECT_NE(queues.error().message().find("tap queue count must be 1..256"), std::string::npos);
  auto name = TapLink::Create(-1, {"eth0", "a-name-longer-than-15", 1, 5000});
  ASSERT_FALSE(name.ok());
  EXPECT_NE(name.error().message().find("is not a valid interface name"), std::string::npos);
  EXPECT_FALSE(TapLink::OpenQueues(-1, "tap0", 300).ok());
}

TEST(ValidationTest, PodNetworkRequestIsCheckedFirst) {
  PodNetworkConfig config;
  config.conf_dir = "/nonexistent-conf-dir";
  config.state_dir = "/nonexistent-state-dir";
  PodNetworkManager manager(config);
  PodNetworkRequest r;
  r.sandbox_id = "sb1";
  r.pod_name = "a;b";
  auto net = manager.Setup(r);
  ASSERT_FALSE(net.ok());
  EXPECT_EQ(net.error().code(), base::ErrorCode::kInvalidArgument);
  EXPECT_NE(net.error().message().find("pod name \"a;b\" must not contain"), std::string::npos);

  r.pod_name = "p";
  r.port_mappings = {{"tcp", 0, 80, ""}};
  net = manager.Setup(r);
  ASSERT_FALSE(net.ok());
  EXPECT_NE(net.error().message().find("container port 0 is outside 1..65535"), std::string::npos);

  r.port_mappings = {{"tcp", 80, 8080, "not-an-ip"}};
  net = manager.Setup(r);
  ASSERT_FALSE(net.ok());
  EXPECT_NE(net.error().message().find("host IP \"not-an-ip\""), std::string::npos);

  r.port_mappings.clear();
  r.dns = DnsRequest{{"8.8.8.x"}, {}, {}};
  net = manager.Setup(r);
  ASSERT_FALSE(net.ok());
  EXPECT_NE(net.error().message().find("DNS server \"8.8.8.x\""), std::string::npos);

  // A valid request against a missing conf dir fails on the config, naming it.
  r.dns.reset();
  net = manager.Setup(r);
  ASSERT_FALSE(net.ok());
  EXPECT_EQ(net.error().code(), base::ErrorCode::kFailedPrecondition);
  EXPECT_NE(net.error().message().find("/nonexistent-conf-dir does not exist"), std::string::npos);

  // hostNetwork pods get nothing and need nothing.
  r.host_network = true;
  net = manager.Setup(r);
  ASSERT_TRUE(net.ok());
  EXPECT_TRUE(net->interfaces.empty());

  EXPECT_FALSE(manager.Teardown("bad/id").ok());
  EXPECT_TRUE(manager.ListSandboxes().empty());
  NetworkReadiness readiness = manager.Readiness();
  EXPECT_FALSE(readiness.ready);
  EXPECT_EQ(readiness.reason, "NetworkPluginNotReady");
}

}  // namespace
}  // namespace chrys::netcni
