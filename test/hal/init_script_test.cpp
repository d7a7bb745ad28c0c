// The logic of the HAL init scripts (the exact text embedded in the image), run with busybox sh on the host
// against fake /sys and /proc trees: command-line parsing, partition discovery, dm checks, the device step's failures.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "guest/hal/hal_scripts.h"

namespace chrys::guest::hal {
namespace {

class InitScriptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/hal-init-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_TRUE(base::WriteFileAtomic(dir_ + "/init", kInitramfsScript, 0755).ok());
    ASSERT_TRUE(base::WriteFileAtomic(dir_ + "/root-init", kRootInitScript, 0755).ok());
    ASSERT_TRUE(base::MakeDirs(dir_ + "/sys/class/block").ok());
    ASSERT_TRUE(base::MakeDirs(dir_ + "/sys/block").ok());
    ASSERT_TRUE(base::MakeDirs(dir_ + "/proc").ok());
    ASSERT_TRUE(base::WriteFileAtomic(dir_ + "/proc/mounts", "").ok());
    ASSERT_TRUE(base::WriteFileAtomic(dir_ + "/proc/uptime", "12.34 5.00\n").ok());
  }
  void TearDown() override { (void)base::RemoveTree(dir_); }

  // Sources `script` in library mode and runs `snippet`; returns exit code and stdout.
  base::CommandResult Sh(const std::string& script, const std::string& snippet, std::vector<std::string> env = {}) {
    base::CommandSpec spec;
    spec.argv = {"busybox", "sh", "-c", ". \"$0\"; " + snippet, dir_ + "/" + script};
    spec.extra_env = {"CHRYS_INIT_LIB=1", "SYSFS=" + dir_ + "/sys", "PROC=" + dir_ + "/proc"};
    spec.extra_env.insert(spec.extra_env.end(), env.begin(), env.end());
    spec.timeout = std::chrono::seconds(20);
    auto result = base::RunCommand(spec);
    EXPECT_TRUE(result.ok());
    return result.ok() ? *result : base::CommandResult{};
  }

  void AddPartition(const std::string& dev, const std::string& label) {
    std::string d = dir_ + "/sys/class/block/" + dev;
    ASSERT_TRUE(base::MakeDirs(d).ok());
    std::string uevent = "MAJOR=8\nMINOR=2\nDEVNAME=" + dev + "\nDEVTYPE=partition\n";
    if (!label.empty()) {
      uevent += "PARTNAME=" + label + "\n";
    }
    ASSERT_TRUE(base::WriteFileAtomic(d + "/uevent", uevent).ok());
  }

  void AddDm(const std::string& dm, const std::string& name, const std::string& uuid) {
    std::string d = dir_ + "/sys/block/" + dm + "/dm";
    ASSERT_TRUE(base::MakeDirs(d).ok());
    ASSERT_TRUE(base::WriteFileAtomic(d + "/name", name + "\n").ok());
    ASSERT_TRUE(base::WriteFileAtomic(d + "/uuid", uuid + "\n").ok());
  }

  std::string dir_;
};

TEST_F(InitScriptTest, ReadsRootHashFromTheCommandLine) {
  auto r = Sh("init", "cmdline_value roothash 'console=ttyS0 roothashx=no roothash=abc123 quiet'");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.stdout_data, "abc123\n");
  r = Sh("init", "cmdline_value roothash 'console=ttyS0 quiet'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.stdout_data, "");
  ASSERT_TRUE(base::WriteFileAtomic(dir_ + "/proc/cmdline", "BOOT_IMAGE=/k roothash=feed\n").ok());
  r = Sh("init", "cmdline_value roothash");
  EXPECT_EQ(r.stdout_data, "feed\n");
}

TEST_F(InitScriptTest, AcceptsOnlyWellFormedRootHashes) {
  std::string good(64, 'a');
  EXPECT_EQ(Sh("init", "valid_roothash " + good).exit_code, 0);
  EXPECT_NE(Sh("init", "valid_roothash " + std::string(63, 'a')).exit_code, 0);
  EXPECT_NE(Sh("init", "valid_roothash " + std::string(63, 'a') + "G").exit_code, 0);
  EXPECT_NE(Sh("init", "valid_roothash " + std::string(64, 'A')).exit_code, 0);
  EXPECT_NE(Sh("init", "valid_roothash ''").exit_code, 0);
}

