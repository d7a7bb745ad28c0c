// chrysctl without chrysd: argument parsing, help and completion, the console escape, the debug command-line
// rewriting, and doctor's checks against a host root made by the test.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "base/file_util.h"
#include "cri/ctl/commands.h"
#include "cri/ctl/doctor.h"
#include "cri/ctl/vm_commands.h"

namespace chrys::cri::ctl {
namespace {

TEST(ChrysctlCli, GlobalOptionsComeBeforeTheCommand) {
  auto parsed = ParseGlobal({"--socket", "/x.sock", "--config=/c.yaml", "ps", "--json"}, nullptr);
  ASSERT_TRUE(parsed.ok()) << parsed.error().message();
  EXPECT_EQ(parsed->options.socket, "/x.sock");
  EXPECT_TRUE(parsed->options.socket_explicit);
  EXPECT_EQ(parsed->options.config_path, "/c.yaml");
  EXPECT_TRUE(parsed->options.config_explicit);
  EXPECT_EQ(parsed->rest, (std::vector<std::string>{"ps", "--json"}));

  auto from_env = ParseGlobal({"pods"}, "/env.sock");
  ASSERT_TRUE(from_env.ok());
  EXPECT_EQ(from_env->options.socket, "/env.sock");

  auto missing = ParseGlobal({"--socket"}, nullptr);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("--socket needs a value"), std::string::npos);
}

TEST(ChrysctlCli, EveryCommandHasHelpAndCompletionKnowsItsOptions) {
  CommandTable table = AllCommands();
  for (const char* wanted : {"ps", "inspect", "console", "debug", "gc", "doctor", "completion", "containers"}) {
    ASSERT_EQ(table.count(wanted), 1U) << wanted;
  }
  for (const auto& [name, command] : table) {
    EXPECT_FALSE(command.summary.empty()) << name;
    EXPECT_EQ(command.usage.rfind("Usage: chrysctl ", 0), 0U) << name << ": " << command.usage;
    EXPECT_NE(command.usage.find(" " + name), std::string::npos) << name << ": " << command.usage;
    EXPECT_TRUE(command.run || command.run_offline) << name;
  }
  EXPECT_EQ(OptionsInUsage("Usage: x [--json] [-q|--quiet] [--json] --timeout S"),
            (std::vector<std::string>{"--json", "--quiet", "--timeout", "--help"}))
      << "every command takes --help";
  std::string script = BashCompletion(table);
  EXPECT_NE(script.find("complete -F _chrysctl chrysctl"), std::string::npos) << script;
  EXPECT_NE(script.find("doctor"), std::string::npos);
  EXPECT_NE(script.find("--timeout"), std::string::npos) << "console's options are completed";
}

TEST(ChrysctlCli, NoChrysdIsOneLineNamingTheSocket) {
  testing::internal::CaptureStderr();
  int code = Main({"--socket", "/nonexistent/chrys.sock", "pods"});
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(code, 0);
  EXPECT_NE(err.find("/nonexistent/chrys.sock"), std::string::npos) << err;
  EXPECT_EQ(err.find('\n'), err.size() - 1) << "exactly one line: " << err;
}

TEST(ChrysctlCli, UnknownCommandAndBadFlagsAreRefused) {
  testing::internal::CaptureStderr();
  EXPECT_EQ(Main({"frobnicate"}), 2);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("unknown command 'frobnicate'"), std::string::npos) << err;
  auto parsed = ParseArgs({"--bogus"}, {"--timeout"}, {"--json"});
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().message().find("--bogus"), std::string::npos);
}

TEST(ChrysctlCli, ShellQuoting) {
  EXPECT_EQ(ShellQuote("abc"), "abc");
  EXPECT_EQ(ShellQuote("a b"), "'a b'");
  EXPECT_EQ(ShellQuote("it's"), "'it'\\''s'");
  EXPECT_EQ(ShellQuote(""), "''");
}

TEST(ChrysctlConsole, EscapeSequence) {
  ConsoleEscape escape;
  bool detach = false;
  EXPECT_EQ(escape.Feed("ls\r", &detach), "ls\r");
  EXPECT_FALSE(detach);
  // Ctrl-] then q detaches; what follows is dropped.
  EXPECT_EQ(escape.Feed("a\x1dqzz", &detach), "a");
  EXPECT_TRUE(detach);
  ConsoleEscape split;
  EXPECT_EQ(split.Feed("\x1d", &detach), "");
  EXPECT_FALSE(detach) << "the escape waits for the next key";
  EXPECT_EQ(split.Feed(".", &detach), "");
  EXPECT_TRUE(detach);
  ConsoleEscape literal;
  EXPECT_EQ(literal.Feed("\x1d\x1d", &detach), "\x1d");
  EXPECT_FALSE(detach);
  EXPECT_EQ(literal.Feed("\x1dx", &detach), "\x1dx");
  EXPECT_FALSE(detach);
}

