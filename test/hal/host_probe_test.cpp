// The TEE host probe: sysfs flags, QEMU version and object list parsing, and what doctor says is missing.
#include "runtime/confidential/host_probe.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include "base/file_util.h"
#include "runtime/confidential/ovmf_vars.h"

namespace chrys::runtime::confidential {
namespace {

TEST(HostProbeTest, ParsesKvmBooleanParameters) {
  EXPECT_TRUE(ParseKvmBoolParam("Y\n"));
  EXPECT_TRUE(ParseKvmBoolParam("1"));
  EXPECT_FALSE(ParseKvmBoolParam("N\n"));
  EXPECT_FALSE(ParseKvmBoolParam("0"));
  EXPECT_FALSE(ParseKvmBoolParam(""));
}

TEST(HostProbeTest, ParsesQemuVersions) {
  auto v = ParseQemuVersion("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c)");
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(v->ToString(), "7.2.22");
  EXPECT_FALSE(v->AtLeast(9, 1));
  auto v91 = ParseQemuVersion("QEMU emulator version 9.1.0\n");
  ASSERT_TRUE(v91.has_value());
  EXPECT_TRUE(v91->AtLeast(9, 1));
  EXPECT_FALSE(v91->AtLeast(10, 1));
  auto v10 = ParseQemuVersion("QEMU emulator version 10.1\n");
  ASSERT_TRUE(v10.has_value());
  EXPECT_TRUE(v10->AtLeast(10, 1));
  EXPECT_FALSE(ParseQemuVersion("qemu-img version 7.2.0").has_value());
  EXPECT_FALSE(ParseQemuVersion("QEMU emulator version x.y").has_value());
}

TEST(HostProbeTest, ParsesTheObjectList) {
  auto objects = ParseObjectHelp("List of user creatable objects:\n  authz-list\n  sev-guest\n  sev-snp-guest\n");
  EXPECT_EQ(objects.count("sev-snp-guest"), 1u);
  EXPECT_EQ(objects.count("sev-guest"), 1u);
  EXPECT_EQ(objects.count("List"), 0u);
  EXPECT_EQ(objects.count("tdx-guest"), 0u);
}

TEST(HostProbeTest, ObjectListWinsOverTheVersion) {
  // A 9.2 build without SNP compiled in: the version alone would claim support.
  auto report = AssembleReport(true, true, false, std::string("QEMU emulator version 9.2.0\n"),
                               std::string("List of user creatable objects:\n  sev-guest\n"), {});
  EXPECT_TRUE(report.qemu_objects_listed);
  EXPECT_FALSE(report.qemu_sev_snp_guest);
  EXPECT_FALSE(report.SevSnpUsable());
}

TEST(HostProbeTest, FallsBackToTheVersionWhenObjectsCannotBeListed) {
  auto old_qemu = AssembleReport(false, false, false, std::string("QEMU emulator version 7.2.22\n"), std::nullopt, {});
  EXPECT_FALSE(old_qemu.qemu_sev_snp_guest);
  EXPECT_FALSE(old_qemu.qemu_tdx_guest);
  auto problems = old_qemu.Problems();
  bool names_version = false;
  for (const std::string& p : problems) {
    names_version |= p.find("7.2.22") != std::string::npos && p.find(">= 9.1") != std::string::npos;
  }
  EXPECT_TRUE(names_version);
  auto new_qemu = AssembleReport(true, true, true, std::string("QEMU emulator version 10.1.0\n"), std::nullopt, {});
  EXPECT_TRUE(new_qemu.qemu_sev_snp_guest);
  EXPECT_TRUE(new_qemu.qemu_tdx_guest);
  EXPECT_TRUE(new_qemu.SevSnpUsable());
  EXPECT_TRUE(new_qemu.TdxUsable());
  EXPECT_TRUE(new_qemu.Problems().empty());
}

TEST(HostProbeTest, ProblemsForEachKindOfPodNameWhatThatPodLacks) {
  // A TDX-less, SNP-capable host whose QEMU is new enough for both, with an IGVM file but no TDVF.
  auto report = AssembleReport(true, true, false, std::string("QEMU emulator version 10.1.0\n"), std::nullopt,
                               {{"OVMF code", "/ovmf/code.fd", true},
                                {"OVMF vars template", "/ovmf/vars.fd", false},
                                {"IGVM file", "/fw/snp.igvm", true}});
  EXPECT_TRUE(report.ProblemsFor(TeeKind::kSevSnp).empty());
  auto tdx = report.ProblemsFor(TeeKind::kTdx);
  ASSERT_EQ(tdx.size(), 2u);
  EXPECT_NE(tdx[0].find("kvm_intel does not report tdx=Y"), std::string::npos);
  EXPECT_NE(tdx[1].find("confidential.tdx_firmware"), std::string::npos);
  auto plain = report.ProblemsFor(TeeKind::kNone);
  ASSERT_EQ(plain.size(), 1u);
  EXPECT_NE(plain[0].find("OVMF vars template not found at /ovmf/vars.fd"), std::string::npos);

  // This machine's situation: QEMU 7.2, no TEE, no SNP firmware.
  auto old = AssembleReport(false, false, false, std::string("QEMU emulator version 7.2.22\n"), std::nullopt, {});
  auto snp = old.ProblemsFor(TeeKind::kSevSnp);
  ASSERT_EQ(snp.size(), 3u);
  EXPECT_NE(snp[0].find("sev_snp=Y"), std::string::npos);
  EXPECT_NE(snp[1].find("QEMU 7.2.22 has no sev-snp-guest object (needs QEMU >= 9.1)"), std::string::npos);
  EXPECT_NE(snp[2].find("confidential.snp_firmware"), std::string::npos);
}

TEST(HostProbeTest, ReadsSysfsAndDevFromTheGivenRoot) {
  char tmpl[] = "/tmp/hal-probe-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string root = tmpl;
  ASSERT_TRUE(base::MakeDirs(root + "/sys/module/kvm_amd/parameters").ok());
  ASSERT_TRUE(base::MakeDirs(root + "/sys/module/kvm_intel/parameters").ok());
  ASSERT_TRUE(base::MakeDirs(root + "/dev").ok());
  ASSERT_TRUE(base::MakeDirs(root + "/fw").ok());
  ASSERT_TRUE(base::WriteFileAtomic(root + "/sys/module/kvm_amd/parameters/sev_snp", "Y\n").ok());
  ASSERT_TRUE(base::WriteFileAtomic(root + "/sys/module/kvm_intel/parameters/tdx", "N\n").ok());
  ASSERT_TRUE(base::WriteFileAtomic(root + "/dev/sev", "").ok());
  ASSERT_TRUE(base::WriteFileAtomic(root + "/fw/OVMF_CODE.fd", "x").ok());
  ProbeOptions options;
  options.root = root;
  options.run_qemu = false;
  options.ovmf_code = "/fw/OVMF_CODE.fd";
  options.ovmf_vars = "/fw/OVMF_VARS.fd";
  options.igvm_file = "/fw/coconut.igvm";
  auto report = ProbeConfidentialHost(options);
  EXPECT_TRUE(report.sev_snp_kvm);
  EXPECT_TRUE(report.sev_device);
  EXPECT_FALSE(report.tdx_kvm);
  EXPECT_FALSE(report.qemu_found);
  ASSERT_EQ(report.files.size(), 3u);
  EXPECT_TRUE(report.files[0].present);
  EXPECT_FALSE(report.files[1].present);
  EXPECT_FALSE(report.files[2].present);
  std::string text = report.Describe();
  EXPECT_NE(text.find("kvm_amd sev_snp: yes"), std::string::npos) << text;
  EXPECT_NE(text.find("/fw/coconut.igvm (missing)"), std::string::npos) << text;
  ASSERT_TRUE(base::RemoveTree(root).ok());
}

TEST(OvmfVarsTest, EachVmGetsItsOwnCopyAndKeepsItOnAdoption) {
  char tmpl[] = "/tmp/hal-vars-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  ASSERT_TRUE(base::WriteFileAtomic(dir + "/template.fd", std::string(4096, 'T')).ok());
  ASSERT_TRUE(EnsurePerVmOvmfVars(dir + "/template.fd", dir + "/vm1.fd").ok());
  auto copy = base::ReadFile(dir + "/vm1.fd");
  ASSERT_TRUE(copy.ok());
  EXPECT_EQ(*copy, std::string(4096, 'T'));
  // The VM wrote variables; a second call (adoption) must not reset them.
  ASSERT_TRUE(base::WriteFileAtomic(dir + "/vm1.fd", std::string(4096, 'V')).ok());
  ASSERT_TRUE(EnsurePerVmOvmfVars(dir + "/template.fd", dir + "/vm1.fd").ok());
  EXPECT_EQ(*base::ReadFile(dir + "/vm1.fd"), std::string(4096, 'V'));
  ASSERT_TRUE(base::WriteFileAtomic(dir + "/bad.fd", "short").ok());
  EXPECT_FALSE(EnsurePerVmOvmfVars(dir + "/template.fd", dir + "/bad.fd").ok());
  EXPECT_FALSE(EnsurePerVmOvmfVars(dir + "/missing.fd", dir + "/vm2.fd").ok());
  ASSERT_TRUE(base::RemoveTree(dir).ok());
}

TEST(HostProbeTest, ThisHostsQemuIsRecognised) {
  ProbeOptions options;
  auto report = ProbeConfidentialHost(options);
  if (!report.qemu_found) {
    GTEST_SKIP() << "qemu-system-x86_64 not installed";
  }
  ASSERT_TRUE(report.qemu_version.has_value());
  EXPECT_TRUE(report.qemu_objects_listed);
  // The answer must agree with the version rule for this QEMU, whichever it is.
  EXPECT_EQ(report.qemu_tdx_guest, report.qemu_tdx_guest && report.qemu_version->AtLeast(10, 1));
}

}  // namespace
}  // namespace chrys::runtime::confidential
