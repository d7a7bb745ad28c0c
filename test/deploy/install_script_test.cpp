// deploy/install.sh into temporary roots: layout, idempotence, edited config, CNI example, uninstall, bad input.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <map>

#include "e2e/fixtures/temp_dir.h"
#include "test/deploy/deploy_test_util.h"

namespace chrys::deploy_test {
namespace {

namespace fs = std::filesystem;

// Everything about a tree that an install could change: type, size, mode, mtime and content hash stand-in.
std::map<std::string, std::string> Snapshot(const std::string& root) {
  std::map<std::string, std::string> out;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    struct stat st {};
    lstat(entry.path().c_str(), &st);
    out[fs::relative(entry.path(), root).string()] =
        std::to_string(st.st_mode) + "/" + std::to_string(st.st_size) + "/" + std::to_string(st.st_ino) + "/" +
        std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
  }
  return out;
}

class InstallScript : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path() + "/root";
    build_ = dir_.path() + "/build";
    guest_ = build_ + "/guest-image";
    fs::create_directories(root_);
    fs::create_directories(build_ + "/cri");
    fs::create_directories(guest_);
    // Small stand-ins for the ~100 MB build outputs that run the real programs: install.sh copies them and
    // runs "chrysd --print-config" to check configs, and both work through the wrappers.
    WriteText(build_ + "/cri/chrysd", "#!/bin/sh\nexec '" + ChrysdBinary() + "' \"$@\"\n", 0755);
    WriteText(build_ + "/cri/chrysctl", "#!/bin/sh\nexec '" + ChrysctlBinary() + "' \"$@\"\n", 0755);
    WriteText(guest_ + "/manifest.json", R"({"kernel": "vmlinuz", "initramfs": "initramfs.img"})");
    WriteText(guest_ + "/vmlinuz", "kernel bytes");
    WriteText(guest_ + "/initramfs.img", "initramfs bytes");
  }

  base::CommandResult Install(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {SourceDir() + "/deploy/install.sh", "--root", root_, "--build-dir", build_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return RunTool(argv);
  }
  std::string At(const std::string& path) const { return root_ + path; }

  e2e::TempDir dir_{"chrys-install-test"};
  std::string root_, build_, guest_;
};

TEST_F(InstallScript, PutsEveryPartInPlace) {
  auto result = Install();
  ASSERT_TRUE(result.success()) << result.stderr_data << result.stdout_data;
  EXPECT_EQ(ReadText(At("/usr/local/bin/chrysd")), ReadText(build_ + "/cri/chrysd"));
  EXPECT_EQ(ReadText(At("/usr/local/bin/chrysctl")), ReadText(build_ + "/cri/chrysctl"));
  EXPECT_EQ(fs::status(At("/usr/local/bin/chrysd")).permissions() & fs::perms::owner_exec, fs::perms::owner_exec);
  EXPECT_EQ(ReadText(At("/etc/chrysalis/config.yaml")), ReadText(SourceDir() + "/deploy/config.yaml"));
  EXPECT_EQ(ReadText(At("/etc/systemd/system/chrysd.service")), ReadText(SourceDir() + "/deploy/chrysd.service"));
  EXPECT_EQ(ReadText(At("/var/lib/chrysalis/guest/vmlinuz")), "kernel bytes");
  EXPECT_TRUE(fs::exists(At("/var/lib/chrysalis/guest/manifest.json")));
  EXPECT_EQ(ReadText(At("/etc/cni/net.d/10-chrysalis.conflist")),
            ReadText(SourceDir() + "/deploy/cni/10-chrysalis.conflist"));
  // The installed chrysd accepts the installed config.
  auto check = RunTool({At("/usr/local/bin/chrysd"), "--config", At("/etc/chrysalis/config.yaml"), "--print-config"});
  EXPECT_TRUE(check.success()) << check.stderr_data;
}

TEST_F(InstallScript, SecondRunChangesNothing) {
  ASSERT_TRUE(Install().success());
  auto before = Snapshot(root_);
  auto again = Install();
  ASSERT_TRUE(again.success()) << again.stderr_data;
  EXPECT_EQ(Snapshot(root_), before);
  EXPECT_EQ(again.stdout_data.find("installed /"), std::string::npos) << again.stdout_data;
}

TEST_F(InstallScript, NewBuildReplacesBinariesAndGuest) {
  ASSERT_TRUE(Install().success());
  WriteText(guest_ + "/vmlinuz", "newer kernel");
  std::string newer = ReadText(build_ + "/cri/chrysd") + "# newer build\n";
  WriteText(build_ + "/cri/chrysd", newer, 0755);
  auto result = Install();
  ASSERT_TRUE(result.success()) << result.stderr_data;
  EXPECT_EQ(ReadText(At("/var/lib/chrysalis/guest/vmlinuz")), "newer kernel");
  EXPECT_EQ(ReadText(At("/usr/local/bin/chrysd")), newer);
  EXPECT_FALSE(fs::exists(At("/var/lib/chrysalis/guest.old")));
  EXPECT_FALSE(fs::exists(At("/var/lib/chrysalis/guest.new")));
}

