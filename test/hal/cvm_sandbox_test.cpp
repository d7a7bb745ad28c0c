// The confidential pods' Vmm: launch plan round trip, the launch configuration derived from a sandbox spec, and
// the choice between HAL disk boot and microVM boot by the presence of a plan.
#include "runtime/confidential/cvm_sandbox.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>

#include "base/file_util.h"

namespace chrys::runtime::confidential {
namespace {

class CvmSandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/chrys-cvm-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_TRUE(base::WriteFileAtomic(dir_ + "/vmlinuz", "kernel").ok());
  }
  void TearDown() override { (void)base::RemoveTree(dir_); }

  CvmPlan Plan() const {
    CvmPlan p;
    p.disk_image = dir_ + "/hal/disk.img";
    p.vm_dir = dir_ + "/cvm/pod1";
    p.ovmf_code = "/usr/share/OVMF/OVMF_CODE_4M.fd";
    p.ovmf_vars = "/usr/share/OVMF/OVMF_VARS_4M.fd";
    p.env_share_dir = dir_ + "/pods/pod1/env";
    p.certs_share_dir = dir_ + "/pods/pod1/certs";
    p.min_memory_mib = 1024;
    return p;
  }

  VmLaunchSpec Spec() const {
    VmLaunchSpec s;
    s.sandbox_id = "pod1";
    s.kernel_path = dir_ + "/vmlinuz";
    s.vcpus = 2;
    s.memory_mib = 640;
    s.run_dir = dir_ + "/run/pod1";
    s.console_log_path = dir_ + "/state/pod1/console.log";
    return s;
  }

  std::string dir_;
};

bool HasPair(const std::vector<std::string>& argv, const std::string& flag, const std::string& value) {
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == flag && argv[i + 1] == value) {
      return true;
    }
  }
  return false;
}

TEST_F(CvmSandboxTest, PlanSurvivesTheRoundTripAndIncompletePlansAreRefused) {
  CvmPlan plan = Plan();
  plan.tee = TeeKind::kTdx;
  plan.firmware_bios = "/fw/tdvf.fd";
  plan.boot_timeout_seconds = 123;
  std::string path = CvmPlanPath(dir_ + "/cvm", "pod1");
  EXPECT_EQ(path, dir_ + "/cvm/pod1/plan.json");
  ASSERT_TRUE(SaveCvmPlan(plan, path).ok());
  auto loaded = LoadCvmPlan(path);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  EXPECT_EQ(loaded->tee, TeeKind::kTdx);
  EXPECT_EQ(loaded->disk_image, plan.disk_image);
  EXPECT_EQ(loaded->vm_dir, plan.vm_dir);
  EXPECT_EQ(loaded->firmware_bios, "/fw/tdvf.fd");
  EXPECT_EQ(loaded->env_share_dir, plan.env_share_dir);
  EXPECT_EQ(loaded->boot_timeout_seconds, 123);

  ASSERT_TRUE(base::WriteFileAtomic(path, R"({"tee":"none","disk_image":"/d.img"})").ok());
  EXPECT_FALSE(LoadCvmPlan(path).ok());
  ASSERT_TRUE(base::WriteFileAtomic(path, "not json").ok());
  EXPECT_FALSE(LoadCvmPlan(path).ok());
}

