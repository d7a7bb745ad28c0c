// e2e: builds the disk-backed HAL image and boots it under QEMU (TCG): OVMF -> GRUB -> kernel -> initramfs
// -> switch_root, then checks from the root init's console report that the root is the dm-verity mapping
// (read-only), /cocos is a LUKS2 cocos_crypt mapping with its key gone, and both 9P shares are mounted.
// Tamper cases: a flipped byte in the root partition and a wrong roothash= stop the boot before switch_root.
// Two boots get two different keys: what boot 1 wrote to /cocos is gone (and was never plaintext on disk).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <random>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "e2e/hal/hal_vm.h"

namespace chrys::e2e::hal {
namespace {

using guest::hal::HalArtifacts;
using guest::hal::HalImageConfig;

constexpr std::chrono::seconds kBootTimeout{300};

std::string RandomToken() {
  std::random_device rd;
  char buf[33];
  std::snprintf(buf, sizeof(buf), "%08x%08x%08x%08x", rd(), rd(), rd(), rd());
  return buf;
}

HalImageConfig ImageConfig(const std::string& out) {
  HalImageConfig c;
  c.output_dir = out;
#ifdef CHRYS_HAL_AGENT_BINARY
  if (::access(CHRYS_HAL_AGENT_BINARY, X_OK) == 0) {
    c.agent_binary = CHRYS_HAL_AGENT_BINARY;
  }
#endif
  c.cocos_mib = 256;  // small and sparse: tests do not need the 1 GiB default
  return c;
}

class HalBootTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) {
      return;
    }
    char tmpl[] = "/var/tmp/chrys-hal-e2e-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = new std::string(tmpl);
    auto built = guest::hal::BuildHalImage(ImageConfig(*root_ + "/image"));
    ASSERT_TRUE(built.ok()) << built.error().message();
    image_ = new HalArtifacts(*built);
  }
  static void TearDownTestSuite() {
    if (root_ != nullptr) {
      (void)base::RemoveTree(*root_);
    }
    delete root_;
    delete image_;
    root_ = nullptr;
    image_ = nullptr;
  }
  void SetUp() override {
    if (::geteuid() != 0) {
      GTEST_SKIP() << "needs root (image files owned by root, QEMU)";
    }
    ASSERT_NE(image_, nullptr) << "image build failed";
  }

  // Boots `vm`; the console goes to <vm.dir>/console.log as well.
  VmRun Boot(const VmDir& vm, bool direct, const std::string& roothash) {
    auto argv = runtime::confidential::BuildCvmQemuArgs(TcgLaunchConfig(vm, direct, *image_, roothash));
    EXPECT_TRUE(argv.ok()) << argv.error().message();
    if (!argv.ok()) {
      return {};
    }
    auto run = RunVmToExit(*argv, kBootTimeout, vm.dir + "/console.log");
    EXPECT_TRUE(run.ok()) << run.error().message();
    if (!run.ok()) {
      return {};
    }
    EXPECT_FALSE(run->timed_out) << "VM did not power off within " << kBootTimeout.count() << " s\n" << run->Tail();
    return *run;
  }

  static std::string* root_;
  static HalArtifacts* image_;
};

std::string* HalBootTest::root_ = nullptr;
HalArtifacts* HalBootTest::image_ = nullptr;

TEST_F(HalBootTest, SameInputsGiveTheSameImageAndRootHash) {
  auto again = guest::hal::BuildHalImage(ImageConfig(*root_ + "/image2"));
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(again->roothash, image_->roothash);
  for (const auto& [a, b] :
       std::vector<std::pair<std::string, std::string>>{{image_->disk_image, again->disk_image},
                                                        {image_->rootfs_ext4, again->rootfs_ext4},
                                                        {image_->rootfs_verity, again->rootfs_verity},
                                                        {image_->initramfs, again->initramfs}}) {
    base::CommandSpec cmp;
    cmp.argv = {"cmp", "-s", a, b};
    auto same = base::RunCommand(cmp);
    ASSERT_TRUE(same.ok());
    EXPECT_TRUE(same->success()) << a << " and " << b << " differ";
  }
  // A different salt is a different root hash: the hash really covers the inputs.
  HalImageConfig salted = ImageConfig(*root_ + "/image3");
  salted.verity_salt = std::string(64, '7');
  auto other = guest::hal::BuildHalImage(salted);
  ASSERT_TRUE(other.ok()) << other.error().message();
  EXPECT_NE(other->roothash, image_->roothash);
  (void)base::RemoveTree(*root_ + "/image2");
  (void)base::RemoveTree(*root_ + "/image3");
}

