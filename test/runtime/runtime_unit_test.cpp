// Unit tests of the runtime's pure parts and process handling: cgroup paths, sizing, handler selection, the
// QEMU command line, detached processes with fd passing, launch-spec validation.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "base/file_util.h"
#include "runtime/cgroup.h"
#include "runtime/guest_manifest.h"
#include "runtime/process.h"
#include "runtime/qemu.h"
#include "runtime/qemu_cpu.h"
#include "runtime/sandbox.h"

namespace chrys::runtime {
namespace {

using namespace std::chrono_literals;

std::string TempDir(const std::string& name) {
  std::string dir = "/tmp/rt-unit-" + std::to_string(::getpid()) + "-" + name;
  (void)base::RemoveTree(dir);
  EXPECT_TRUE(base::MakeDirs(dir).ok());
  return dir;
}

// The least a valid launch spec holds: an id, a kernel file (written into `dir`), a run dir and a console log.
VmLaunchSpec MinimalLaunchSpec(const std::string& dir, const std::string& id) {
  EXPECT_TRUE(base::WriteFileAtomic(dir + "/k", "k").ok());
  VmLaunchSpec s;
  s.sandbox_id = id;
  s.kernel_path = dir + "/k";
  s.run_dir = dir + "/run";
  s.console_log_path = dir + "/console.log";
  return s;
}

TEST(CgroupTest, SystemdSliceExpansion) {
  EXPECT_EQ(*ExpandSystemdSlice("kubepods-burstable-pod1.slice"),
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice");
  EXPECT_EQ(*ExpandSystemdSlice("system.slice"), "system.slice");
  EXPECT_EQ(*ExpandSystemdSlice("-.slice"), "");
  EXPECT_FALSE(ExpandSystemdSlice("kubepods").ok());
  EXPECT_FALSE(ExpandSystemdSlice("a--b.slice").ok());
  EXPECT_FALSE(ExpandSystemdSlice("a/b.slice").ok());
}

TEST(CgroupTest, RelativePaths) {
  EXPECT_EQ(*VmmCgroupRelativePath("/kubepods/burstable/pod1", CgroupDriver::kCgroupfs, "abc"),
            "kubepods/burstable/pod1/chrys-abc");
  EXPECT_EQ(*VmmCgroupRelativePath("", CgroupDriver::kCgroupfs, "abc"), "chrys-abc");
  EXPECT_EQ(*VmmCgroupRelativePath("kubepods-pod1.slice", CgroupDriver::kSystemd, "abc"),
            "kubepods.slice/kubepods-pod1.slice/chrys-abc.scope");
  EXPECT_FALSE(VmmCgroupRelativePath("/kubepods/../etc", CgroupDriver::kCgroupfs, "abc").ok());
  EXPECT_FALSE(VmmCgroupRelativePath("/kubepods", CgroupDriver::kCgroupfs, "../x").ok());
  EXPECT_FALSE(VmmCgroupRelativePath("/kubepods", CgroupDriver::kSystemd, "abc").ok());
}

TEST(CgroupTest, DiscoversV1AndV2FromMountinfo) {
  std::string dir = TempDir("mountinfo");
  std::string mi =
      "30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n"
      "31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n"
      "32 25 0:28 / /sys/fs/cgroup/cpuset rw,nosuid - cgroup cgroup rw,cpuset\n"
      "33 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
      "34 25 0:30 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
      "35 25 0:31 / /proc rw - proc proc rw\n";
  ASSERT_TRUE(base::WriteFileAtomic(dir + "/mountinfo", mi).ok());
  auto h = DiscoverCgroupHierarchies(dir + "/mountinfo");
  ASSERT_TRUE(h.ok());
  std::vector<std::string> mounts;
  for (const auto& x : *h) {
    mounts.push_back(x.mount_point + (x.unified ? "(v2)" : ""));
  }
  EXPECT_EQ(mounts, (std::vector<std::string>{"/sys/fs/cgroup/unified(v2)", "/sys/fs/cgroup/memory",
                                              "/sys/fs/cgroup/cpu,cpuacct"}));
  (void)base::RemoveTree(dir);
}

TEST(CgroupTest, CreateRemembersAndRemovesOnlyWhatItCreated) {
  std::string root = TempDir("cgroot");
  ASSERT_TRUE(base::MakeDirs(root + "/a/kubepods").ok());
  ASSERT_TRUE(base::MakeDirs(root + "/b").ok());
  auto cg = VmmCgroup::Create({{root + "/a", false}, {root + "/b", true}}, "kubepods/pod1/chrys-x");
  ASSERT_TRUE(cg.ok()) << cg.error().message();
  EXPECT_EQ(cg->procs_files(), (std::vector<std::string>{root + "/a/kubepods/pod1/chrys-x/cgroup.procs",
                                                         root + "/b/kubepods/pod1/chrys-x/cgroup.procs"}));
  EXPECT_EQ(cg->created_dirs().size(), 5u);  // a: pod1, chrys-x; b: kubepods, pod1, chrys-x
  ASSERT_TRUE(cg->Remove(1s).ok());
  EXPECT_EQ(::access((root + "/a/kubepods").c_str(), F_OK), 0) << "pre-existing parent must stay";
  EXPECT_NE(::access((root + "/a/kubepods/pod1").c_str(), F_OK), 0);
  EXPECT_NE(::access((root + "/b/kubepods").c_str(), F_OK), 0);
  (void)base::RemoveTree(root);
}

TEST(CgroupTest, LowCpuWeightGoesWhereAHierarchyHasOne) {
  std::string root = TempDir("cgweight");
  // A fake tree: the kernel makes the weight files on mkdir, so the test makes them ahead.
  ASSERT_TRUE(base::MakeDirs(root + "/cpu/warm").ok());
  ASSERT_TRUE(base::WriteFileAtomic(root + "/cpu/warm/cpu.shares", "1024").ok());
  ASSERT_TRUE(base::MakeDirs(root + "/unified/warm").ok());
  ASSERT_TRUE(base::WriteFileAtomic(root + "/unified/warm/cpu.weight", "100").ok());
  ASSERT_TRUE(base::MakeDirs(root + "/memory").ok());
  base::Status made =
      CreateLowCpuWeightCgroup({{root + "/cpu", false}, {root + "/unified", true}, {root + "/memory", false}}, "warm");
  ASSERT_TRUE(made.ok()) << made.error().message();
  EXPECT_EQ(*base::ReadFile(root + "/cpu/warm/cpu.shares"), "2");
  EXPECT_EQ(*base::ReadFile(root + "/unified/warm/cpu.weight"), "1");
  EXPECT_EQ(::access((root + "/memory/warm").c_str(), F_OK), 0) << "made in every hierarchy";

  // No hierarchy with a CPU weight: the caller hears so.
  base::Status none = CreateLowCpuWeightCgroup({{root + "/memory", false}}, "other");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().message().find("CPU weight"), std::string::npos) << none.error().message();
  base::Status escape = CreateLowCpuWeightCgroup({{root + "/memory", false}}, "../x");
  ASSERT_FALSE(escape.ok());
  EXPECT_EQ(::access((root + "/x").c_str(), F_OK), -1) << "nothing made outside the hierarchy";
  (void)base::RemoveTree(root);
}

TEST(SizingTest, VcpusAndMemoryFromPodResources) {
  VmSizing s;
  s.overhead_vcpus = 0;
  s.overhead_memory_mib = 128;
  s.default_vcpus = 1;
  s.default_memory_mib = 512;
  s.max_vcpus = 8;
  EXPECT_EQ(VcpusFor({0, 0}, s), 1);
  EXPECT_EQ(VcpusFor({1500, 0}, s), 2);
  EXPECT_EQ(VcpusFor({100000, 0}, s), 8);
  EXPECT_EQ(MemoryMibFor({0, 0}, s), 640);
  EXPECT_EQ(MemoryMibFor({0, (256 << 20) + 1}, s), 257 + 128);
  s.overhead_vcpus = 1;
  EXPECT_EQ(VcpusFor({2000, 0}, s), 3);
}

TEST(SelectorTest, HandlerChoosesVmm) {
  EXPECT_EQ(*SelectVmmKind("chrysalis", true), VmmKind::kCloudHypervisor);
  EXPECT_EQ(*SelectVmmKind("chrysalis", false), VmmKind::kQemu);
  EXPECT_EQ(*SelectVmmKind("chrysalis-qemu", true), VmmKind::kQemu);
  EXPECT_EQ(*SelectVmmKind("chrysalis-snp", true), VmmKind::kQemu);
  EXPECT_EQ(*SelectVmmKind("chrysalis-tdx", false), VmmKind::kQemu);
  EXPECT_EQ(*SelectVmmKind("chrysalis-cvm", true), VmmKind::kQemu);
  auto unknown = SelectVmmKind("runc", true);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message().find("runc"), std::string::npos);
}

TEST(QemuTest, CommandLineHasEveryPart) {
  QemuConfig c;
  c.hotplug_ports = 2;
  c.vhost_vsock_device = "/nonexistent";
  QemuVmm vmm(c);
  VmLaunchSpec s;
  s.sandbox_id = "pod1";
  s.kernel_path = "/k";
  s.initramfs_path = "/i";
  s.kernel_cmdline = "console=ttyS0";
  s.vcpus = 2;
  s.memory_mib = 512;
  s.run_dir = "/run/chrys/pod1";
  s.console_log_path = "/var/log/chrys/pod1,console.log";
  s.interfaces.push_back({{10, 11}, "02:00:00:00:00:01", 1400});
  s.interfaces.push_back({{12}, "02:00:00:00:00:02", 1500});
  s.fs_shares.push_back({"vol0", "/srv", false});
  s.disks.push_back({"chrys-tools", "/g/tools,v1.erofs", true});
  s.disks.push_back({"rw", "/g/rw.img", false});
  s.agent_channel = AgentChannelKind::kVhostVsock;  // falls back: no /dev/vhost-vsock
  auto a = vmm.BuildCommandLine(s, "tcg");
  auto has = [&](const std::string& flag, const std::string& value) {
    for (size_t i = 0; i + 1 < a.size(); ++i) {
      if (a[i] == flag && a[i + 1] == value) {
        return true;
      }
    }
    return false;
  };
  EXPECT_EQ(a[0], "/usr/bin/qemu-system-x86_64");
  EXPECT_TRUE(has("-machine", "q35,accel=tcg"));
  EXPECT_TRUE(has("-cpu", runtime::kTcgCpuModel));
  EXPECT_TRUE(has("-smp", "2"));
  EXPECT_TRUE(has("-kernel", "/k"));
  EXPECT_TRUE(has("-initrd", "/i"));
  EXPECT_TRUE(has("-append", "console=ttyS0"));
  // Tap fds are renumbered 3.. in the VMM, in order; multi-queue gets mq and 2*queues+2 vectors.
  EXPECT_TRUE(has("-netdev", "tap,id=net0,fds=3:4,vhost=off"));
  EXPECT_TRUE(has("-device", "virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01,host_mtu=1400,mq=on,vectors=6"));
  EXPECT_TRUE(has("-netdev", "tap,id=net1,fds=5,vhost=off"));
  EXPECT_TRUE(has("-device", "virtio-net-pci,netdev=net1,mac=02:00:00:00:00:02,host_mtu=1500"));
  EXPECT_TRUE(has("-chardev", "socket,id=qmp,path=/run/chrys/pod1/qmp.sock,server=on,wait=off"));
  EXPECT_TRUE(has("-mon", "chardev=qmp,mode=control"));
  EXPECT_TRUE(has("-chardev",
                  "socket,id=console,path=/run/chrys/pod1/console.sock,server=on,wait=off,"
                  "logfile=/var/log/chrys/pod1,,console.log,logappend=on"))
      << "the console is a socket for chrysctl console, logged to the console log (commas doubled)";
  EXPECT_FALSE(has("-bios", "/usr/share/qemu/qboot.rom")) << "no firmware configured: QEMU's default";
  EXPECT_TRUE(has("-device", "virtserialport,bus=vser0.0,chardev=agent,name=chrys.agent"));
  EXPECT_TRUE(has("-object", "memory-backend-memfd,id=mem0,size=512M,share=on"));
  EXPECT_TRUE(has("-numa", "node,memdev=mem0"));
  EXPECT_TRUE(has("-device", "vhost-user-fs-pci,chardev=fs0,tag=vol0"));
  // Disks are hot-plugged into one PCI bridge's slots; a device present at boot gives the bridge its windows.
  EXPECT_TRUE(has("-device", "pcie-pci-bridge,id=hpbr0,bus=pcie.0"));
  EXPECT_TRUE(has("-device", "virtio-rng-pci,bus=hpbr0,addr=0x1f"));
  EXPECT_EQ(std::count_if(a.begin(), a.end(), [](const std::string& arg) { return arg.find("pcie-root-port") == 0; }),
            0);
  EXPECT_EQ(std::count(a.begin(), a.end(), "-no-reboot"), 1);
  // Boot disks: present from the start, by serial, read-only where asked (commas in paths doubled).
  EXPECT_TRUE(has("-drive", "if=none,id=cdisk0,format=raw,file=/g/tools,,v1.erofs,readonly=on"));
  EXPECT_TRUE(has("-device", "virtio-blk-pci,drive=cdisk0,serial=chrys-tools"));
  EXPECT_TRUE(has("-drive", "if=none,id=cdisk1,format=raw,file=/g/rw.img"));
  EXPECT_TRUE(has("-device", "virtio-blk-pci,drive=cdisk1,serial=rw"));
}

// QEMU as on this host: no /dev/vhost-vsock, so the agent channel is virtio-serial.
QemuConfig NoVsockQemuConfig() {
  QemuConfig c;
  c.vhost_vsock_device = "/nonexistent";
  return c;
}

// A warm VM's launch spec of `memory_mib` (one vCPU, direct kernel boot).
VmLaunchSpec WarmSpec(int memory_mib) {
  VmLaunchSpec s;
  s.sandbox_id = "warm-1";
  s.kernel_path = "/k";
  s.vcpus = 1;
  s.memory_mib = memory_mib;
  s.run_dir = "/run/chrys/warm-1";
  s.console_log_path = "/var/log/warm-1.log";
  return s;
}

// A template boot keeps its RAM in the caller's memfd (the fd after the taps); a clone of it starts paused, waiting
// for the saved state, on the same kind of memory, and without the vhost-user-fs devices it gets after the restore.
TEST(QemuCommandLineTest, TemplateAndCloneRunOnFileBackedMemory) {
  QemuVmm vmm(NoVsockQemuConfig());
  VmLaunchSpec s = WarmSpec(256);
  s.interfaces.push_back({{10, 11}, "02:00:00:00:00:01", 1500});
  s.memory_fd = 42;
  auto count = [](const std::vector<std::string>& a, const std::string& value) {
    return std::count(a.begin(), a.end(), value);
  };
  auto tmpl = vmm.BuildCommandLine(s, "tcg");
  EXPECT_EQ(count(tmpl, "memory-backend-file,id=mem0,size=256M,share=on,mem-path=/proc/self/fd/5"), 1)
      << "two tap fds are 3 and 4, the memory is 5";
  EXPECT_EQ(count(tmpl, "node,memdev=mem0"), 1);
  EXPECT_EQ(count(tmpl, "-incoming"), 0);
  s.restore_state_path = "/run/chrys/vm-template.state";
  s.fs_shares.push_back({"chrys-pod", "/srv", false});
  auto clone = vmm.BuildCommandLine(s, "tcg");
  EXPECT_EQ(count(clone, "memory-backend-file,id=mem0,size=256M,share=on,mem-path=/proc/self/fd/5"), 1);
  EXPECT_EQ(count(clone, "-incoming"), 1);
  EXPECT_EQ(count(clone, "defer"), 1);
  EXPECT_EQ(std::count_if(clone.begin(), clone.end(),
                          [](const std::string& arg) { return arg.find("vhost-user-fs") != std::string::npos; }),
            0)
      << "a share cannot be restored: it is hot-plugged after the state loads";
  // Apart from the restore, a clone's command line is its template's: the saved devices must match.
  std::vector<std::string> without_incoming(clone.begin(), clone.end() - 2);
  EXPECT_EQ(without_incoming, tmpl);
}

TEST(QemuCommandLineTest, ARestoreNeedsTheTemplatesMemoryAndState) {
  VmLaunchSpec s;
  s.sandbox_id = "warm-1";
  s.kernel_path = "/proc/self/exe";
  s.memory_mib = 256;
  s.run_dir = "/run/chrys/warm-1";
  s.console_log_path = "/var/log/warm-1.log";
  s.restore_state_path = "/proc/self/exe";
  auto no_memory = ValidateLaunchSpec(s);
  ASSERT_FALSE(no_memory.ok());
  EXPECT_NE(no_memory.error().message().find("memory_fd"), std::string::npos) << no_memory.error().message();
  s.memory_fd = 3;
  s.restore_state_path = "/nonexistent/vm-template.state";
  auto no_state = ValidateLaunchSpec(s);
  ASSERT_FALSE(no_state.ok());
  EXPECT_NE(no_state.error().message().find("restore_state_path \"/nonexistent/vm-template.state\""), std::string::npos)
      << no_state.error().message();
  s.restore_state_path = "/proc/self/exe";
  auto valid = ValidateLaunchSpec(s);
  EXPECT_TRUE(valid.ok()) << valid.error().message();
  s.hugepages = true;
  EXPECT_FALSE(ValidateLaunchSpec(s).ok()) << "a memfd template cannot be huge pages";
}

// A VM booted with room to grow (a warm VM): CPU slots up to max_vcpus, DIMM slots and the memory ceiling.
TEST(QemuCommandLineTest, RoomToGrowAddsCpuAndMemorySlots) {
  QemuVmm vmm(NoVsockQemuConfig());
  VmLaunchSpec s = WarmSpec(640);
  s.fs_shares.push_back({"chrys-pod", "/srv", false});
  auto plain = vmm.BuildCommandLine(s, "tcg");
  s.max_vcpus = 16;
  s.max_memory_mib = 8192;
  auto grown = vmm.BuildCommandLine(s, "tcg");
  auto value_of = [](const std::vector<std::string>& a, const std::string& flag) {
    for (size_t i = 0; i + 1 < a.size(); ++i) {
      if (a[i] == flag) {
        return a[i + 1];
      }
    }
    return std::string("<none>");
  };
  EXPECT_EQ(value_of(plain, "-smp"), "1");
  EXPECT_EQ(value_of(plain, "-m"), "640M");
  EXPECT_EQ(value_of(grown, "-smp"), "1,maxcpus=16");
  EXPECT_EQ(value_of(grown, "-m"), "640M,slots=4,maxmem=8192M");
  // The boot memory stays what the shared backend maps.
  EXPECT_EQ(value_of(grown, "-object"), "memory-backend-memfd,id=mem0,size=640M,share=on");
}

// Grow refuses what a VM cannot do before it talks to any VMM: shrinking, or more than it booted with room for.
TEST(QemuGrowTest, RefusesShrinkingAndGrowingPastTheRoomItBootedWith) {
  QemuVmm vmm(QemuConfig{});  // not started: the spec's defaults, 1 vCPU and 512 MiB, no room
  auto shrink = vmm.Grow(1, 256, std::chrono::seconds(1));
  ASSERT_FALSE(shrink.ok());
  EXPECT_EQ(shrink.error().code(), base::ErrorCode::kInvalidArgument);
  EXPECT_NE(shrink.error().message().find("not shrink"), std::string::npos) << shrink.error().message();
  auto past = vmm.Grow(2, 512, std::chrono::seconds(1));
  ASSERT_FALSE(past.ok());
  EXPECT_EQ(past.error().code(), base::ErrorCode::kResourceExhausted);
  EXPECT_NE(past.error().message().find("room for 1 vCPUs and 512 MiB"), std::string::npos) << past.error().message();
  EXPECT_TRUE(vmm.Grow(1, 512, std::chrono::seconds(1)).ok()) << "growing to the size it has is nothing to do";
}

TEST(GuestManifestTest, ReadsFilesUnderTheGuestDirAndRefusesOthers) {
  std::string dir = TempDir("manifest");
  ASSERT_TRUE(base::WriteFileAtomic(dir + "/manifest.json",
                                    R"({"kernel": {"file": "vmlinuz", "path": "/build/vmlinuz"},
                                        "initramfs": {"file": "initramfs.cpio.lz4"}, "cmdline": "console=ttyS0",
                                        "tools_disk": {"file": "tools.erofs", "serial": "chrys-tools"}})")
                  .ok());
  auto files = ReadGuestManifest(dir);
  ASSERT_TRUE(files.ok()) << files.error().message();
  EXPECT_EQ(files->kernel, dir + "/vmlinuz") << "the file name under the guest dir, not the build path";
  EXPECT_EQ(files->initramfs, dir + "/initramfs.cpio.lz4");
  EXPECT_EQ(files->cmdline, "console=ttyS0");
  ASSERT_TRUE(files->tools_disk.has_value());
  EXPECT_EQ(files->tools_disk->serial, "chrys-tools");
  EXPECT_EQ(files->tools_disk->path, dir + "/tools.erofs");
  EXPECT_TRUE(files->tools_disk->read_only);

