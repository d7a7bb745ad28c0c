// chrysd's side of confidential pods: handler checks against a probed host, agent.json, the per-pod plan.
#include "cri/confidential_pods.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include "base/file_util.h"
#include "runtime/confidential/cvm_sandbox.h"
#include "test/hal/agent_json_golden.h"

namespace chrys::cri {
namespace {

using runtime::confidential::AssembleReport;
using runtime::confidential::ConfidentialHostReport;

::chrys::agent::v1::SetupSandboxRequest GoldenSetup() {
  ::chrys::agent::v1::SetupSandboxRequest s;
  s.set_hostname("web-0");
  s.mutable_dns()->add_servers("10.96.0.10");
  s.mutable_dns()->add_searches("default.svc.cluster.local");
  s.mutable_dns()->add_options("ndots:5");
  auto* nic = s.add_interfaces();
  nic->set_mac("02:42:0a:58:00:07");
  nic->set_name("eth0");
  nic->set_mtu(1500);
  auto* ip = nic->add_addresses();
  ip->set_address("10.88.0.7");
  ip->set_prefix_length(16);
  auto* route = s.add_routes();
  route->set_destination("0.0.0.0/0");
  route->set_gateway("10.88.0.1");
  route->set_device("eth0");
  (*s.mutable_sysctls())["net.ipv4.ip_unprivileged_port_start"] = "0";
  return s;
}

class ConfidentialPodsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/chrys-cvm-cri-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    config_.state_dir = dir_ + "/state";
    config_.run_dir = dir_ + "/run";
    config_.confidential.hal_dir = dir_ + "/hal";
  }
  void TearDown() override { (void)base::RemoveTree(dir_); }

  std::string dir_;
  Config config_;
};

TEST_F(ConfidentialPodsTest, AgentJsonIsTheDocumentedFormat) {
  EXPECT_EQ(RenderAgentJson("pod1", GoldenSetup()), test::kGoldenAgentJson);
}

TEST_F(ConfidentialPodsTest, HandlersAreCheckedAgainstWhatTheHostHas) {
  EXPECT_TRUE(IsConfidentialHandler("chrysalis-cvm"));
  EXPECT_TRUE(IsConfidentialHandler("chrysalis-snp"));
  EXPECT_FALSE(IsConfidentialHandler("chrysalis-qemu"));
  // This machine: QEMU 7.2, no SEV-SNP/TDX, OVMF installed.
  HostProbeFn here = [] {
    return AssembleReport(false, false, false, std::string("QEMU emulator version 7.2.22\n"), std::nullopt,
                          {{"OVMF code", "/ovmf/code", true}, {"OVMF vars template", "/ovmf/vars", true}});
  };
  auto snp = CheckConfidentialHandler(config_, "chrysalis-snp", here);
  ASSERT_FALSE(snp.ok());
  EXPECT_EQ(snp.error().code(), base::ErrorCode::kFailedPrecondition);
  EXPECT_NE(snp.error().message().find("sev_snp=Y"), std::string::npos) << snp.error().message();
  EXPECT_NE(snp.error().message().find("needs QEMU >= 9.1"), std::string::npos);
  auto tdx = CheckConfidentialHandler(config_, "chrysalis-tdx", here);
  ASSERT_FALSE(tdx.ok());
  EXPECT_NE(tdx.error().message().find("needs QEMU >= 10.1"), std::string::npos) << tdx.error().message();
  EXPECT_EQ(tdx.error().message().find("SEV-SNP"), std::string::npos) << "TDX pods are not refused for SNP reasons";

  // chrysalis-cvm runs here once the HAL image exists.
  auto no_image = CheckConfidentialHandler(config_, "chrysalis-cvm", here);
  ASSERT_FALSE(no_image.ok());
  EXPECT_NE(no_image.error().message().find("chrys-hal-build"), std::string::npos);
  ASSERT_TRUE(base::MakeDirs(config_.confidential.hal_dir).ok());
  ASSERT_TRUE(base::WriteFileAtomic(config_.confidential.hal_dir + "/disk.img", "disk").ok());
  EXPECT_TRUE(CheckConfidentialHandler(config_, "chrysalis-cvm", here).ok());
}

TEST_F(ConfidentialPodsTest, PreparedPodHasItsSharesAndPlanAndReleaseRemovesThePlan) {
  std::string pod_dir = config_.run_dir + "/pods/pod1";
  ASSERT_TRUE(PrepareConfidentialPod(config_, "pod1", "chrysalis-cvm", pod_dir, GoldenSetup()).ok());
  EXPECT_EQ(*base::ReadFile(pod_dir + "/env/agent.json"), test::kGoldenAgentJson);
  EXPECT_EQ(*base::ReadFile(pod_dir + "/env/init.conf"), "mode=agent\n");
  EXPECT_EQ(::access((pod_dir + "/certs").c_str(), F_OK), 0);
  auto plan =
      runtime::confidential::LoadCvmPlan(runtime::confidential::CvmPlanPath(ConfidentialPlansDir(config_), "pod1"));
  ASSERT_TRUE(plan.ok()) << plan.error().message();
  EXPECT_EQ(plan->disk_image, config_.confidential.hal_dir + "/disk.img");
  EXPECT_EQ(plan->vm_dir, config_.state_dir + "/cvm/pod1");
  EXPECT_EQ(plan->env_share_dir, pod_dir + "/env");
  EXPECT_EQ(plan->tee, runtime::confidential::TeeKind::kNone);
  ASSERT_TRUE(ReleaseConfidentialPod(config_, "pod1").ok());
  EXPECT_NE(::access((config_.state_dir + "/cvm/pod1").c_str(), F_OK), 0);
  EXPECT_TRUE(ReleaseConfidentialPod(config_, "pod1").ok());
}

}  // namespace
}  // namespace chrys::cri
