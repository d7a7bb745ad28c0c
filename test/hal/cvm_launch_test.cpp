// The confidential QEMU command lines, checked argument by argument against the seed document's examples.
#include "runtime/confidential/cvm_launch.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "guest/hal/hal_layout.h"
#include "runtime/qemu_cpu.h"

namespace chrys::runtime::confidential {
namespace {

const std::string kDisk = "/path/to/buildroot/output/images/disk.img";
const std::string kIgvm = "/path/to/coconut-qemu.igvm";
const std::string kOvmf = "/path/to/OVMF.fd";
const std::string kEnv = "/path/to/env_directory";
const std::string kCert = "/path/to/cert_directory";
const std::string kHash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

// The seed's SEV-SNP example, one entry per shell word, variables substituted.
std::vector<std::string> SeedSnp() {
  return {"qemu-system-x86_64",
          "-enable-kvm",
          "-cpu",
          "EPYC-v4",
          "-machine",
          "q35",
          "-smp",
          "16,sockets=1,threads=1",
          "-m",
          "8G,slots=5,maxmem=40G",
          "-netdev",
          "user,id=vmnic,hostfwd=tcp::7020-:7002",
          "-device",
          "virtio-net-pci,disable-legacy=on,iommu_platform=true,netdev=vmnic,romfile=",
          "-machine",
          "confidential-guest-support=sev0,memory-backend=ram1,igvm-cfg=igvm0",
          "-object",
          "memory-backend-memfd,id=ram1,size=8G,share=true,prealloc=false,reserve=false",
          "-object",
          "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1",
          "-drive",
          "file=" + kDisk + ",if=none,id=disk0,format=raw",
          "-device",
          "virtio-scsi-pci,id=scsi0,disable-legacy=on,iommu_platform=true",
          "-device",
          "scsi-hd,drive=disk0,bus=scsi0.0",
          "-object",
          "igvm-cfg,id=igvm0,file=" + kIgvm,
          "-nographic",
          "-monitor",
          "pty",
          "-monitor",
          "unix:monitor,server,nowait",
          "-fsdev",
          "local,id=env_fs,path=" + kEnv + ",security_model=mapped",
          "-device",
          "virtio-9p-pci,disable-legacy=on,iommu_platform=true,fsdev=env_fs,mount_tag=env_share,romfile=",
          "-fsdev",
          "local,id=cert_fs,path=" + kCert + ",security_model=mapped",
          "-device",
          "virtio-9p-pci,disable-legacy=on,iommu_platform=true,fsdev=cert_fs,mount_tag=certs_share,romfile="};
}

// The seed's TDX example.
std::vector<std::string> SeedTdx() {
  return {"qemu-system-x86_64",
          "-enable-kvm",
          "-m",
          "8G",
          "-smp",
          "cores=16,sockets=1,threads=1",
          "-cpu",
          "host",
          "-object",
          R"({"qom-type":"tdx-guest","id":"tdx","quote-generation-socket":{"type":"vsock","cid":"2","port":"4050"}})",
          "-machine",
          "q35,kernel_irqchip=split,confidential-guest-support=tdx,memory-backend=mem0,hpet=off",
          "-bios",
          kOvmf,
          "-nographic",
          "-nodefaults",
          "-no-reboot",
          "-serial",
          "mon:stdio",
          "-device",
          "virtio-net-pci,disable-legacy=on,iommu_platform=true,netdev=nic0_td,romfile=",
          "-netdev",
          "user,id=nic0_td,hostfwd=tcp::7020-:7002",
          "-object",
          "memory-backend-memfd,id=mem0,size=8G",
          "-drive",
          "file=" + kDisk + ",if=none,id=disk0,format=raw",
          "-device",
          "virtio-scsi-pci,id=scsi0,disable-legacy=on,iommu_platform=true",
          "-device",
          "scsi-hd,drive=disk0,bus=scsi0.0",
          "-device",
          "vhost-vsock-pci,guest-cid=6",
          "-monitor",
          "pty",
          "-monitor",
          "unix:monitor,server,nowait",
          "-fsdev",
          "local,id=env_fs,path=" + kEnv + ",security_model=mapped",
          "-device",
          "virtio-9p-pci,disable-legacy=on,iommu_platform=true,fsdev=env_fs,mount_tag=env_share,romfile=",
          "-fsdev",
          "local,id=cert_fs,path=" + kCert + ",security_model=mapped",
          "-device",
          "virtio-9p-pci,disable-legacy=on,iommu_platform=true,fsdev=cert_fs,mount_tag=certs_share,romfile="};
}

CvmLaunchConfig SeedLikeConfig(TeeKind tee) {
  CvmLaunchConfig c;
  c.tee = tee;
  c.accel = "kvm";
  c.vcpus = 16;
  c.memory_mib = 8192;
  c.disk_image = kDisk;
  c.env_share_dir = kEnv;
  c.certs_share_dir = kCert;
  c.nographic = true;
  c.no_reboot = false;
  c.monitors = {"pty", "unix:monitor,server,nowait"};
  CvmNic nic;
  nic.kind = CvmNic::Kind::kUser;
  nic.host_forwards = {"tcp::7020-:7002"};
  if (tee == TeeKind::kSevSnp) {
    nic.id = "vmnic";
    c.max_memory_mib = 40 * 1024;
    c.memory_slots = 5;
    c.igvm_file = kIgvm;
  } else {
    nic.id = "nic0_td";
    c.firmware_bios = kOvmf;
    c.nodefaults = true;
    c.no_reboot = true;
    c.serial = "mon:stdio";
    c.vsock_guest_cid = 6;
  }
  c.nics.push_back(nic);
  return c;
}

// Compares element by element so a failure names the first differing argument.
void ExpectSameArgs(const std::vector<std::string>& expected, const std::vector<std::string>& actual) {
  for (size_t i = 0; i < std::min(expected.size(), actual.size()); ++i) {
    ASSERT_EQ(expected[i], actual[i]) << "argument " << i;
  }
  ASSERT_EQ(expected.size(), actual.size());
}

bool Contains(const std::vector<std::string>& argv, const std::string& flag, const std::string& value) {
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == flag && argv[i + 1] == value) {
      return true;
    }
  }
  return false;
}