  ASSERT_TRUE(
      base::WriteFileAtomic(dir + "/manifest.json", R"({"kernel": {"file": "k"}, "initramfs": {"file": "i"}})").ok());
  files = ReadGuestManifest(dir);
  ASSERT_TRUE(files.ok());
  EXPECT_FALSE(files->tools_disk.has_value()) << "an older image without a tools disk";

  for (const char* bad : {"not json", R"({"kernel": {"file": "k"}})", R"({"kernel": "k", "initramfs": "i"})"}) {
    ASSERT_TRUE(base::WriteFileAtomic(dir + "/manifest.json", bad).ok());
    auto refused = ReadGuestManifest(dir);
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_EQ(refused.error().code(), base::ErrorCode::kInvalidArgument);
    EXPECT_NE(refused.error().message().find(dir + "/manifest.json"), std::string::npos) << refused.error().message();
  }
  EXPECT_EQ(ReadGuestManifest(dir + "/missing").error().code(), base::ErrorCode::kNotFound);
  (void)base::RemoveTree(dir);
}

TEST(QemuTest, AccelResolution) {
  QemuConfig c;
  c.accel = "tcg";
  EXPECT_EQ(*ResolveQemuAccel(c, "/k"), "tcg");
  c.accel = "auto";
  c.kvm_device = "/nonexistent/kvm";
  EXPECT_EQ(*ResolveQemuAccel(c, "/k"), "tcg");
  c.accel = "whpx";
  EXPECT_FALSE(ResolveQemuAccel(c, "/k").ok());
}