TEST_F(CvmSandboxTest, LaunchConfigBootsTheOverlayWithTheQemuVmmSocketsAndTheTapQueues) {
  VmLaunchSpec spec = Spec();
  spec.interfaces.push_back({{10, 11}, "02:00:00:00:00:01", 1500});
  spec.interfaces.push_back({{12}, "02:00:00:00:00:02", 1500});
  CvmLaunchConfig c = CvmLaunchConfigFor(Plan(), spec, "/usr/bin/qemu-system-x86_64", "tcg");
  EXPECT_EQ(c.tee, TeeKind::kNone);
  EXPECT_EQ(c.memory_mib, 1024u);  // the plan's floor over the pod's 640
  EXPECT_EQ(c.vcpus, 2);
  EXPECT_EQ(c.disk_image, dir_ + "/cvm/pod1/disk.qcow2");
  EXPECT_EQ(c.disk_format, "qcow2");
  EXPECT_EQ(c.ovmf_vars, dir_ + "/cvm/pod1/OVMF_VARS.fd");
  EXPECT_EQ(c.agent_serial_socket, dir_ + "/run/pod1/agent.sock");
  EXPECT_EQ(c.qmp_socket, dir_ + "/run/pod1/qmp.sock");

  auto argv = BuildCvmQemuArgs(c);
  ASSERT_TRUE(argv.ok()) << argv.error().message();
  EXPECT_TRUE(HasPair(*argv, "-drive", "file=" + dir_ + "/cvm/pod1/disk.qcow2,if=none,id=disk0,format=qcow2"));
  EXPECT_TRUE(HasPair(*argv, "-netdev", "tap,id=net0,fds=3:4,vhost=off"));
  EXPECT_TRUE(HasPair(*argv, "-netdev", "tap,id=net1,fds=5,vhost=off"));
  EXPECT_TRUE(std::any_of(argv->begin(), argv->end(), [](const std::string& a) {
    return a.find("netdev=net0") != std::string::npos &&
           a.find("mac=02:00:00:00:00:01,mq=on,vectors=6") != std::string::npos;
  }));
  EXPECT_TRUE(HasPair(*argv, "-serial", "file:" + dir_ + "/state/pod1/console.log"));
  EXPECT_TRUE(HasPair(*argv, "-qmp", "unix:" + dir_ + "/run/pod1/qmp.sock,server=on,wait=off"));
  EXPECT_TRUE(HasPair(*argv, "-device", "virtserialport,bus=vser0.0,chardev=agent,name=chrys.agent"));
  EXPECT_TRUE(HasPair(*argv, "-fsdev", "local,id=env_fs,path=" + dir_ + "/pods/pod1/env,security_model=mapped"));
}

TEST_F(CvmSandboxTest, TeeGuestsNeedKvmAndTheirFirmware) {
  CvmPlan plan = Plan();
  plan.tee = TeeKind::kSevSnp;
  plan.firmware_bios = "/fw/snp.fd";
  CvmLaunchConfig c = CvmLaunchConfigFor(plan, Spec(), "qemu-system-x86_64", "kvm");
  EXPECT_TRUE(c.ovmf_code.empty());  // SEV-SNP boots -bios, no pflash vars
  auto argv = BuildCvmQemuArgs(c);
  ASSERT_TRUE(argv.ok()) << argv.error().message();
  EXPECT_TRUE(HasPair(*argv, "-bios", "/fw/snp.fd"));

  QemuConfig qemu;
  qemu.accel = "tcg";
  CvmVmm vmm(qemu, plan);
  auto refused = vmm.CommandLine(Spec());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), base::ErrorCode::kFailedPrecondition);
  EXPECT_NE(refused.error().message().find("need KVM"), std::string::npos);
}

TEST_F(CvmSandboxTest, APlanFileTurnsAQemuSandboxIntoAHalDiskBoot) {
  QemuConfig qemu;
  qemu.accel = "tcg";
  std::string plans = dir_ + "/cvm";
  auto vmm = MakeQemuOrCvmVmm(qemu, plans);
  auto micro = vmm->CommandLine(Spec());
  ASSERT_TRUE(micro.ok()) << micro.error().message();
  EXPECT_NE(std::find(micro->begin(), micro->end(), "-kernel"), micro->end());

  ASSERT_TRUE(SaveCvmPlan(Plan(), CvmPlanPath(plans, "pod1")).ok());
  auto hal = vmm->CommandLine(Spec());
  ASSERT_TRUE(hal.ok()) << hal.error().message();
  EXPECT_EQ(std::find(hal->begin(), hal->end(), "-kernel"), hal->end());
  EXPECT_TRUE(HasPair(*hal, "-device", "scsi-hd,drive=disk0,bus=scsi0.0"));

  // A confidential VM takes no host disks: images are pulled inside the guest.
  CvmVmm cvm(qemu, Plan());
  auto plugged = cvm.HotplugDisk({"layer1", dir_ + "/vmlinuz", true}, std::chrono::seconds(1));
  EXPECT_EQ(plugged.error().code(), base::ErrorCode::kUnimplemented);
}

}  // namespace
}  // namespace chrys::runtime::confidential