TEST_F(InstallScript, KeepsAnEditedConfig) {
  ASSERT_TRUE(Install().success());
  std::string edited = ReadText(At("/etc/chrysalis/config.yaml"));
  edited.replace(edited.find("level: \"info\""), 13, "level: \"debug\"");
  WriteText(At("/etc/chrysalis/config.yaml"), edited);
  auto result = Install();
  ASSERT_TRUE(result.success()) << result.stderr_data;
  EXPECT_EQ(ReadText(At("/etc/chrysalis/config.yaml")), edited);
  EXPECT_EQ(ReadText(At("/etc/chrysalis/config.yaml.new")), ReadText(SourceDir() + "/deploy/config.yaml"));
  EXPECT_NE(result.stdout_data.find("kept edited"), std::string::npos) << result.stdout_data;
  // --force-config replaces it.
  ASSERT_TRUE(Install({"--force-config"}).success());
  EXPECT_EQ(ReadText(At("/etc/chrysalis/config.yaml")), ReadText(SourceDir() + "/deploy/config.yaml"));
  EXPECT_FALSE(fs::exists(At("/etc/chrysalis/config.yaml.new")));
}

TEST_F(InstallScript, UpgradesAnUneditedOlderDefault) {
  std::string older = dir_.path() + "/older.yaml";
  WriteText(older, "# an older default\nlog:\n  level: \"info\"\n");
  ASSERT_TRUE(Install({"--config", older}).success());
  ASSERT_TRUE(Install().success());
  EXPECT_EQ(ReadText(At("/etc/chrysalis/config.yaml")), ReadText(SourceDir() + "/deploy/config.yaml"));
}

TEST_F(InstallScript, CniExampleOnlyWhereNoNetworkIsConfigured) {
  fs::create_directories(At("/etc/cni/net.d"));
  WriteText(At("/etc/cni/net.d/05-cluster.conflist"), R"({"cniVersion":"1.0.0","name":"x","plugins":[]})");
  auto result = Install();
  ASSERT_TRUE(result.success()) << result.stderr_data;
  EXPECT_FALSE(fs::exists(At("/etc/cni/net.d/10-chrysalis.conflist")));
  EXPECT_NE(result.stdout_data.find("already has a network config"), std::string::npos);
  fs::remove(At("/etc/cni/net.d/05-cluster.conflist"));
  ASSERT_TRUE(Install({"--no-cni"}).success());
  EXPECT_FALSE(fs::exists(At("/etc/cni/net.d/10-chrysalis.conflist")));
}

TEST_F(InstallScript, UninstallRemovesItsFilesAndKeepsEdits) {
  ASSERT_TRUE(Install().success());
  WriteText(At("/etc/chrysalis/config.yaml"), ReadText(At("/etc/chrysalis/config.yaml")) + "# operator note\n");
  WriteText(At("/var/lib/chrysalis/pods.record"), "chrysd state");
  auto result = Install({"--uninstall"});
  ASSERT_TRUE(result.success()) << result.stderr_data;
  EXPECT_FALSE(fs::exists(At("/usr/local/bin/chrysd")));
  EXPECT_FALSE(fs::exists(At("/usr/local/bin/chrysctl")));
  EXPECT_FALSE(fs::exists(At("/etc/systemd/system/chrysd.service")));
  EXPECT_FALSE(fs::exists(At("/var/lib/chrysalis/guest")));
  EXPECT_FALSE(fs::exists(At("/etc/cni/net.d/10-chrysalis.conflist")));
  EXPECT_TRUE(fs::exists(At("/etc/chrysalis/config.yaml")));
  EXPECT_TRUE(fs::exists(At("/var/lib/chrysalis/pods.record")));
  auto twice = Install({"--uninstall"});
  EXPECT_TRUE(twice.success()) << twice.stderr_data;
  ASSERT_TRUE(Install({"--uninstall", "--purge"}).success());
  EXPECT_FALSE(fs::exists(At("/etc/chrysalis/config.yaml")));
  EXPECT_FALSE(fs::exists(At("/var/lib/chrysalis")));
}

TEST_F(InstallScript, NoUnitLeavesSystemdAlone) {
  ASSERT_TRUE(Install({"--no-unit"}).success());
  EXPECT_FALSE(fs::exists(At("/etc/systemd/system/chrysd.service")));
  EXPECT_TRUE(fs::exists(At("/usr/local/bin/chrysd")));
}

TEST_F(InstallScript, MissingGuestIsAWarningUnlessRequired) {
  fs::remove_all(guest_);
  auto result = Install();
  ASSERT_TRUE(result.success()) << result.stderr_data;
  EXPECT_NE(result.stderr_data.find("guest artifacts not built yet"), std::string::npos) << result.stderr_data;
  EXPECT_FALSE(fs::exists(At("/var/lib/chrysalis/guest")));
}

// --- bad input: each names the problem and leaves the root as it was ---