// The probe's decision, with a stand-in for QEMU that prints what a guest's console would: the kernel reaching
// its no-root panic means KVM works; no banner (a hung guest), an early exit or a cancel mean it does not, and
// nothing of the probe is left running.
TEST(QemuTest, KvmProbeReadsTheGuestConsole) {
  char tmpl[] = "/tmp/chrys-probe-test-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  auto fake_qemu = [&](const std::string& name, const std::string& body) {
    std::string path = dir + "/" + name;
    EXPECT_TRUE(base::WriteFileAtomic(path, "#!/bin/sh\n" + body + "\n", 0755).ok());
    return path;
  };
  QemuConfig c;
  c.accel = "auto";
  c.kvm_device = "/dev/null";  // exists: the probe runs
  c.kvm_probe_banner_wait = std::chrono::milliseconds(300);
  c.accel_cache_path = dir + "/cache.json";

  c.qemu_binary =
      fake_qemu("boots", "echo 'Linux version 6.1'; echo 'Kernel panic - not syncing: VFS: Unable to mount root'");
  EXPECT_EQ(*ResolveQemuAccel(c, "/k"), "kvm");
  EXPECT_EQ(*ResolveQemuAccel(c, "/k"), "kvm");  // now from the cache
  ASSERT_EQ(::unlink(c.accel_cache_path.c_str()), 0);

  c.qemu_binary = fake_qemu("hangs", "echo 'Probing EDD (edd=off to disable)... ok'; exec sleep 59.125");
  EXPECT_EQ(*ResolveQemuAccel(c, "/k"), "tcg");
  EXPECT_NE(::system("pgrep -f 'slee[p] 59.125' >/dev/null"), 0) << "the hung probe guest was left running";
  ASSERT_EQ(::unlink(c.accel_cache_path.c_str()), 0);

  c.qemu_binary = fake_qemu("fails", "echo 'Could not access KVM kernel module' >&2; exit 1");
  EXPECT_EQ(*ResolveQemuAccel(c, "/k"), "tcg");
  ASSERT_EQ(::unlink(c.accel_cache_path.c_str()), 0);

  std::atomic<bool> cancel{true};
  c.qemu_binary = fake_qemu("cancelled", "echo 'Linux version 6.1'; exec sleep 58.125");
  auto cancelled = ResolveQemuAccel(c, "/k", &cancel);
  ASSERT_FALSE(cancelled.ok());
  EXPECT_EQ(cancelled.error().code(), base::ErrorCode::kCancelled);
  EXPECT_NE(::access(c.accel_cache_path.c_str(), F_OK), 0) << "a cancelled probe cached a verdict";
  EXPECT_NE(::system("pgrep -f 'slee[p] 58.125' >/dev/null"), 0) << "the cancelled probe guest was left running";

  // A VMM given its owner's cancel flag ends a probe it waits for the same way: its Start fails as cancelled
  // (chrysd's shutdown does not wait out a warm VM's probe), and no VM is launched.
  QemuConfig vmm_config = c;
  vmm_config.accel_probe_cancel = &cancel;
  vmm_config.place_in_cgroup = false;
  VmLaunchSpec spec = MinimalLaunchSpec(dir, "probe");
  QemuVmm vmm(vmm_config);
  base::Status started = vmm.Start(spec);
  ASSERT_FALSE(started.ok());
  EXPECT_EQ(started.error().code(), base::ErrorCode::kCancelled) << started.error().message();
  EXPECT_FALSE(vmm.Alive());
  EXPECT_NE(::access(c.accel_cache_path.c_str(), F_OK), 0) << "a cancelled probe cached a verdict";
  EXPECT_NE(::system("pgrep -f 'slee[p] 58.125' >/dev/null"), 0) << "the cancelled probe guest was left running";
  (void)base::RemoveTree(dir);
}