TEST_F(HalBootTest, DiskBootVerifiesRootEncryptsCocosMountsSharesAndEachBootHasItsOwnKey) {
  std::string token = "chrysmarker" + RandomToken();
  auto vm = PrepareVmDir(*root_ + "/vm-boots", image_->disk_image, "mode=selftest\nwrite_marker=" + token + "\n");
  ASSERT_TRUE(vm.ok()) << vm.error().message();

  // Boot 1: firmware disk boot through GRUB.
  VmRun first = Boot(*vm, false, "");
  EXPECT_TRUE(first.Saw("CHRYS-HAL-MARK grub")) << first.Tail();
  EXPECT_FALSE(first.Fatal().has_value()) << *first.Fatal();
  auto report = first.Report();
  ASSERT_TRUE(report.has_value()) << "no CHRYS-HAL-REPORT on the console:\n" << first.Tail();
  const nlohmann::json& r = *report;
  EXPECT_EQ(r["root_device"], "/dev/mapper/root_verity");
  EXPECT_EQ(r["root_ro"], true);
  EXPECT_EQ(r["root_write_refused"], true);
  EXPECT_EQ(r["root_dm_uuid"].get<std::string>().rfind("CRYPT-VERITY-", 0), 0u) << r.dump();
  EXPECT_EQ(r["cocos_device"], "/dev/mapper/cocos_crypt");
  EXPECT_EQ(r["cocos_fstype"], "ext4");
  EXPECT_EQ(r["cocos_rw"], true);
  EXPECT_EQ(r["cocos_dm_uuid"].get<std::string>().rfind("CRYPT-LUKS2-", 0), 0u) << r.dump();
  EXPECT_EQ(r["key_gone"], true);
  EXPECT_EQ(r["certs_share"], true);
  EXPECT_EQ(r["env_share"], true);
  EXPECT_EQ(r["tmp_tmpfs"], true);
  EXPECT_EQ(r["var_tmpfs"], true);
  EXPECT_EQ(r["cocos_init_on_cocos"], true);
  EXPECT_EQ(r["container_storage_on_cocos"], true);
  EXPECT_EQ(r["agent_present"], image_->has_agent);
  EXPECT_EQ(r["marker_written"], true);
  auto marks = first.Marks();
  for (const char* phase : {"init", "verity-open", "root-mounted", "luks-format", "luks-open", "mkfs", "shares",
                            "switch-root", "root-init"}) {
    EXPECT_EQ(marks.count(phase), 1u) << phase;
  }

  // The cocos partition holds a LUKS2 volume and the marker never reached the disk in plaintext.
  const auto& cocos = image_->layout.partitions.at(3);
  auto header1 = ReadCocosLuksHeader(vm->disk, image_->layout, vm->dir);
  ASSERT_TRUE(header1.ok()) << header1.error().message();
  // No keyslot: no passphrase or key file can reopen the volume; its key died with the boot.
  EXPECT_EQ(header1->keyslots, 0u);
  auto plaintext = FileRangeContains(vm->disk, cocos.offset_bytes(), cocos.size_bytes(), token);
  ASSERT_TRUE(plaintext.ok());
  EXPECT_FALSE(*plaintext) << "the /cocos marker is readable on the raw partition";

  // Boot 2 (measured direct boot of the same disk): a fresh key and volume; boot 1's data is gone.
  ASSERT_TRUE(base::WriteFileAtomic(vm->env_dir + "/init.conf", "mode=selftest\ncheck_marker=" + token + "\n").ok());
  VmRun second = Boot(*vm, true, image_->roothash);
  auto report2 = second.Report();
  ASSERT_TRUE(report2.has_value()) << second.Tail();
  EXPECT_EQ((*report2)["marker_present"], false) << "boot 2 can read boot 1's /cocos data";
  EXPECT_EQ((*report2)["cocos_dm_uuid"].get<std::string>().rfind("CRYPT-LUKS2-", 0), 0u);
  EXPECT_NE((*report2)["cocos_dm_uuid"], r["cocos_dm_uuid"]);
  auto header2 = ReadCocosLuksHeader(vm->disk, image_->layout, vm->dir);
  ASSERT_TRUE(header2.ok()) << header2.error().message();
  EXPECT_NE(header1->uuid, header2->uuid) << "the second boot reused the first boot's LUKS volume";
}