bool HasWord(const std::vector<std::string>& argv, const std::string& word) {
  return std::find(argv.begin(), argv.end(), word) != argv.end();
}

TEST(CvmLaunchTest, SevSnpMatchesTheSeedArgumentByArgument) {
  auto args = BuildCvmQemuArgs(SeedLikeConfig(TeeKind::kSevSnp));
  ASSERT_TRUE(args.ok()) << args.error().message();
  ExpectSameArgs(SeedSnp(), *args);
}

TEST(CvmLaunchTest, TdxMatchesTheSeedArgumentByArgument) {
  auto args = BuildCvmQemuArgs(SeedLikeConfig(TeeKind::kTdx));
  ASSERT_TRUE(args.ok()) << args.error().message();
  ExpectSameArgs(SeedTdx(), *args);
}

TEST(CvmLaunchTest, SevSnpWithoutIgvmBootsSnpFirmwareViaBios) {
  CvmLaunchConfig c = SeedLikeConfig(TeeKind::kSevSnp);
  c.igvm_file.clear();
  c.firmware_bios = "/usr/share/ovmf/OVMF.amdsev.fd";
  auto args = BuildCvmQemuArgs(c);
  ASSERT_TRUE(args.ok()) << args.error().message();
  EXPECT_TRUE(Contains(*args, "-machine", "confidential-guest-support=sev0,memory-backend=ram1"));
  EXPECT_TRUE(Contains(*args, "-bios", "/usr/share/ovmf/OVMF.amdsev.fd"));
  for (const std::string& a : *args) {
    EXPECT_EQ(a.find("igvm"), std::string::npos) << a;
  }
}

TEST(CvmLaunchTest, SevSnpMeasuredDirectBootPutsTheRootHashIntoTheMeasurement) {
  CvmLaunchConfig c = SeedLikeConfig(TeeKind::kSevSnp);
  c.igvm_file.clear();
  c.firmware_bios = "/fw/OVMF.amdsev.fd";
  c.boot = BootMode::kMeasuredDirect;
  c.kernel = "/img/vmlinuz";
  c.initrd = "/img/rootfs.cpio.gz";
  c.roothash = kHash;
  auto args = BuildCvmQemuArgs(c);
  ASSERT_TRUE(args.ok()) << args.error().message();
  EXPECT_TRUE(Contains(*args, "-object", "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on"));
  EXPECT_TRUE(Contains(*args, "-kernel", "/img/vmlinuz"));
  EXPECT_TRUE(Contains(*args, "-initrd", "/img/rootfs.cpio.gz"));
  EXPECT_TRUE(Contains(*args, "-append", HalKernelCommandLine(kHash, "")));
  // The disk is still attached: root, verity and cocos partitions live there.
  EXPECT_TRUE(Contains(*args, "-device", "scsi-hd,drive=disk0,bus=scsi0.0"));
}