TEST(LaunchSpecTest, BadInputNamesTheField) {
  std::string dir = TempDir("spec");
  VmLaunchSpec s = MinimalLaunchSpec(dir, "ok");
  ASSERT_TRUE(ValidateLaunchSpec(s).ok());
  auto bad = [&](auto mutate, const std::string& field) {
    VmLaunchSpec t = s;
    mutate(t);
    auto st = ValidateLaunchSpec(t);
    ASSERT_FALSE(st.ok()) << field;
    EXPECT_EQ(st.error().code(), base::ErrorCode::kInvalidArgument);
    EXPECT_NE(st.error().message().find(field), std::string::npos) << st.error().message();
  };
  bad([](VmLaunchSpec& t) { t.sandbox_id = "../x"; }, "sandbox_id");
  bad([](VmLaunchSpec& t) { t.vcpus = 0; }, "vcpus");
  bad([](VmLaunchSpec& t) { t.memory_mib = 1; }, "memory_mib");
  bad([](VmLaunchSpec& t) { t.max_vcpus = t.vcpus + 300; }, "max_vcpus");
  bad([](VmLaunchSpec& t) { t.max_memory_mib = t.memory_mib - 1; }, "max_memory_mib");
  bad([&](VmLaunchSpec& t) { t.kernel_path = dir + "/missing"; }, "kernel_path");
  bad([](VmLaunchSpec& t) { t.interfaces.push_back({{}, "02:00:00:00:00:01", 1500}); }, "tap_queue_fds");
  bad([](VmLaunchSpec& t) { t.interfaces.push_back({{987654}, "02:00:00:00:00:01", 1500}); }, "tap_queue_fds");
  bad([](VmLaunchSpec& t) { t.interfaces.push_back({{0}, "zz:00", 1500}); }, "guest_mac");
  bad([](VmLaunchSpec& t) { t.interfaces.push_back({{0}, "02:00:00:00:00:01", 20}); }, "mtu");
  bad([](VmLaunchSpec& t) { t.fs_shares.push_back({"bad tag", "/tmp", false}); }, "tag");
  bad([](VmLaunchSpec& t) { t.fs_shares.push_back({"t", "/nonexistent-dir", false}); }, "host_dir");
  bad([](VmLaunchSpec& t) { t.run_dir = "/tmp/" + std::string(100, 'r'); }, "run_dir");
  bad([&](VmLaunchSpec& t) { t.disks.push_back({"chrys-tools", dir + "/missing.erofs", true}); }, "disks[0]");
  bad([&](VmLaunchSpec& t) { t.disks.push_back({"bad serial", dir + "/k", true}); }, "disks[0]");
  bad(
      [&](VmLaunchSpec& t) {
        t.disks = {{"same", dir + "/k", true}, {"same", dir + "/k", true}};
      },
      "disks[1]: serial \"same\" is used twice");
  EXPECT_FALSE(ValidateDiskSpec({"has space", dir + "/k", true}).ok());
  EXPECT_FALSE(ValidateDiskSpec({"serial-that-is-way-too-long", dir + "/k", true}).ok());
  EXPECT_FALSE(ValidateDiskSpec({"ok", dir + "/missing", true}).ok());
  EXPECT_TRUE(ValidateDiskSpec({"ok", dir + "/k", true}).ok());
  (void)base::RemoveTree(dir);
}

