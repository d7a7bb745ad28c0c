#include "cri/validation.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "base/capabilities.h"

namespace chrys::cri {
namespace {

namespace v1 = ::runtime::v1;

v1::PodSandboxConfig GoodPod() {
  v1::PodSandboxConfig config;
  config.mutable_metadata()->set_name("web-1");
  config.mutable_metadata()->set_namespace_("default");
  config.mutable_metadata()->set_uid("4f1a-77");
  config.set_log_directory("/var/log/pods/default_web-1_4f1a-77");
  return config;
}

v1::ContainerConfig GoodContainer() {
  v1::ContainerConfig config;
  config.mutable_metadata()->set_name("app");
  config.mutable_image()->set_image("busybox");
  config.set_log_path("app/0.log");
  return config;
}

TEST(ValidationTest, GoodPodPasses) {
  EXPECT_TRUE(ValidatePodSandboxConfig(GoodPod()).ok());
}

TEST(ValidationTest, PodMetadataErrorsNameTheField) {
  struct Case {
    std::function<void(v1::PodSandboxConfig&)> mutate;
    const char* field;
  };
  const Case cases[] = {
      {[](auto& c) { c.clear_metadata(); }, "config.metadata is required"},
      {[](auto& c) { c.mutable_metadata()->set_name(""); }, "config.metadata.name is required"},
      {[](auto& c) { c.mutable_metadata()->set_name("Web_1"); }, "config.metadata.name"},
      {[](auto& c) { c.mutable_metadata()->set_name(std::string(254, 'a')); }, "longer than 253"},
      {[](auto& c) { c.mutable_metadata()->set_namespace_(std::string(64, 'a')); }, "longer than 63"},
      {[](auto& c) { c.mutable_metadata()->set_namespace_("-x"); }, "config.metadata.namespace"},
      {[](auto& c) { c.mutable_metadata()->set_uid(""); }, "config.metadata.uid is required"},
      {[](auto& c) { c.mutable_metadata()->set_uid("a/b"); }, "config.metadata.uid"},
      {[](auto& c) { c.set_log_directory("relative"); }, "config.log_directory"},
      {[](auto& c) { c.add_port_mappings()->set_container_port(70000); }, "container_port 70000"},
  };
  for (const auto& c : cases) {
    auto config = GoodPod();
    c.mutate(config);
    auto s = ValidatePodSandboxConfig(config);
    ASSERT_FALSE(s.ok()) << c.field;
    EXPECT_EQ(s.error().code(), base::ErrorCode::kInvalidArgument);
    EXPECT_NE(s.error().message().find(c.field), std::string::npos) << s.error().message();
  }
}

TEST(ValidationTest, LogPathMustStayInsideLogDirectory) {
  EXPECT_EQ(*ResolveLogPath("/var/log/pods/p", "c/0.log"), "/var/log/pods/p/c/0.log");
  EXPECT_EQ(*ResolveLogPath("/var/log/pods/p", ""), "");
  for (const char* bad : {"../x.log", "c/../../x.log", "/etc/passwd"}) {
    auto r = ResolveLogPath("/var/log/pods/p", bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message().find("config.log_path"), std::string::npos);
  }
  EXPECT_FALSE(ResolveLogPath("", "c.log").ok());
}

TEST(ValidationTest, ContainerConfig) {
  v1::ContainerConfig config;
  config.mutable_metadata()->set_name("app");
  config.mutable_image()->set_image("busybox");
  config.set_log_path("app/0.log");
  EXPECT_TRUE(ValidateContainerConfig(config, GoodPod()).ok());
  auto no_image = config;
  no_image.clear_image();
  EXPECT_NE(ValidateContainerConfig(no_image, GoodPod()).error().message().find("config.image.image"),
            std::string::npos);
  auto bad_name = config;
  bad_name.mutable_metadata()->set_name("app.v1");
  EXPECT_NE(ValidateContainerConfig(bad_name, GoodPod()).error().message().find("config.metadata.name"),
            std::string::npos);
  auto escape = config;
  escape.set_log_path("../../etc/x");
  EXPECT_NE(ValidateContainerConfig(escape, GoodPod()).error().message().find("escapes"), std::string::npos);
  auto rel_mount = config;
  rel_mount.add_mounts()->set_container_path("data");
  EXPECT_NE(ValidateContainerConfig(rel_mount, GoodPod()).error().message().find("container_path"), std::string::npos);
}

TEST(ValidationTest, CapabilitiesAddAndDropOnTheDefaults) {
  auto resolve = [](std::vector<std::string> add, std::vector<std::string> drop) {
    v1::Capability c;
    for (auto& a : add) {
      c.add_add_capabilities(a);
    }
    for (auto& d : drop) {
      c.add_drop_capabilities(d);
    }
    auto r = ResolveCapabilities(c);
    EXPECT_TRUE(r.ok()) << r.error().message();
    return r.ok() ? *r : std::vector<std::string>{};
  };
  auto has = [](const std::vector<std::string>& set, const std::string& name) {
    return std::find(set.begin(), set.end(), name) != set.end();
  };
  auto defaults = resolve({}, {});
  EXPECT_EQ(defaults.size(), base::DefaultCapabilities().size());
  EXPECT_TRUE(has(defaults, "CAP_CHOWN"));

  // Kubernetes sends names without the prefix; adds keep the defaults.
  auto added = resolve({"NET_ADMIN", "cap_sys_time"}, {});
  EXPECT_EQ(added.size(), defaults.size() + 2);
  EXPECT_TRUE(has(added, "CAP_NET_ADMIN"));
  EXPECT_TRUE(has(added, "CAP_SYS_TIME"));
  EXPECT_TRUE(has(added, "CAP_CHOWN"));

  auto dropped = resolve({}, {"CHOWN", "CAP_NET_RAW"});
  EXPECT_EQ(dropped.size(), defaults.size() - 2);
  EXPECT_FALSE(has(dropped, "CAP_CHOWN"));
  EXPECT_FALSE(has(dropped, "CAP_NET_RAW"));

  // The restricted Pod Security Standard: drop ALL, add back NET_BIND_SERVICE.
  EXPECT_TRUE(resolve({}, {"ALL"}).empty());
  EXPECT_EQ(resolve({"NET_BIND_SERVICE"}, {"ALL"}), (std::vector<std::string>{"CAP_NET_BIND_SERVICE"}));
  auto all_but = resolve({"ALL"}, {"SYS_ADMIN"});
  EXPECT_EQ(all_but.size(), base::KnownCapabilities().size() - 1);
  EXPECT_FALSE(has(all_but, "CAP_SYS_ADMIN"));
  // Kernel order, whatever the request's order.
  EXPECT_EQ(resolve({"SYS_ADMIN", "CHOWN"}, {"ALL"}), (std::vector<std::string>{"CAP_CHOWN", "CAP_SYS_ADMIN"}));
}

TEST(ValidationTest, UnknownCapabilityIsNamed) {
  v1::Capability c;
  c.add_add_capabilities("NET_ADMIN");
  c.add_add_capabilities("FLY");
  auto r = ResolveCapabilities(c);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), base::ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message().find("add_capabilities[1]"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("'FLY'"), std::string::npos) << r.error().message();

