#include "cri/validation.h"

#include <gtest/gtest.h>

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

TEST(ValidationTest, GoodPodPasses) { EXPECT_TRUE(ValidatePodSandboxConfig(GoodPod()).ok()); }

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
  EXPECT_NE(ValidateContainerConfig(rel_mount, GoodPod()).error().message().find("container_path"),
            std::string::npos);
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