TEST(DetachedProcessTest, PassesFdsAndOutlivesItsLauncherSession) {
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  std::string dir = TempDir("proc");
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  DetachedLaunchSpec spec;
  // fd 3 must be our pipe's write end; nothing else of ours may leak (fd 4 closed).
  spec.argv = {"/bin/sh", "-c",
               "readlink /proc/self/fd/3 > " + dir + "/fd3; [ -e /proc/self/fd/4 ] && echo leak > " + dir +
                   "/fd4; echo $(cut -d' ' -f6 /proc/self/stat) > " + dir + "/sid; exec sleep 30"};
  spec.pass_fds = {fds[1]};
  spec.output_log_path = dir + "/out.log";
  auto proc = DetachedProcess::Launch(spec);
  ASSERT_TRUE(proc.ok()) << proc.error().message();
  for (int i = 0; i < 100 && ::access((dir + "/sid").c_str(), F_OK) != 0; ++i) {
    std::this_thread::sleep_for(20ms);
  }
  auto fd3 = base::ReadFile(dir + "/fd3");
  ASSERT_TRUE(fd3.ok());
  char self[64] = {};
  ASSERT_GT(::readlink(("/proc/self/fd/" + std::to_string(fds[1])).c_str(), self, sizeof self - 1), 0);
  EXPECT_EQ(*fd3, std::string(self) + "\n");
  EXPECT_NE(::access((dir + "/fd4").c_str(), F_OK), 0) << "an fd leaked into the VMM";
  auto sid = base::ReadFile(dir + "/sid");
  ASSERT_TRUE(sid.ok());
  EXPECT_NE(std::stoi(*sid), ::getsid(0)) << "the VMM must not share our session";
  EXPECT_TRUE(proc->Alive());

  // Attach checks start time and binary (after exec, sleep). The shell writes "sid" just before it execs sleep,
  // so wait (bounded) for the exec to have happened.
  bool attached = false;
  for (int i = 0; i < 100 && !attached; ++i) {
    attached = DetachedProcess::Attach(proc->pid(), proc->start_ticks(), "sleep").ok();
    if (!attached) {
      std::this_thread::sleep_for(20ms);
    }
  }
  EXPECT_TRUE(attached);
  EXPECT_FALSE(DetachedProcess::Attach(proc->pid(), proc->start_ticks() + 1, "sleep").ok());
  EXPECT_FALSE(DetachedProcess::Attach(proc->pid(), proc->start_ticks(), "/usr/bin/qemu-system-x86_64").ok());

  ASSERT_TRUE(proc->Terminate(2s).ok());
  EXPECT_FALSE(proc->Alive());
  EXPECT_FALSE(ProcessRunning(proc->pid()));
  EXPECT_FALSE(DetachedProcess::Attach(proc->pid(), proc->start_ticks(), "sleep").ok());
  ::close(fds[0]);
  ::close(fds[1]);
  (void)base::RemoveTree(dir);
}