TEST(CvmLaunchTest, TdxMeasuredDirectBootAppendsKernelAndRootHash) {
  CvmLaunchConfig c = SeedLikeConfig(TeeKind::kTdx);
  c.boot = BootMode::kMeasuredDirect;
  c.kernel = "/img/vmlinuz";
  c.initrd = "/img/rootfs.cpio.gz";
  c.roothash = kHash;
  c.extra_cmdline = "chrys.debug=1";
  auto args = BuildCvmQemuArgs(c);
  ASSERT_TRUE(args.ok()) << args.error().message();
  EXPECT_TRUE(Contains(*args, "-bios", kOvmf));
  EXPECT_TRUE(Contains(*args, "-append", "console=ttyS0,115200 quiet panic=-1 roothash=" + kHash + " chrys.debug=1"));
}

TEST(CvmLaunchTest, PlainDiskBootUsesReadOnlyOvmfCodeAndPerVmVars) {
  CvmLaunchConfig c;
  c.tee = TeeKind::kNone;
  c.accel = "tcg";
  c.vcpus = 1;
  c.memory_mib = 1024;
  c.disk_image = "/vm/disk.img";
  c.ovmf_code = "/usr/share/OVMF/OVMF_CODE_4M.fd";
  c.ovmf_vars = "/run/chrysalis/pod1/OVMF_VARS.fd";
  c.env_share_dir = "/run/chrysalis/pod1/env";
  c.certs_share_dir = "/run/chrysalis/pod1/certs";
  c.serial = "file:/run/chrysalis/pod1/console.log";
  c.qmp_socket = "/run/chrysalis/pod1/qmp.sock";
  CvmNic tap;
  tap.id = "net0";
  tap.tap_name = "tap0";
  tap.mac = "02:00:00:00:00:01";
  c.nics.push_back(tap);
  auto args = BuildCvmQemuArgs(c);
  ASSERT_TRUE(args.ok()) << args.error().message();
  EXPECT_TRUE(Contains(*args, "-accel", "tcg"));
  EXPECT_FALSE(HasWord(*args, "-enable-kvm"));
  EXPECT_TRUE(Contains(*args, "-cpu", runtime::kTcgCpuModel));
  EXPECT_TRUE(
      Contains(*args, "-drive", "if=pflash,format=raw,unit=0,file=/usr/share/OVMF/OVMF_CODE_4M.fd,readonly=on"));
  EXPECT_TRUE(Contains(*args, "-drive", "if=pflash,format=raw,unit=1,file=/run/chrysalis/pod1/OVMF_VARS.fd"));
  EXPECT_TRUE(Contains(*args, "-drive", "file=/vm/disk.img,if=none,id=disk0,format=raw"));
  EXPECT_TRUE(Contains(*args, "-device", "scsi-hd,drive=disk0,bus=scsi0.0"));
  EXPECT_TRUE(Contains(*args, "-netdev", "tap,id=net0,ifname=tap0,script=no,downscript=no"));
  EXPECT_TRUE(
      Contains(*args, "-device",
               "virtio-net-pci,disable-legacy=on,iommu_platform=true,netdev=net0,romfile=,mac=02:00:00:00:00:01"));
  EXPECT_TRUE(Contains(*args, "-fsdev", "local,id=env_fs,path=/run/chrysalis/pod1/env,security_model=mapped"));
  EXPECT_TRUE(Contains(*args, "-fsdev", "local,id=cert_fs,path=/run/chrysalis/pod1/certs,security_model=mapped"));
  EXPECT_TRUE(Contains(*args, "-serial", "file:/run/chrysalis/pod1/console.log"));
  EXPECT_TRUE(Contains(*args, "-qmp", "unix:/run/chrysalis/pod1/qmp.sock,server=on,wait=off"));
  EXPECT_TRUE(HasWord(*args, "-no-reboot"));
  for (const std::string& a : *args) {
    EXPECT_EQ(a.find("confidential-guest-support"), std::string::npos) << a;
    EXPECT_EQ(a.find("-kernel"), std::string::npos) << a;
  }
}