TEST_F(InstallScript, MissingBuildOutputsAreNamed) {
  fs::remove(build_ + "/cri/chrysctl");
  auto before = Snapshot(root_);
  auto result = Install();
  EXPECT_FALSE(result.success());
  EXPECT_NE(result.stderr_data.find("build outputs missing"), std::string::npos) << result.stderr_data;
  EXPECT_NE(result.stderr_data.find(build_ + "/cri/chrysctl"), std::string::npos) << result.stderr_data;
  EXPECT_EQ(result.stderr_data.find(build_ + "/cri/chrysd "), std::string::npos) << result.stderr_data;
  EXPECT_EQ(Snapshot(root_), before);
}

TEST_F(InstallScript, MissingBuildDirIsNamed) {
  auto result = RunTool({SourceDir() + "/deploy/install.sh", "--root", root_, "--build-dir", dir_.path() + "/nope"});
  EXPECT_FALSE(result.success());
  EXPECT_NE(result.stderr_data.find("build directory '" + dir_.path() + "/nope' does not exist"), std::string::npos)
      << result.stderr_data;
  EXPECT_TRUE(fs::is_empty(root_));
}

TEST_F(InstallScript, ExplicitGuestDirWithoutArtifactsIsAnError) {
  fs::create_directories(dir_.path() + "/empty-guest");
  auto result = Install({"--guest-dir", dir_.path() + "/empty-guest"});
  EXPECT_FALSE(result.success());
  EXPECT_NE(result.stderr_data.find(dir_.path() + "/empty-guest/manifest.json"), std::string::npos)
      << result.stderr_data;
  EXPECT_TRUE(fs::is_empty(root_));
  fs::remove_all(guest_);
  auto required = Install({"--require-guest"});
  EXPECT_FALSE(required.success());
  EXPECT_NE(required.stderr_data.find("guest artifacts missing"), std::string::npos) << required.stderr_data;
}

TEST_F(InstallScript, UnreadableConfigsAreNamed) {
  auto missing = Install({"--config", dir_.path() + "/absent.yaml"});
  EXPECT_FALSE(missing.success());
  EXPECT_NE(missing.stderr_data.find("config file '" + dir_.path() + "/absent.yaml' does not exist"), std::string::npos)
      << missing.stderr_data;

  auto directory = Install({"--config", dir_.path()});
  EXPECT_FALSE(directory.success());
  EXPECT_NE(directory.stderr_data.find("is not a regular file"), std::string::npos) << directory.stderr_data;

  std::string bad_yaml = dir_.path() + "/bad.yaml";
  WriteText(bad_yaml, "log:\n  level: [unclosed\n");
  auto syntax = Install({"--config", bad_yaml});
  EXPECT_FALSE(syntax.success());
  EXPECT_NE(syntax.stderr_data.find("is not a valid chrysd config"), std::string::npos) << syntax.stderr_data;
  EXPECT_NE(syntax.stderr_data.find("line"), std::string::npos) << syntax.stderr_data;

  std::string wrong_type = dir_.path() + "/wrong.yaml";
  WriteText(wrong_type, "vmm:\n  boot_timeout_seconds: soon\n");
  auto typed = Install({"--config", wrong_type});
  EXPECT_FALSE(typed.success());
  EXPECT_NE(typed.stderr_data.find("vmm.boot_timeout_seconds"), std::string::npos) << typed.stderr_data;

  if (geteuid() != 0) {  // root reads mode-000 files anyway
    std::string locked = dir_.path() + "/locked.yaml";
    WriteText(locked, "log:\n  level: info\n", 0);
    auto denied = Install({"--config", locked});
    EXPECT_FALSE(denied.success());
    EXPECT_NE(denied.stderr_data.find("is not readable"), std::string::npos) << denied.stderr_data;
  }
  EXPECT_TRUE(fs::is_empty(root_));
}

TEST_F(InstallScript, BrokenInstalledConfigStopsTheInstall) {
  fs::create_directories(At("/etc/chrysalis"));
  WriteText(At("/etc/chrysalis/config.yaml"), "socket: relative/path.sock\n");
  auto result = Install();
  EXPECT_FALSE(result.success());
  EXPECT_NE(result.stderr_data.find("installed config file '" + At("/etc/chrysalis/config.yaml") + "'"),
            std::string::npos)
      << result.stderr_data;
  EXPECT_NE(result.stderr_data.find("socket"), std::string::npos) << result.stderr_data;
  EXPECT_FALSE(fs::exists(At("/usr/local/bin/chrysd")));
}

TEST_F(InstallScript, BadArgumentsAreNamed) {
  auto unknown = Install({"--frobnicate"});
  EXPECT_FALSE(unknown.success());
  EXPECT_NE(unknown.stderr_data.find("unknown option '--frobnicate'"), std::string::npos);
  auto no_root = RunTool({SourceDir() + "/deploy/install.sh", "--root", dir_.path() + "/absent-root"});
  EXPECT_FALSE(no_root.success());
  EXPECT_NE(no_root.stderr_data.find("root directory '" + dir_.path() + "/absent-root' does not exist"),
            std::string::npos);
  auto purge = Install({"--purge"});
  EXPECT_FALSE(purge.success());
  EXPECT_NE(purge.stderr_data.find("--purge only goes with --uninstall"), std::string::npos);
}

}  // namespace
}  // namespace chrys::deploy_test