TEST_F(InitScriptTest, FindsPartitionsByGptLabel) {
  AddPartition("sda", "");
  AddPartition("sda2", "chrys-root");
  AddPartition("sda3", "chrys-verity");
  AddPartition("vdb1", "chrys-cocos");
  EXPECT_EQ(Sh("init", "partition_by_label chrys-root").stdout_data, "/dev/sda2\n");
  EXPECT_EQ(Sh("init", "resolve_partition chrys-cocos /dev/sda4").stdout_data, "/dev/vdb1\n");
  EXPECT_EQ(Sh("init", "partition_by_label chrys-esp").exit_code, 1);
}

TEST_F(InitScriptTest, RefusesAmbiguousLabels) {
  AddPartition("sda2", "chrys-root");
  AddPartition("sdb2", "chrys-root");
  auto r = Sh("init", "resolve_partition chrys-root /dev/sda2");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.stdout_data, "");
}

TEST_F(InitScriptTest, FallsBackToTheSeedDeviceNames) {
  AddPartition("sda2", "");
  std::string fake_dev = dir_ + "/sda4";
  ASSERT_TRUE(base::WriteFileAtomic(fake_dev, "").ok());
  EXPECT_EQ(Sh("init", "resolve_partition chrys-cocos " + fake_dev, {"ALLOW_FAKE_DEVICES=1"}).stdout_data,
            fake_dev + "\n");
  // Without the test switch a regular file is not a block device: no fallback.
  EXPECT_EQ(Sh("init", "resolve_partition chrys-cocos " + fake_dev).exit_code, 1);
}

TEST_F(InitScriptTest, ReadsDeviceMapperUuids) {
  AddDm("dm-0", "root_verity", "CRYPT-VERITY-abc-root_verity");
  AddDm("dm-1", "cocos_crypt", "CRYPT-LUKS2-def-cocos_crypt");
  EXPECT_EQ(Sh("init", "dm_uuid cocos_crypt").stdout_data, "CRYPT-LUKS2-def-cocos_crypt\n");
  EXPECT_EQ(Sh("root-init", "dm_uuid root_verity").stdout_data, "CRYPT-VERITY-abc-root_verity\n");
  EXPECT_EQ(Sh("init", "dm_uuid other").exit_code, 1);
}

TEST_F(InitScriptTest, FailPrintsAClearFatalLine) {
  auto r = Sh("init", "fail 'dm-verity: root does not match'; echo not-reached");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.stdout_data.find("CHRYS-HAL-FATAL: dm-verity: root does not match"), std::string::npos);
  EXPECT_EQ(r.stdout_data.find("not-reached"), std::string::npos);
}

// open_devices runs chrys-hal-dm (a stand-in on PATH here) and turns each of its exit statuses into the
// message that stops the boot; /cocos must never be touched before the root checked out.
TEST_F(InitScriptTest, OpenDevicesStopsTheBootOnEachHelperFailure) {
  std::string hash(64, 'a');
  ASSERT_TRUE(base::WriteFileAtomic(dir_ + "/proc/cmdline", "console=ttyS0 roothash=" + hash + "\n").ok());
  ASSERT_TRUE(base::MakeDirs(dir_ + "/bin").ok());
  struct Case {
    int status;
    const char* message;
  } cases[] = {{3, "dm-verity open failed for /dev/sda2 with hash device /dev/sda3"},
               {5, "does not match roothash=aaaa"},
               {4, "LUKS2 format or open of /dev/sda4 failed: /cocos would be unencrypted"},
               {2, "chrys-hal-dm failed"}};
  std::string devices = "ROOT_DEV=/dev/sda2 VERITY_DEV=/dev/sda3 COCOS_DEV=/dev/sda4; ";
  for (const Case& c : cases) {
    ASSERT_TRUE(base::WriteFileAtomic(
                    dir_ + "/bin/chrys-hal-dm",
                    "#!/bin/sh\necho \"$@\" >" + dir_ + "/helper-args\nexit " + std::to_string(c.status) + "\n", 0755)
                    .ok());
    auto r = Sh("init", "PATH=" + dir_ + "/bin:$PATH; " + devices + "open_devices; echo not-reached");
    EXPECT_EQ(r.exit_code, 1) << c.status;
    EXPECT_NE(r.stdout_data.find("CHRYS-HAL-FATAL: "), std::string::npos) << r.stdout_data;
    EXPECT_NE(r.stdout_data.find(c.message), std::string::npos) << r.stdout_data;
    EXPECT_EQ(r.stdout_data.find("not-reached"), std::string::npos);
  }
  auto args = base::ReadFile(dir_ + "/helper-args");
  ASSERT_TRUE(args.ok());
  EXPECT_EQ(*args, "--verity /dev/sda2 /dev/sda3 " + hash + " root_verity --luks /dev/sda4 cocos_crypt chrys-cocos\n");
}