  auto config = GoodContainer();
  config.mutable_linux()->mutable_security_context()->mutable_capabilities()->add_drop_capabilities("CAP_NOPE");
  auto status = ValidateContainerConfig(config, GoodPod());
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.error().message().find("drop_capabilities[0]"), std::string::npos) << status.error().message();
  // A privileged container gets every capability: its lists are not consulted.
  config.mutable_linux()->mutable_security_context()->set_privileged(true);
  EXPECT_TRUE(ValidateContainerConfig(config, GoodPod()).ok());
}

TEST(ValidationTest, AmbientCapabilitiesAreGrantedAndNamedOnce) {
  v1::Capability c;
  c.add_drop_capabilities("ALL");
  c.add_add_ambient_capabilities("net_bind_service");
  c.add_add_ambient_capabilities("CAP_NET_BIND_SERVICE");
  c.add_add_ambient_capabilities("SYS_TIME");
  auto ambient = ResolveAmbientCapabilities(c);
  ASSERT_TRUE(ambient.ok()) << ambient.error().message();
  EXPECT_EQ(*ambient, (std::vector<std::string>{"CAP_NET_BIND_SERVICE", "CAP_SYS_TIME"}));
  // Even under drop ALL an ambient capability is granted: the kernel raises it only from the permitted set.
  auto granted = ResolveCapabilities(c);
  ASSERT_TRUE(granted.ok()) << granted.error().message();
  EXPECT_EQ(*granted, (std::vector<std::string>{"CAP_NET_BIND_SERVICE", "CAP_SYS_TIME"}));
}

TEST(ValidationTest, BadAmbientCapabilityIsNamed) {
  for (const char* bad : {"FLY", "ALL"}) {
    auto config = GoodContainer();
    auto* caps = config.mutable_linux()->mutable_security_context()->mutable_capabilities();
    caps->add_add_ambient_capabilities("NET_RAW");
    caps->add_add_ambient_capabilities(bad);
    auto status = ValidateContainerConfig(config, GoodPod());
    ASSERT_FALSE(status.ok()) << bad;
    EXPECT_EQ(status.error().code(), base::ErrorCode::kInvalidArgument);
    EXPECT_NE(status.error().message().find("add_ambient_capabilities[1]"), std::string::npos)
        << status.error().message();
    EXPECT_NE(status.error().message().find(bad), std::string::npos) << status.error().message();
  }
}

TEST(ValidationTest, HandlersAndIds) {
  EXPECT_EQ(*ResolveHandler(""), "chrysalis");
  EXPECT_EQ(*ResolveHandler("chrysalis-qemu"), "chrysalis-qemu");
  auto bad = ResolveHandler("runc");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("runtime_handler 'runc'"), std::string::npos);
  std::string a = NewId();
  EXPECT_EQ(a.size(), 64U);
  EXPECT_NE(a, NewId());
}

}  // namespace
}  // namespace chrys::cri