TEST(ChrysctlVm, UptimeAndCommandLine) {
  EXPECT_EQ(FormatUptime(42), "42s");
  EXPECT_EQ(FormatUptime(5 * 60 + 12), "5m12s");
  EXPECT_EQ(FormatUptime(3 * 86400 + 4 * 3600 + 7), "3d4h");
  std::vector<std::string> argv = {"qemu-system-x86_64",
                                   "-netdev",
                                   "tap,id=net0,fds=3:4,vhost=off",
                                   "-device",
                                   "virtio-net-pci,netdev=net0,mq=on",
                                   "-netdev",
                                   "tap,id=net1,fds=5,vhost=off",
                                   "-append",
                                   "console=ttyS0 quiet"};
  EXPECT_EQ(InheritedFds(argv), (std::vector<int>{3, 4, 5}));
  auto by_hand = ReplaceTapFds(argv, {"tap0", "tap1"});
  // fds= becomes the tap's name with one queue per inherited fd; other options stay.
  EXPECT_EQ(by_hand[2], "tap,id=net0,ifname=tap0,script=no,downscript=no,queues=2,vhost=off");
  EXPECT_EQ(by_hand[6], "tap,id=net1,ifname=tap1,script=no,downscript=no,vhost=off");
  std::string text = FormatCommandLine(argv);
  EXPECT_NE(text.find("'console=ttyS0 quiet'"), std::string::npos) << text;
}

class DoctorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/chrys-doctor-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    options_.root = root_;
    options_.run_binaries = false;
  }
  void TearDown() override { (void)base::RemoveTree(root_); }
  void Executable(const std::string& path) {
    ASSERT_TRUE(base::MakeDirs(root_ + path.substr(0, path.rfind('/'))).ok());
    ASSERT_TRUE(base::WriteFileAtomic(root_ + path, "#!/bin/sh\n", 0755).ok());
  }
  const CheckResult* Find(const std::vector<CheckResult>& checks, const std::string& name) {
    for (const auto& c : checks) {
      if (c.name == name) {
        return &c;
      }
    }
    return nullptr;
  }
  std::string root_;
  DoctorOptions options_;
};

TEST_F(DoctorTest, CniConfigAndPlugins) {
  auto none = CheckCni(options_);
  ASSERT_FALSE(none.empty());
  EXPECT_EQ(none[0].level, CheckLevel::kFail);
  EXPECT_NE(none[0].detail.find("/etc/cni/net.d does not exist"), std::string::npos) << none[0].detail;
  EXPECT_TRUE(AnyFailed(none));

  ASSERT_TRUE(base::MakeDirs(root_ + "/etc/cni/net.d").ok());
  ASSERT_TRUE(base::WriteFileAtomic(root_ + "/etc/cni/net.d/10-pods.conflist",
                                    R"({"cniVersion": "1.0.0", "name": "pods",
                                        "plugins": [{"type": "bridge"}, {"type": "portmap"}]})")
                  .ok());
  Executable("/usr/lib/cni/bridge");
  auto checks = CheckCni(options_);
  const CheckResult* bridge = Find(checks, "plugin bridge");
  const CheckResult* portmap = Find(checks, "plugin portmap");
  ASSERT_TRUE(bridge && portmap) << FormatChecks(checks);
  EXPECT_EQ(bridge->level, CheckLevel::kPass);
  EXPECT_EQ(portmap->level, CheckLevel::kFail);
  EXPECT_NE(portmap->detail.find("containernetworking-plugins"), std::string::npos);
  Executable("/opt/cni/bin/portmap");
  EXPECT_FALSE(AnyFailed(CheckCni(options_))) << FormatChecks(CheckCni(options_));
}

TEST_F(DoctorTest, GuestArtifactsAreVerifiedBySha256) {
  auto missing = CheckGuestArtifacts(options_);
  ASSERT_FALSE(missing.empty());
  EXPECT_TRUE(AnyFailed(missing)) << FormatChecks(missing);

  std::string dir = root_ + options_.config.vmm.guest_dir;
  ASSERT_TRUE(base::MakeDirs(dir).ok());
  ASSERT_TRUE(base::WriteFileAtomic(dir + "/vmlinuz", "kernel").ok());
  ASSERT_TRUE(base::WriteFileAtomic(dir + "/initramfs.cpio.lz4", "initramfs").ok());
  // sha256("kernel") is right; the initramfs digest is wrong on purpose.
  ASSERT_TRUE(base::WriteFileAtomic(dir + "/manifest.json",
                                    R"({"kernel": {"file": "vmlinuz",
                      "sha256": "6923dd1bc0460082c5d55a831908c24a282860b7f1cd6c2b79cf1bc8857c639c"},
                      "initramfs": {"file": "initramfs.cpio.lz4", "sha256": "00"}})")
                  .ok());
  auto checks = CheckGuestArtifacts(options_);
  const CheckResult* initramfs = Find(checks, "initramfs");
  ASSERT_NE(initramfs, nullptr) << FormatChecks(checks);
  EXPECT_EQ(initramfs->level, CheckLevel::kFail);
  EXPECT_NE(initramfs->detail.find("sha256"), std::string::npos) << initramfs->detail;
  const CheckResult* kernel = Find(checks, "kernel");
  ASSERT_NE(kernel, nullptr) << FormatChecks(checks);
  EXPECT_EQ(kernel->level, CheckLevel::kPass) << kernel->detail;
}

