#include "cri/config.h"

#include <gtest/gtest.h>

namespace chrys::cri {
namespace {

TEST(ConfigTest, DefaultsAreValid) {
  Config config;
  EXPECT_TRUE(Validate(config).ok());
  EXPECT_EQ(config.socket, "/run/chrysalis/chrysalis.sock");
  EXPECT_EQ(config.ToJson()["log"]["level"], "info");
}

TEST(ConfigTest, YamlOverridesDefaults) {
  Config config;
  auto s = ApplyYaml(config, "socket: /tmp/x.sock\nlog:\n  level: debug\ncni:\n  bin_dirs: [/a, /b]\n", "f.yaml");
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(config.socket, "/tmp/x.sock");
  EXPECT_EQ(config.log.level, "debug");
  EXPECT_EQ(config.cni.bin_dirs, (std::vector<std::string>{"/a", "/b"}));
  EXPECT_EQ(config.log.max_files, 5);  // untouched default
}

TEST(ConfigTest, UnknownKeyNamesPathAndKnownKeys) {
  Config config;
  auto s = ApplyYaml(config, "log:\n  levl: debug\n", "/etc/chrysalis/config.yaml");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("/etc/chrysalis/config.yaml"), std::string::npos);
  EXPECT_NE(s.error().message().find("unknown key 'log.levl'"), std::string::npos);
  EXPECT_NE(s.error().message().find("level"), std::string::npos);
  auto top = ApplyYaml(config, "sockets: /x\n", "c.yaml");
  ASSERT_FALSE(top.ok());
  EXPECT_NE(top.error().message().find("unknown key 'sockets'"), std::string::npos);
}

TEST(ConfigTest, WrongTypesNameKeyAndExpectation) {
  struct Case {
    const char* yaml;
    const char* key;
    const char* expected;
  };
  const Case cases[] = {
      {"log:\n  max_files: many\n", "log.max_files", "an integer from 1 to 100"},
      {"log:\n  max_files: 0\n", "log.max_files", "an integer from 1 to 100"},
      {"log:\n  max_files: 3.5\n", "log.max_files", "an integer"},
      {"cgroup_driver: cgroupv3\n", "cgroup_driver", "one of cgroupfs, systemd"},
      {"cni:\n  bin_dirs: /usr/lib/cni\n", "cni.bin_dirs", "a list of strings"},
      {"socket: [a, b]\n", "socket", "a string"},
      {"log: 3\n", "log", "a mapping"},
      {"vmm:\n  accel: fast\n", "vmm.accel", "one of auto, kvm, tcg"},
      {"vmm:\n  warm_pool_size: lots\n", "vmm.warm_pool_size", "auto or an integer from 0 to 64"},
      {"vmm:\n  warm_pool_size: -1\n", "vmm.warm_pool_size", "auto or an integer from 0 to 64"},
      {"vmm:\n  warm_pool_size: 65\n", "vmm.warm_pool_size", "auto or an integer from 0 to 64"},
      {"vmm:\n  vm_template: yes\n", "vmm.vm_template", "true or false"},
      {"vmm:\n  vm_template: [true]\n", "vmm.vm_template", "true or false"},
  };
  for (const auto& c : cases) {
    Config config;
    auto s = ApplyYaml(config, c.yaml, "c.yaml");
    ASSERT_FALSE(s.ok()) << c.yaml;
    EXPECT_NE(s.error().message().find(std::string("'") + c.key + "'"), std::string::npos) << s.error().message();
    EXPECT_NE(s.error().message().find(c.expected), std::string::npos) << s.error().message();
  }
}

TEST(ConfigTest, SyntaxErrorNamesLine) {
  Config config;
  auto s = ApplyYaml(config, "log:\n  level: [debug\n", "c.yaml");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("c.yaml: not valid YAML at line"), std::string::npos) << s.error().message();
}

TEST(ConfigTest, EmptyDocumentKeepsDefaults) {
  Config config;
  EXPECT_TRUE(ApplyYaml(config, "", "c.yaml").ok());
  EXPECT_TRUE(ApplyYaml(config, "# only a comment\n", "c.yaml").ok());
  EXPECT_EQ(config.log.level, "info");
}

TEST(ConfigTest, OverridesAndValidation) {
  Config config;
  ASSERT_TRUE(ApplyOverride(config, "log.level=debug").ok());
  EXPECT_EQ(config.log.level, "debug");
  ASSERT_TRUE(ApplyOverride(config, "cni.bin_dirs=[/x]").ok());
  EXPECT_EQ(config.cni.bin_dirs.size(), 1U);
  EXPECT_FALSE(ApplyOverride(config, "nokey").ok());
  EXPECT_FALSE(ApplyOverride(config, "log.nope=1").ok());
  ASSERT_TRUE(ApplyOverride(config, "state_dir=relative/path").ok());
  auto invalid = Validate(config);
  ASSERT_FALSE(invalid.ok());
  EXPECT_NE(invalid.error().message().find("'state_dir'"), std::string::npos);
}

TEST(ConfigTest, WarmPoolIsAutoByDefaultAndSizedByTheDefaultHandlersVmm) {
  Config config;
  EXPECT_EQ(config.ToJson()["vmm"]["warm_pool_size"], "auto");
  EXPECT_EQ(WarmPoolSizeFor(config.vmm, /*cloud_hypervisor_runs_default_handler=*/false), 1);
  EXPECT_EQ(WarmPoolSizeFor(config.vmm, /*cloud_hypervisor_runs_default_handler=*/true), 0)
      << "Cloud Hypervisor VMs are not pooled: a warm QEMU VM would serve chrysalis-qemu pods only";
  // A number is taken as it is, on any node.
  ASSERT_TRUE(ApplyYaml(config, "vmm:\n  warm_pool_size: 3\n", "c.yaml").ok());
  EXPECT_EQ(WarmPoolSizeFor(config.vmm, true), 3);
  ASSERT_TRUE(ApplyOverride(config, "vmm.warm_pool_size=0").ok());
  EXPECT_EQ(WarmPoolSizeFor(config.vmm, false), 0);
  ASSERT_TRUE(ApplyOverride(config, "vmm.warm_pool_size=auto").ok());
  EXPECT_EQ(config.vmm.warm_pool_size, kWarmPoolAuto);
  EXPECT_EQ(config.ToJson()["vmm"]["warm_pool_size"], "auto");
}

TEST(ConfigTest, VmTemplateIsOnByDefaultAndCanBeTurnedOff) {
  Config config;
  EXPECT_TRUE(config.vmm.vm_template);
  EXPECT_EQ(config.ToJson()["vmm"]["vm_template"], true);
  ASSERT_TRUE(ApplyOverride(config, "vmm.vm_template=false").ok());
  EXPECT_FALSE(config.vmm.vm_template);
  EXPECT_EQ(config.ToJson()["vmm"]["vm_template"], false);
  ASSERT_TRUE(ApplyYaml(config, "vmm:\n  vm_template: true\n", "c.yaml").ok());
  EXPECT_TRUE(config.vmm.vm_template);
}

TEST(ConfigTest, YamlRoundTrip) {
  Config config;
  config.cgroup_driver = CgroupDriver::kSystemd;
  config.cni.network_name = "pods";
  Config reread;
  auto s = ApplyYaml(reread, config.ToYaml(), "printed");
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(reread.ToJson(), config.ToJson());
}

}  // namespace
}  // namespace chrys::cri
