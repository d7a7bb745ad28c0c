// Confidential pods through chrysd's CRI socket: chrysalis-snp/-tdx refused with what this host lacks, and one
// chrysalis-cvm pod booting the HAL disk image (OVMF -> GRUB -> verified root) on the pod network. One VM boot
// under TCG: about a minute.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "e2e/pods/pod_env.h"
#include "guest/hal/hal_builder.h"

namespace chrys::e2e {
namespace {

using Clock = std::chrono::steady_clock;

class ConfidentialPodTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/var/tmp/chrys-cvm-e2e-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    image_root_ = tmpl;
    guest::hal::HalImageConfig config;
    config.output_dir = image_root_ + "/hal";
    config.agent_binary = CHRYS_HAL_AGENT_BINARY;
    config.cocos_mib = 256;
    auto built = guest::hal::BuildHalImage(config);
    ASSERT_TRUE(built.ok()) << built.error().message();
    hal_dir_ = config.output_dir;
    auto env = PodEnv::Create({"--set", "confidential.hal_dir=" + hal_dir_, "--set",
                               "confidential.boot_timeout_seconds=170", "--set", "confidential.min_memory_mib=768"});
    ASSERT_TRUE(env.ok()) << env.error().message();
    env_ = std::move(env).value().release();
  }

  static void TearDownTestSuite() {
    delete env_;
    env_ = nullptr;
    if (!image_root_.empty()) {
      (void)base::RemoveTree(image_root_);
    }
  }

  void SetUp() override {
    if (env_ == nullptr) {
      GTEST_SKIP() << "no test environment";
    }
  }

  // PodSandboxStatus' verbose info as JSON.
  static nlohmann::json VerboseInfo(const std::string& pod_id) {
    v1::PodSandboxStatusRequest req;
    req.set_pod_sandbox_id(pod_id);
    req.set_verbose(true);
    v1::PodSandboxStatusResponse resp;
    if (!env_->runtime().PodSandboxStatus(Ctx().get(), req, &resp).ok() || !resp.info().contains("info")) {
      return nlohmann::json::object();
    }
    return nlohmann::json::parse(resp.info().at("info"), nullptr, false);
  }

  static PodEnv* env_;
  static std::string image_root_;
  static std::string hal_dir_;
};

PodEnv* ConfidentialPodTest::env_ = nullptr;
std::string ConfidentialPodTest::image_root_;
std::string ConfidentialPodTest::hal_dir_;

TEST_F(ConfidentialPodTest, TeeHandlersAreRefusedNamingWhatTheHostLacks) {
  HostTraces before = env_->Traces();
  for (const auto& [handler, needle] :
       std::vector<std::pair<std::string, std::string>>{{"chrysalis-snp", "sev_snp=Y"}, {"chrysalis-tdx", "tdx=Y"}}) {
    v1::RunPodSandboxRequest req;
    *req.mutable_config() = env_->PodConfig("tee-" + handler.substr(10));
    req.set_runtime_handler(handler);
    v1::RunPodSandboxResponse resp;
    auto status = env_->runtime().RunPodSandbox(Ctx().get(), req, &resp);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << handler << ": " << status.error_message();
    EXPECT_NE(status.error_message().find(needle), std::string::npos) << status.error_message();
    EXPECT_NE(status.error_message().find(handler), std::string::npos) << status.error_message();
  }
  EXPECT_EQ(NewTraces(before, env_->Traces()), "");
}

