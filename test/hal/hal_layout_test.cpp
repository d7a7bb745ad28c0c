// HAL image layout and generated text: GPT placement, sgdisk arguments, grub.cfg, fstab, module order, parsers.
#include "guest/hal/hal_layout.h"

#include <gtest/gtest.h>

namespace chrys::guest::hal {
namespace {

TEST(HalLayoutTest, PartitionsAreMiBAlignedInSeedOrder) {
  auto layout = ComputeDiskLayout(64 * kMiB, 29 * kMiB + 5, 237568, 1024 * kMiB);
  ASSERT_TRUE(layout.ok()) << layout.error().message();
  ASSERT_EQ(layout->partitions.size(), 4u);
  const auto& p = layout->partitions;
  EXPECT_EQ(p[0].label, kEspLabel);
  EXPECT_EQ(p[1].label, kRootLabel);
  EXPECT_EQ(p[2].label, kVerityLabel);
  EXPECT_EQ(p[3].label, kCocosLabel);
  EXPECT_EQ(p[0].first_lba, 2048u);
  EXPECT_EQ(p[0].size_bytes(), 64 * kMiB);
  EXPECT_EQ(p[1].size_bytes(), 30 * kMiB);  // rounded up
  EXPECT_EQ(p[2].size_bytes(), 1 * kMiB);
  EXPECT_EQ(p[3].size_bytes(), 1024 * kMiB);
  for (size_t i = 0; i < p.size(); ++i) {
    EXPECT_EQ(p[i].offset_bytes() % kMiB, 0u);
    EXPECT_EQ(p[i].number, static_cast<int>(i + 1));
    if (i > 0) {
      EXPECT_EQ(p[i].first_lba, p[i - 1].last_lba + 1);
    }
  }
  EXPECT_EQ(layout->total_bytes, p[3].offset_bytes() + p[3].size_bytes() + kMiB);
  EXPECT_EQ(p[1].type_guid, kRootType);
  EXPECT_EQ(p[2].type_guid, kVerityType);
}

TEST(HalLayoutTest, RejectsEmptyOrTinyPartitions) {
  EXPECT_FALSE(ComputeDiskLayout(0, kMiB, kMiB, 64 * kMiB).ok());
  EXPECT_FALSE(ComputeDiskLayout(kMiB, kMiB, kMiB, 8 * kMiB).ok());
}

TEST(HalLayoutTest, SgdiskGetsFixedGuidsAndLabels) {
  DiskIds ids;
  auto layout = ComputeDiskLayout(64 * kMiB, 30 * kMiB, kMiB, 64 * kMiB, ids);
  ASSERT_TRUE(layout.ok());
  auto args = SgdiskArgs("/tmp/d.img", *layout, ids);
  ASSERT_FALSE(args.empty());
  EXPECT_EQ(args.back(), "/tmp/d.img");
  auto has = [&](const std::string& a) { return std::find(args.begin(), args.end(), a) != args.end(); };
  EXPECT_TRUE(has("--disk-guid=" + ids.disk_guid));
  EXPECT_TRUE(has("--new=1:2048:133119"));
  EXPECT_TRUE(has("--change-name=2:chrys-root"));
  EXPECT_TRUE(has("--partition-guid=4:" + ids.cocos_guid));
  EXPECT_TRUE(has(std::string("--typecode=1:") + kEspType));
}

TEST(HalLayoutTest, GrubConfigBootsAtOnceWithTheRootHash) {
  std::string cmdline = HalKernelCommandLine(std::string(64, 'a'), "");
  std::string cfg = RenderGrubConfig(cmdline, "/chrys/vmlinuz", "/chrys/initrd.img");
  EXPECT_NE(cfg.find("set timeout=0"), std::string::npos);
  EXPECT_NE(cfg.find("linux /chrys/vmlinuz " + cmdline + "\n"), std::string::npos) << cfg;
  EXPECT_NE(cfg.find("initrd /chrys/initrd.img\n"), std::string::npos);
  EXPECT_NE(cmdline.find("roothash=" + std::string(64, 'a')), std::string::npos);
  EXPECT_NE(cmdline.find("console=ttyS0"), std::string::npos);
}

TEST(HalLayoutTest, FstabDescribesEveryMountTheInitramfsMakes) {
  std::string fstab = RenderRootFstab();
  for (const char* needle : {"/dev/mapper/root_verity  /", "/dev/mapper/cocos_crypt  /cocos", "certs_share",
                             "/etc/certs", "env_share", "/etc/cocos", "/cocos_init", "/var/lib/chrys"}) {
    EXPECT_NE(fstab.find(needle), std::string::npos) << needle;
  }
}

constexpr const char* kModulesDep =
    "kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko "
    "kernel/lib/reed_solomon/reed_solomon.ko\n"
    "kernel/drivers/md/dm-bufio.ko:\n"
    "kernel/drivers/md/dm-mod.ko:\n"
    "kernel/lib/reed_solomon/reed_solomon.ko:\n"
    "kernel/drivers/md/dm-crypt.ko: kernel/drivers/md/dm-mod.ko\n"
    "kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko\n"
    "kernel/net/9p/9pnet.ko:\n"
    "kernel/drivers/virtio/virtio.ko:\n";

TEST(HalLayoutTest, ModulesComeWithDependenciesFirstAndOnce) {
  auto order = ModuleLoadOrder(kModulesDep, {"dm_verity", "dm-crypt", "9pnet-virtio"});
  ASSERT_TRUE(order.ok()) << order.error().message();
  std::vector<std::string> expected = {"kernel/drivers/md/dm-bufio.ko",           "kernel/drivers/md/dm-mod.ko",
                                       "kernel/lib/reed_solomon/reed_solomon.ko", "kernel/drivers/md/dm-verity.ko",
                                       "kernel/drivers/md/dm-crypt.ko",           "kernel/net/9p/9pnet.ko",
                                       "kernel/drivers/virtio/virtio.ko",         "kernel/net/9p/9pnet_virtio.ko"};
  EXPECT_EQ(*order, expected);
}

TEST(HalLayoutTest, MissingModuleIsAnErrorUnlessBuiltIn) {
  auto missing = ModuleLoadOrder(kModulesDep, {"virtio_scsi"});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("virtio_scsi"), std::string::npos);
  auto builtin = ModuleLoadOrder(kModulesDep, {"virtio_scsi", "dm-mod"}, "kernel/drivers/scsi/virtio_scsi.ko\n");
  ASSERT_TRUE(builtin.ok());
  EXPECT_EQ(*builtin, std::vector<std::string>{"kernel/drivers/md/dm-mod.ko"});
}

TEST(HalLayoutTest, OwnModulesDepKeepsOnlyIncludedModulesInLoadOrder) {
  auto order = ModuleLoadOrder(kModulesDep, {"dm-crypt", "9pnet_virtio"});
  ASSERT_TRUE(order.ok());
  auto dep = FilterModulesDep(kModulesDep, *order);
  ASSERT_TRUE(dep.ok()) << dep.error().message();
  EXPECT_EQ(*dep,
            "kernel/drivers/md/dm-mod.ko:\n"
            "kernel/drivers/md/dm-crypt.ko: kernel/drivers/md/dm-mod.ko\n"
            "kernel/net/9p/9pnet.ko:\n"
            "kernel/drivers/virtio/virtio.ko:\n"
            "kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko\n");
  // A module whose dependency is left out would fail to load in the guest: refuse at build time.
  auto partial = FilterModulesDep(kModulesDep, {"kernel/drivers/md/dm-crypt.ko"});
  ASSERT_FALSE(partial.ok());
  EXPECT_NE(partial.error().message().find("dm-mod.ko"), std::string::npos);
  EXPECT_FALSE(FilterModulesDep(kModulesDep, {"kernel/fs/none.ko"}).ok());
}

TEST(HalLayoutTest, ParsesLddOutput) {
  std::string out =
      "\tlinux-vdso.so.1 (0x00007ffd)\n"
      "\tlibcryptsetup.so.12 => /lib/x86_64-linux-gnu/libcryptsetup.so.12 (0x00007f)\n"
      "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n"
      "\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n"
      "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n";
  std::vector<std::string> expected = {"/lib/x86_64-linux-gnu/libcryptsetup.so.12", "/lib/x86_64-linux-gnu/libc.so.6",
                                       "/lib64/ld-linux-x86-64.so.2"};
  EXPECT_EQ(ParseLddOutput(out), expected);
  EXPECT_TRUE(ParseLddOutput("\tnot a dynamic executable\n").empty());
}

TEST(HalLayoutTest, ParsesTheVerityRootHash) {
  std::string hash(64, 'c');
  auto parsed = ParseVerityRootHash("VERITY header information for x\nUUID: u\nRoot hash:      \t" + hash + "\n");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, hash);
  EXPECT_FALSE(ParseVerityRootHash("Root hash: 1234\n").ok());
  EXPECT_FALSE(ParseVerityRootHash("nothing\n").ok());
}

TEST(HalLayoutTest, RootImageEstimateGrowsWithContent) {
  uint64_t small = EstimateRootImageBytes(10 * kMiB, 100);
  uint64_t large = EstimateRootImageBytes(100 * kMiB, 100);
  EXPECT_GT(large, small);
  EXPECT_GT(small, 10 * kMiB);
  EXPECT_EQ(small % kMiB, 0u);
}

}  // namespace
}  // namespace chrys::guest::hal