TEST_F(DoctorTest, KvmVerdictSaysWhyAndFollowsAccel) {
  // No /dev/kvm under the fake root, a PVM host's module: unusable, QEMU falls back to TCG (WARN, not FAIL).
  ASSERT_TRUE(base::MakeDirs(root_ + "/sys/module/kvm_pvm").ok());
  options_.config.vmm.accel = "auto";
  auto checks = CheckKvm(options_);
  const CheckResult* kvm = Find(checks, "/dev/kvm");
  ASSERT_NE(kvm, nullptr) << FormatChecks(checks);
  EXPECT_EQ(kvm->level, CheckLevel::kWarn);
  EXPECT_NE(kvm->detail.find("does not exist"), std::string::npos) << kvm->detail;
  EXPECT_NE(kvm->detail.find("PVM"), std::string::npos) << kvm->detail;
  EXPECT_NE(kvm->detail.find("TCG"), std::string::npos) << kvm->detail;
  // accel=kvm makes the same host a failure that tells what to change.
  options_.config.vmm.accel = "kvm";
  checks = CheckKvm(options_);
  ASSERT_TRUE(AnyFailed(checks)) << FormatChecks(checks);
  EXPECT_NE(FormatChecks(checks).find("vmm.accel"), std::string::npos) << FormatChecks(checks);
  // accel=tcg never touches KVM.
  options_.config.vmm.accel = "tcg";
  checks = CheckKvm(options_);
  ASSERT_EQ(checks.size(), 1U);
  EXPECT_EQ(checks[0].level, CheckLevel::kPass) << checks[0].detail;
}

TEST_F(DoctorTest, FirmwareAndDaemonSocket) {
  auto firmware = CheckFirmware(options_);
  ASSERT_EQ(firmware.size(), 2U);
  EXPECT_EQ(firmware[0].level, CheckLevel::kWarn) << firmware[0].detail;
  EXPECT_NE(firmware[0].detail.find("install ovmf"), std::string::npos) << firmware[0].detail;
  ASSERT_TRUE(base::MakeDirs(root_ + "/usr/share/OVMF").ok());
  ASSERT_TRUE(base::WriteFileAtomic(root_ + "/usr/share/OVMF/OVMF_CODE_4M.fd", "code").ok());
  ASSERT_TRUE(base::WriteFileAtomic(root_ + "/usr/share/OVMF/OVMF_VARS_4M.fd", "vars").ok());
  for (const auto& check : CheckFirmware(options_)) {
    EXPECT_EQ(check.level, CheckLevel::kPass) << check.detail;
  }
  // No chrysd: a warning naming the socket it looked for (doctor is useful before chrysd runs).
  auto daemon = CheckDaemon(options_);
  ASSERT_EQ(daemon.size(), 1U);
  EXPECT_EQ(daemon[0].level, CheckLevel::kWarn);
  EXPECT_NE(daemon[0].detail.find(root_ + options_.config.socket), std::string::npos) << daemon[0].detail;
}

TEST_F(DoctorTest, ReportFormatsAndExitStatus) {
  std::vector<CheckResult> checks = {{"kvm", "/dev/kvm", CheckLevel::kWarn, "not usable"},
                                     {"disk", "state_dir", CheckLevel::kPass, "10 GiB free"}};
  EXPECT_FALSE(AnyFailed(checks));
  std::string text = FormatChecks(checks);
  EXPECT_NE(text.find("WARN"), std::string::npos) << text;
  EXPECT_NE(text.find("PASS"), std::string::npos) << text;
  auto j = ChecksToJson(checks);
  EXPECT_EQ(j["ok"], true);
  EXPECT_EQ(j["checks"].size(), 2U);
  checks.push_back({"cni", "conf_dir", CheckLevel::kFail, "missing"});
  EXPECT_TRUE(AnyFailed(checks));
  EXPECT_EQ(ChecksToJson(checks)["ok"], false);
}

}  // namespace
}  // namespace chrys::cri::ctl