TEST_F(HalBootTest, FlippedByteInTheRootPartitionRefusesTheBoot) {
  auto vm = PrepareVmDir(*root_ + "/vm-tamper", image_->disk_image, "mode=selftest\n");
  ASSERT_TRUE(vm.ok()) << vm.error().message();
  // Where /bin/busybox's 11th block lives inside rootfs.ext4.
  base::CommandSpec bmap;
  bmap.argv = {"debugfs", "-R", "bmap /bin/busybox 10", image_->rootfs_ext4};
  auto block = base::RunCommand(bmap);
  ASSERT_TRUE(block.ok() && block->success());
  uint64_t fs_block = std::strtoull(block->stdout_data.c_str(), nullptr, 10);
  ASSERT_GT(fs_block, 0u) << block->stdout_data << block->stderr_data;
  uint64_t offset = image_->layout.partitions.at(1).offset_bytes() + fs_block * 4096 + 123;
  {
    std::fstream disk(vm->disk, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(disk.good());
    disk.seekg(static_cast<std::streamoff>(offset));
    char byte = 0;
    disk.read(&byte, 1);
    byte = static_cast<char>(byte ^ 0x01);
    disk.seekp(static_cast<std::streamoff>(offset));
    disk.write(&byte, 1);
    ASSERT_TRUE(disk.good());
  }
  VmRun run = Boot(*vm, true, image_->roothash);
  auto fatal = run.Fatal();
  ASSERT_TRUE(fatal.has_value()) << "a tampered root booted:\n" << run.Tail();
  EXPECT_NE(fatal->find("/bin/busybox"), std::string::npos) << *fatal;
  EXPECT_NE(fatal->find("I/O error"), std::string::npos) << *fatal;
  // The kernel's own dm-verity report ("device-mapper: verity: 8:2: data block N is corrupted").
  EXPECT_TRUE(run.Saw("block") && run.Saw("is corrupted")) << "no dm-verity corruption message:\n" << run.Tail();
  EXPECT_EQ(run.Marks().count("switch-root"), 0u);
  EXPECT_FALSE(run.Report().has_value());
}

TEST_F(HalBootTest, WrongRootHashStopsBeforeSwitchRoot) {
  auto vm = PrepareVmDir(*root_ + "/vm-wronghash", image_->disk_image, "mode=selftest\n");
  ASSERT_TRUE(vm.ok()) << vm.error().message();
  std::string wrong = image_->roothash;
  wrong[0] = wrong[0] == '0' ? '1' : '0';
  VmRun run = Boot(*vm, true, wrong);
  auto fatal = run.Fatal();
  ASSERT_TRUE(fatal.has_value()) << "booted with a wrong root hash:\n" << run.Tail();
  EXPECT_NE(fatal->find("does not match roothash=" + wrong), std::string::npos) << *fatal;
  EXPECT_EQ(run.Marks().count("root-mounted"), 0u);
  EXPECT_EQ(run.Marks().count("switch-root"), 0u);
  EXPECT_FALSE(run.Report().has_value());
  // Nothing was provisioned: the cocos partition was never formatted.
  EXPECT_FALSE(ReadCocosLuksHeader(vm->disk, image_->layout, vm->dir).ok());
}

}  // namespace
}  // namespace chrys::e2e::hal