TEST_F(InitScriptTest, OpenDevicesRefusesBadInputBeforeRunningTheHelper) {
  ASSERT_TRUE(base::MakeDirs(dir_ + "/bin").ok());
  ASSERT_TRUE(
      base::WriteFileAtomic(dir_ + "/bin/chrys-hal-dm", "#!/bin/sh\ntouch " + dir_ + "/helper-ran\n", 0755).ok());
  std::string path = "PATH=" + dir_ + "/bin:$PATH; ";
  std::string hash(64, 'b');
  struct Case {
    std::string cmdline;
    std::string devices;
    const char* message;
  } cases[] = {
      {"quiet", "ROOT_DEV=/dev/sda2 VERITY_DEV=/dev/sda3 COCOS_DEV=/dev/sda4",
       "no roothash= on the kernel command line"},
      {"roothash=xyz", "ROOT_DEV=/dev/sda2 VERITY_DEV=/dev/sda3 COCOS_DEV=/dev/sda4", "not a 64-digit hex"},
      {"roothash=" + hash, "ROOT_DEV=/dev/sda2 VERITY_DEV=/dev/sda2 COCOS_DEV=/dev/sda4", "are the same device"},
      {"roothash=" + hash, "ROOT_DEV=/dev/sda2 VERITY_DEV=/dev/sda3 COCOS_DEV=/dev/sda3", "refusing to format it"},
  };
  for (const Case& c : cases) {
    ASSERT_TRUE(base::WriteFileAtomic(dir_ + "/proc/cmdline", c.cmdline + "\n").ok());
    auto r = Sh("init", path + c.devices + "; open_devices; echo not-reached");
    EXPECT_EQ(r.exit_code, 1) << c.cmdline;
    EXPECT_NE(r.stdout_data.find(c.message), std::string::npos) << r.stdout_data;
    EXPECT_NE(::access((dir_ + "/helper-ran").c_str(), F_OK), 0) << "the helper ran on bad input: " << c.message;
  }
}

TEST_F(InitScriptTest, MarksCarryTheUptime) {
  EXPECT_EQ(Sh("init", "mark verity-open").stdout_data, "CHRYS-HAL-MARK verity-open 12.34\n");
}

TEST_F(InitScriptTest, RootInitParsesInitConfWithoutExecutingIt) {
  std::string conf = dir_ + "/init.conf";
  ASSERT_TRUE(
      base::WriteFileAtomic(conf, "mode=selftest\nwrite_marker=$(touch " + dir_ + "/pwned)\ncheck_marker=boot-1\n")
          .ok());
  EXPECT_EQ(Sh("root-init", "conf_value mode", {"CONF=" + conf}).stdout_data, "selftest\n");
  EXPECT_EQ(Sh("root-init", "conf_value check_marker", {"CONF=" + conf}).stdout_data, "boot-1\n");
  auto r = Sh("root-init", "conf_value write_marker", {"CONF=" + conf});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(::access((dir_ + "/pwned").c_str(), F_OK), 0);
  EXPECT_EQ(Sh("root-init", "conf_value mode", {"CONF=" + dir_ + "/absent"}).exit_code, 1);
}

TEST_F(InitScriptTest, RootInitReadsMountsLastWins) {
  ASSERT_TRUE(base::WriteFileAtomic(dir_ + "/proc/mounts",
                                    "rootfs / rootfs rw 0 0\n"
                                    "/dev/mapper/root_verity / ext4 ro,nodev,relatime 0 0\n"
                                    "certs_share /etc/certs 9p rw,nosuid,nodev 0 0\n")
                  .ok());
  EXPECT_EQ(Sh("root-init", "mount_field / 1").stdout_data, "/dev/mapper/root_verity\n");
  EXPECT_EQ(Sh("root-init", "mount_field /etc/certs 3").stdout_data, "9p\n");
  EXPECT_EQ(Sh("root-init", "mount_field /etc/cocos 1").stdout_data, "");
  EXPECT_EQ(Sh("root-init", "is_ro ro,nodev && echo ro").stdout_data, "ro\n");
  EXPECT_EQ(Sh("root-init", "is_ro rw,errors=ro || echo rw").stdout_data, "rw\n");
}

}  // namespace
}  // namespace chrys::guest::hal