TEST(CvmLaunchTest, AgentSerialPortWhenThereIsNoVsock) {
  CvmLaunchConfig c = SeedLikeConfig(TeeKind::kSevSnp);
  c.agent_serial_socket = "/run/chrysalis/pod1/agent.sock";
  auto args = BuildCvmQemuArgs(c);
  ASSERT_TRUE(args.ok()) << args.error().message();
  EXPECT_TRUE(Contains(*args, "-device", "virtio-serial-pci,id=vser0,disable-legacy=on,iommu_platform=true"));
  EXPECT_TRUE(Contains(*args, "-chardev", "socket,id=agent,path=/run/chrysalis/pod1/agent.sock,server=on,wait=off"));
  EXPECT_TRUE(Contains(*args, "-device", "virtserialport,bus=vser0.0,chardev=agent,name=chrys.agent"));
}

TEST(CvmLaunchTest, CommasInPathsAreDoubled) {
  CvmLaunchConfig c = SeedLikeConfig(TeeKind::kSevSnp);
  c.disk_image = "/a,b/disk.img";
  auto args = BuildCvmQemuArgs(c);
  ASSERT_TRUE(args.ok());
  EXPECT_TRUE(Contains(*args, "-drive", "file=/a,,b/disk.img,if=none,id=disk0,format=raw"));
}

TEST(CvmLaunchTest, RejectsWhatCannotBoot) {
  auto expect_invalid = [](CvmLaunchConfig c, const std::string& needle) {
    auto args = BuildCvmQemuArgs(c);
    ASSERT_FALSE(args.ok()) << "expected an error mentioning " << needle;
    EXPECT_EQ(args.error().code(), base::ErrorCode::kInvalidArgument);
    EXPECT_NE(args.error().message().find(needle), std::string::npos) << args.error().message();
  };
  CvmLaunchConfig snp = SeedLikeConfig(TeeKind::kSevSnp);
  CvmLaunchConfig c = snp;
  c.accel = "tcg";
  expect_invalid(c, "KVM");
  c = snp;
  c.igvm_file.clear();
  expect_invalid(c, "IGVM");
  c = snp;
  c.disk_image.clear();
  expect_invalid(c, "disk_image");
  c = snp;
  c.certs_share_dir.clear();
  expect_invalid(c, "certs_share_dir");
  c = snp;
  c.boot = BootMode::kMeasuredDirect;
  c.kernel = "/k";
  c.initrd = "/i";
  c.roothash = "ABCDEF";
  expect_invalid(c, "roothash");
  c = snp;
  c.extra_cmdline = "roothash=" + kHash;
  expect_invalid(c, "roothash");
  c = snp;
  c.nics.push_back(c.nics[0]);
  expect_invalid(c, "duplicate");
  c = snp;
  c.max_memory_mib = 1024;
  expect_invalid(c, "max_memory_mib");
  CvmLaunchConfig tdx = SeedLikeConfig(TeeKind::kTdx);
  tdx.firmware_bios.clear();
  expect_invalid(tdx, "TDVF");
  CvmLaunchConfig plain = SeedLikeConfig(TeeKind::kNone);
  expect_invalid(plain, "ovmf_code");
  plain.ovmf_code = "/c";
  plain.ovmf_vars = "/v";
  plain.vsock_guest_cid = 2;
  expect_invalid(plain, "vsock_guest_cid");
}

TEST(CvmLaunchTest, MemorySizesUseTheSeedSpelling) {
  EXPECT_EQ(QemuMemorySize(8192), "8G");
  EXPECT_EQ(QemuMemorySize(40 * 1024), "40G");
  EXPECT_EQ(QemuMemorySize(1536), "1536M");
}

TEST(CvmLaunchTest, DirectBootAndGrubHandInitTheSameCommandLine) {
  EXPECT_EQ(HalKernelCommandLine(kHash, ""), guest::hal::HalKernelCommandLine(kHash, ""));
  EXPECT_EQ(HalKernelCommandLine(kHash, "x=1"), guest::hal::HalKernelCommandLine(kHash, "x=1"));
}

}  // namespace
}  // namespace chrys::runtime::confidential