TEST_F(ConfidentialPodTest, CvmPodBootsTheHalDiskOnThePodNetworkAndLeavesTheImageUntouched) {
  struct stat disk_before {};
  ASSERT_EQ(::stat((hal_dir_ + "/disk.img").c_str(), &disk_before), 0);
  auto disk_hash = [&] {
    base::CommandSpec spec;
    spec.argv = {"sha256sum", hal_dir_ + "/disk.img"};
    auto r = base::RunCommand(spec);
    return r.ok() ? r->stdout_data.substr(0, 64) : std::string("?");
  };
  std::string hash_before = disk_hash();
  HostTraces before = env_->Traces();

  v1::PodSandboxConfig config = env_->PodConfig("cvm-pod");
  auto pod = env_->RunPod(config, "chrysalis-cvm");
  ASSERT_TRUE(pod.ok()) << pod.error().message() << "\nchrysd: " << base::Tail(env_->chrysd().Output(), 3000);
  auto status = env_->PodStatus(*pod);
  ASSERT_TRUE(status.ok()) << status.error().message();
  EXPECT_EQ(status->state(), v1::SANDBOX_READY);
  EXPECT_EQ(status->runtime_handler(), "chrysalis-cvm");
  std::string ip = status->network().ip();
  EXPECT_FALSE(ip.empty());

  // The VM boots the pod's own overlay of disk.img, with its own OVMF vars.
  std::string vm_dir = env_->chrysd().state_dir() + "/cvm/" + *pod;
  EXPECT_EQ(::access((vm_dir + "/disk.qcow2").c_str(), F_OK), 0);
  EXPECT_EQ(::access((vm_dir + "/OVMF_VARS.fd").c_str(), F_OK), 0);
  nlohmann::json info = VerboseInfo(*pod);
  ASSERT_TRUE(info.contains("vm")) << info.dump();
  pid_t vmm = info["vm"].value("pid", 0);
  auto cmdline = base::ReadFile("/proc/" + std::to_string(vmm) + "/cmdline", 1 << 16);
  ASSERT_TRUE(cmdline.ok());
  EXPECT_NE(cmdline->find("scsi-hd"), std::string::npos);
  EXPECT_NE(cmdline->find(vm_dir + "/disk.qcow2"), std::string::npos);
  EXPECT_NE(cmdline->find("mount_tag=env_share"), std::string::npos);

  // The console shows the verified, encrypted boot and the agent taking over in HAL mode.
  std::string console_path = info["vm"].value("consoleLog", "");
  auto console = base::ReadFile(console_path, 8 << 20);
  ASSERT_TRUE(console.ok()) << console_path;
  size_t report_at = console->find("CHRYS-HAL-REPORT ");
  ASSERT_NE(report_at, std::string::npos) << base::Tail(*console, 3000);
  auto report = nlohmann::json::parse(console->substr(report_at + 17, console->find('\n', report_at) - report_at - 17),
                                      nullptr, false);
  ASSERT_TRUE(report.is_object()) << console->substr(report_at, 400);
  EXPECT_EQ(report.value("root_device", ""), "/dev/mapper/root_verity");
  EXPECT_TRUE(report.value("root_ro", false));
  EXPECT_EQ(report.value("cocos_dm_uuid", "").rfind("CRYPT-LUKS2-", 0), 0u);
  EXPECT_TRUE(report.value("key_gone", false));
  EXPECT_TRUE(report.value("env_share", false));
  EXPECT_TRUE(report.value("certs_share", false));
  EXPECT_NE(console->find("CHRYS-HAL-MARK agent-exec"), std::string::npos);

  // agent.json gave the guest its address: the pod answers on the pod network.
  base::CommandSpec ping;
  ping.argv = {"/bin/busybox", "ping", "-c", "1", "-W", "5", ip};  // busybox-static: an install dependency
  ping.timeout = std::chrono::seconds(20);
  bool answered = false;
  for (int attempt = 0; attempt < 5 && !answered; ++attempt) {
    auto r = base::RunCommand(ping);
    answered = r.ok() && r->success();
  }
  EXPECT_TRUE(answered) << "no answer from the pod at " << ip << "\n" << base::Tail(*console, 2000);

  ASSERT_TRUE(env_->StopPod(*pod).ok());
  EXPECT_NE(::access((vm_dir + "/disk.qcow2").c_str(), F_OK), 0) << "the overlay outlived the VM";
  ASSERT_TRUE(env_->RemovePod(*pod).ok());
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (vmm > 0 && ::kill(vmm, 0) == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_NE(::kill(vmm, 0), 0) << "QEMU " << vmm << " still runs";
  EXPECT_NE(::access(vm_dir.c_str(), F_OK), 0);
  EXPECT_EQ(NewTraces(before, env_->Traces()), "");

  // No pod ever writes the shared image.
  struct stat disk_after {};
  ASSERT_EQ(::stat((hal_dir_ + "/disk.img").c_str(), &disk_after), 0);
  EXPECT_EQ(disk_after.st_mtim.tv_sec, disk_before.st_mtim.tv_sec);
  EXPECT_EQ(disk_hash(), hash_before);
}

}  // namespace
}  // namespace chrys::e2e