// A clone's memory: the child gets, after the fds it was passed, a memfd holding the source's bytes, in which only
// the source's non-zero pages are allocated (zero pages and holes stay holes).
TEST(DetachedProcessTest, CopiesAMemoryFileIntoItsOwnMemfd) {
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  std::string dir = TempDir("memcopy");
  base::UniqueFd source(static_cast<int>(::syscall(SYS_memfd_create, "test-template", MFD_CLOEXEC)));
  ASSERT_TRUE(source.valid());
  constexpr size_t kPage = 4096;
  ASSERT_EQ(::ftruncate(source.get(), 64 * kPage), 0);
  std::string expected(64 * kPage, '\0');
  for (size_t page : {1, 2, 3, 40, 63}) {
    std::string bytes(kPage, static_cast<char>('a' + page % 26));
    ASSERT_EQ(::pwrite(source.get(), bytes.data(), kPage, static_cast<off_t>(page * kPage)), ssize_t(kPage));
    expected.replace(page * kPage, kPage, bytes);
  }
  std::string zeros(kPage, '\0');  // written, so allocated in the source, but zero: not copied
  ASSERT_EQ(::pwrite(source.get(), zeros.data(), kPage, 20 * kPage), ssize_t(kPage));
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  base::UniqueFd keep_read(pipe_fds[0]), keep_write(pipe_fds[1]);
  DetachedLaunchSpec spec;
  // fd 3 is the passed pipe; the copy is fd 4.
  spec.argv = {"/bin/sh", "-c",
               "cat /proc/self/fd/4 > " + dir + "/copy; stat -L -c %b:%B /proc/self/fd/4 > " + dir +
                   "/blocks.tmp; readlink /proc/self/fd/4 > " + dir + "/name; mv " + dir + "/blocks.tmp " + dir +
                   "/blocks"};
  spec.pass_fds = {keep_write.get()};
  spec.copy_memory_from_fd = source.get();
  auto proc = DetachedProcess::Launch(spec);
  ASSERT_TRUE(proc.ok()) << proc.error().message();
  for (int i = 0; i < 250 && ::access((dir + "/blocks").c_str(), F_OK) != 0; ++i) {
    std::this_thread::sleep_for(20ms);
  }
  auto copy = base::ReadFile(dir + "/copy", 1 << 20);
  ASSERT_TRUE(copy.ok()) << copy.error().message();
  EXPECT_TRUE(*copy == expected) << "the copy's bytes differ from the source's";
  auto name = base::ReadFile(dir + "/name");
  ASSERT_TRUE(name.ok());
  EXPECT_NE(name->find("memfd:chrys-guest-ram"), std::string::npos) << *name;
  auto blocks = base::ReadFile(dir + "/blocks");
  ASSERT_TRUE(blocks.ok());
  long long count = std::atoll(blocks->c_str());
  long long unit = std::atoll(blocks->c_str() + blocks->find(':') + 1);
  EXPECT_EQ(count * unit, static_cast<long long>(5 * kPage)) << "only the 5 non-zero pages are allocated: " << *blocks;
  (void)proc->WaitExit(2s);
  spec.copy_memory_from_fd = 987654;
  EXPECT_EQ(DetachedProcess::Launch(spec).error().code(), base::ErrorCode::kInvalidArgument);
  (void)base::RemoveTree(dir);
}

TEST(DetachedProcessTest, ExecAndNetnsFailuresAreReported) {
  DetachedLaunchSpec spec;
  spec.argv = {"/nonexistent/vmm"};
  auto missing = DetachedProcess::Launch(spec);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("exec"), std::string::npos) << missing.error().message();
  spec.argv = {"/bin/true"};
  spec.netns_path = "/nonexistent/netns";
  EXPECT_FALSE(DetachedProcess::Launch(spec).ok());
  spec.netns_path.clear();
  spec.pass_fds = {987654};
  EXPECT_EQ(DetachedProcess::Launch(spec).error().code(), base::ErrorCode::kInvalidArgument);
  spec.argv = {"relative/path"};
  EXPECT_EQ(DetachedProcess::Launch(spec).error().code(), base::ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace chrys::runtime
