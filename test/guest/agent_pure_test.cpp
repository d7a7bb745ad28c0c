// Unit tests of the agent's pure parts: request validation, OCI spec generation, sandbox file rendering,
// module load order, cgroup parsing, and the image builder's cpio/ldd/modules.dep handling.
#include <gtest/gtest.h>

#include <filesystem>

#include "base/file_util.h"
#include "guest/agent/container_manager.h"
#include "guest/agent/free_memory.h"
#include "guest/agent/guest_init.h"
#include "guest/agent/oci_spec.h"
#include "guest/agent/sandbox.h"
#include "guest/agent/storage.h"
#include "guest/agent/validation.h"
#include "guest/image/cpio_writer.h"
#include "guest/image/image_builder.h"
#include "guest/kmod/module_signature.h"

namespace chrys::guest {
namespace {

v1::ContainerConfig ValidConfig() {
  v1::ContainerConfig c;
  c.set_id("web-1");
  c.mutable_rootfs()->add_layer_serials("sha256-aaaa");
  c.mutable_rootfs()->add_layer_serials("sha256-bbbb");
  c.mutable_rootfs()->set_scratch_serial("scratch0");
  c.mutable_process()->add_args("/bin/server");
  c.mutable_process()->add_args("--port=80");
  c.mutable_process()->add_env("A=1");
  return c;
}

TEST(Validation, AcceptsAValidConfig) {
  EXPECT_TRUE(ValidateContainerConfig(ValidConfig()).ok());
}

TEST(Validation, PulledLayerDirectoriesOnlyFromTheGuestsOwnCache) {
  const std::string hex(64, 'c');
  auto pulled = ValidConfig();
  pulled.mutable_rootfs()->clear_layer_serials();
  pulled.mutable_rootfs()->clear_scratch_serial();
  pulled.mutable_rootfs()->add_layer_dirs("/cocos/.cache/oci/layers/" + hex);
  EXPECT_TRUE(ValidateContainerConfig(pulled).ok());
  const std::vector<std::string> bad_dirs = {
      "/cocos/.cache/oci/layers/" + hex + "/..",   "/cocos/.cache/oci/layers/../../etc", "/etc",
      "/cocos/.cache/oci/layers/" + hex.substr(1), "cocos/.cache/oci/layers/" + hex,     ""};
  for (const std::string& bad : bad_dirs) {
    auto c = pulled;
    c.mutable_rootfs()->add_layer_dirs(bad);
    auto s = ValidateContainerConfig(c);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_NE(s.error().message().find("config.rootfs.layer_dirs[1]"), std::string::npos) << s.error().message();
  }
  auto mixed = pulled;
  mixed.mutable_rootfs()->add_layer_serials("sha256-aaaa");
  ASSERT_FALSE(ValidateContainerConfig(mixed).ok());
  EXPECT_NE(ValidateContainerConfig(mixed).error().message().find("do not mix"), std::string::npos);
}

TEST(Validation, RejectsBadIdsNamingTheField) {
  for (const char* id : {"", "../x", ".hidden", "-x", "a/b", "has space"}) {
    auto c = ValidConfig();
    c.set_id(id);
    auto s = ValidateContainerConfig(c);
    ASSERT_FALSE(s.ok()) << id;
    EXPECT_EQ(s.error().code(), base::ErrorCode::kInvalidArgument);
    EXPECT_NE(s.error().message().find("config.id"), std::string::npos) << s.error().message();
  }
  EXPECT_FALSE(ValidateId(std::string(65, 'a'), "id").ok());
}

TEST(Validation, RejectsBadProcessAndMounts) {
  auto c = ValidConfig();
  c.mutable_process()->clear_args();
  EXPECT_FALSE(ValidateContainerConfig(c).ok());
  c = ValidConfig();
  c.mutable_process()->add_env("=novalue");
  EXPECT_NE(ValidateContainerConfig(c).error().message().find("config.process.env[1]"), std::string::npos);
  c = ValidConfig();
  c.mutable_process()->set_cwd("relative");
  EXPECT_FALSE(ValidateContainerConfig(c).ok());
  c = ValidConfig();
  c.mutable_process()->mutable_capabilities()->add_names("CAP_EVERYTHING");
  EXPECT_FALSE(ValidateContainerConfig(c).ok());
  c = ValidConfig();
  c.mutable_process()->mutable_capabilities()->add_names("CAP_CHOWN");
  c.mutable_process()->mutable_capabilities()->add_ambient("CAP_NET_RAW");  // not granted: cannot be raised
  EXPECT_NE(ValidateContainerConfig(c).error().message().find("config.process.capabilities.ambient[0]"),
            std::string::npos);
  c = ValidConfig();
  auto* r = c.mutable_process()->add_rlimits();
  r->set_type("RLIMIT_NOFILE");
  r->set_soft(10);
  r->set_hard(5);
  EXPECT_FALSE(ValidateContainerConfig(c).ok());
  c = ValidConfig();
  auto* m = c.add_mounts();
  m->set_destination("/data");
  m->set_source("/etc");  // not an exported share
  EXPECT_NE(ValidateContainerConfig(c).error().message().find("config.mounts[0].source"), std::string::npos);
  c = ValidConfig();
  m = c.add_mounts();
  m->set_destination("/data/../etc");
  m->set_source("/run/chrys/shares/vol");
  EXPECT_FALSE(ValidateContainerConfig(c).ok());
  c = ValidConfig();
  m = c.add_mounts();
  m->set_destination("/data");
  m->set_source("/run/chrys/shares/vol");
  m->add_options("exec,suid");
  EXPECT_FALSE(ValidateContainerConfig(c).ok());
}

TEST(Validation, RejectsBadRootfsAndResources) {
  auto c = ValidConfig();
  c.mutable_rootfs()->clear_layer_serials();
  EXPECT_FALSE(ValidateContainerConfig(c).ok());
  c = ValidConfig();
  c.mutable_rootfs()->set_layer_serials(0, std::string(21, 'a'));
  EXPECT_FALSE(ValidateContainerConfig(c).ok());
  c = ValidConfig();
  c.mutable_rootfs()->set_scratch_serial("sha256-aaaa");
  EXPECT_FALSE(ValidateContainerConfig(c).ok());
  c = ValidConfig();
  c.mutable_resources()->set_memory_limit_bytes(-1);
  EXPECT_FALSE(ValidateContainerConfig(c).ok());
  c = ValidConfig();
  c.mutable_resources()->set_cpu_weight(20000);
  EXPECT_FALSE(ValidateContainerConfig(c).ok());
  c = ValidConfig();
  (*c.mutable_sysctls())["kernel.hostname"] = "x";  // not namespaced per container
  EXPECT_FALSE(ValidateContainerConfig(c).ok());
}

TEST(Validation, SandboxRequest) {
  v1::SetupSandboxRequest r;
  r.set_hostname("pod-a");
  r.mutable_dns()->add_servers("10.0.0.10");
  auto* itf = r.add_interfaces();
  itf->set_mac("02:42:ac:11:00:02");
  itf->add_addresses()->set_address("10.1.0.5");
  itf->mutable_addresses(0)->set_prefix_length(24);
  EXPECT_TRUE(ValidateSetupSandbox(r).ok());
  auto bad = r;
  bad.mutable_dns()->set_servers(0, "not-an-ip");
  EXPECT_NE(ValidateSetupSandbox(bad).error().message().find("dns.servers[0]"), std::string::npos);
  bad = r;
  bad.mutable_interfaces(0)->set_mac("02:42:ac:11:00");
  EXPECT_FALSE(ValidateSetupSandbox(bad).ok());
  bad = r;
  bad.mutable_interfaces(0)->mutable_addresses(0)->set_prefix_length(33);
  EXPECT_FALSE(ValidateSetupSandbox(bad).ok());
  bad = r;
  (*bad.mutable_sysctls())["../../etc/passwd"] = "x";
  EXPECT_FALSE(ValidateSetupSandbox(bad).ok());
  bad = r;
  bad.add_extra_hosts("1.2.3.4 a\n5.6.7.8 b");
  EXPECT_FALSE(ValidateSetupSandbox(bad).ok());
  bad = r;
  bad.add_routes()->set_destination("10.0.0.0/8");
  EXPECT_FALSE(ValidateSetupSandbox(bad).ok()) << "a route needs a gateway or a device";
}

TEST(Validation, OnlineResourcesNamesTheFieldOutOfRange) {
  v1::OnlineResourcesRequest r;
  r.set_vcpus(2);
  r.set_added_memory_mib(512);
  EXPECT_TRUE(ValidateOnlineResources(r).ok());
  auto refused = [](const v1::OnlineResourcesRequest& bad, const std::string& field) {
    auto st = ValidateOnlineResources(bad);
    ASSERT_FALSE(st.ok()) << field;
    EXPECT_EQ(st.error().code(), base::ErrorCode::kInvalidArgument);
    EXPECT_NE(st.error().message().find(field), std::string::npos) << st.error().message();
  };
  auto bad = r;
  bad.set_vcpus(0);
  refused(bad, "vcpus");
  bad.set_vcpus(256);
  refused(bad, "vcpus");
  bad = r;
  bad.set_added_memory_mib((1U << 22) + 1);
  refused(bad, "added_memory_mib");
  bad = r;
  bad.set_timeout_ms(60001);
  refused(bad, "timeout_ms");
}

TEST(Validation, ResumeAndPrepareTemplateNameTheFieldOutOfRange) {
  v1::ResumeRequest r;
  r.set_unix_time_ns(1796313124LL * 1000000000);
  r.set_entropy(std::string(64, 'e'));
  EXPECT_TRUE(ValidateResume(r).ok());
  auto refused = [](const base::Status& st, const std::string& field) {
    ASSERT_FALSE(st.ok()) << field;
    EXPECT_EQ(st.error().code(), base::ErrorCode::kInvalidArgument);
    EXPECT_NE(st.error().message().find(field + ":"), std::string::npos) << st.error().message();
  };
  auto bad = r;
  bad.set_unix_time_ns(0);
  refused(ValidateResume(bad), "unix_time_ns");
  bad = r;
  bad.set_entropy(std::string(31, 'e'));
  refused(ValidateResume(bad), "entropy");
  bad.set_entropy(std::string(513, 'e'));
  refused(ValidateResume(bad), "entropy");
  v1::PrepareTemplateRequest p;
  EXPECT_TRUE(ValidatePrepareTemplate(p).ok());
  p.set_keep_free_mib(1025);
  refused(ValidatePrepareTemplate(p), "keep_free_mib");
}

// Zeroing free memory takes chunks until MemFree reaches what is kept, and gives them all back.
TEST(FreeMemory, TakesChunksDownToWhatIsKeptAndFreesThem) {
  uint64_t free_bytes = 64ULL << 20;  // a stand-in MemFree, lowered by each chunk the fake sees taken
  int reads = 0;
  auto mem_free = [&]() -> base::Result<uint64_t> {
    uint64_t now = free_bytes - static_cast<uint64_t>(reads) * (4ULL << 20);
    ++reads;
    return now;
  };
  auto zeroed = ZeroFreeMemory(16ULL << 20, mem_free);
  ASSERT_TRUE(zeroed.ok()) << zeroed.error().message();
  // 64 MiB free, 16 kept, 4 MiB chunks: chunks are taken while at least 16 + 4 MiB are free.
  EXPECT_EQ(*zeroed, 48ULL << 20);
  auto failing = []() -> base::Result<uint64_t> { return base::Internal("no meminfo"); };
  auto failed = ZeroFreeMemory(0, failing);
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.error().message().find("no meminfo"), std::string::npos);
  auto real = ReadMemFree();
  ASSERT_TRUE(real.ok()) << real.error().message();
  EXPECT_GT(*real, 0u);
}

TEST(Validation, SignalsAndStdin) {
  EXPECT_FALSE(ValidateSignal(0).ok());
  EXPECT_FALSE(ValidateSignal(65).ok());
  EXPECT_TRUE(ValidateSignal(15).ok());
  v1::WriteStdinRequest w;
  w.mutable_process()->set_container_id("c");
  w.set_data(std::string(kMaxStdinChunk + 1, 'x'));
  EXPECT_FALSE(ValidateWriteStdin(w).ok());
}

TEST(OciSpec, CarriesProcessRootResourcesAndMounts) {
  auto c = ValidConfig();
  c.mutable_process()->set_cwd("/srv");
  c.mutable_process()->mutable_user()->set_uid(1000);
  c.mutable_process()->mutable_user()->set_gid(1000);
  c.mutable_process()->mutable_user()->add_additional_gids(5);
  c.mutable_process()->set_no_new_privileges(true);
  auto* r = c.mutable_process()->add_rlimits();
  r->set_type("RLIMIT_NOFILE");
  r->set_soft(1024);
  r->set_hard(4096);
  c.set_readonly_rootfs(true);
  c.mutable_resources()->set_memory_limit_bytes(256 << 20);
  c.mutable_resources()->set_cpu_quota_us(50000);
  c.mutable_resources()->set_pids_limit(100);
  c.mutable_resources()->set_cpu_weight(200);
  auto* m = c.add_mounts();
  m->set_destination("/data");
  m->set_source("/run/chrys/shares/vol");
  m->add_options("ro");
  SpecContext ctx{"/run/chrys/containers/web-1/rootfs", "/chrys/web-1", {{"/etc/hosts", "/run/chrys/sandbox/hosts"}}};
  auto spec = BuildOciSpec(c, ctx);
  EXPECT_EQ(spec["root"]["path"], "/run/chrys/containers/web-1/rootfs");
  EXPECT_EQ(spec["root"]["readonly"], true);
  EXPECT_EQ(spec["process"]["args"], (std::vector<std::string>{"/bin/server", "--port=80"}));
  EXPECT_EQ(spec["process"]["cwd"], "/srv");
  EXPECT_EQ(spec["process"]["user"]["uid"], 1000);
  EXPECT_EQ(spec["process"]["user"]["additionalGids"], (std::vector<uint32_t>{5}));
  EXPECT_EQ(spec["process"]["noNewPrivileges"], true);
  EXPECT_EQ(spec["process"]["rlimits"][0]["hard"], 4096);
  // PATH is added when the image config gave none; the request's env is kept.
  auto env = spec["process"]["env"].get<std::vector<std::string>>();
  EXPECT_EQ(env.front().rfind("PATH=", 0), 0u);
  EXPECT_NE(std::find(env.begin(), env.end(), "A=1"), env.end());
  EXPECT_EQ(spec["linux"]["cgroupsPath"], "/chrys/web-1");
  EXPECT_EQ(spec["linux"]["resources"]["memory"]["limit"], 256 << 20);
  EXPECT_EQ(spec["linux"]["resources"]["cpu"]["quota"], 50000);
  EXPECT_EQ(spec["linux"]["resources"]["cpu"]["period"], 100000);
  EXPECT_EQ(spec["linux"]["resources"]["pids"]["limit"], 100);
  EXPECT_EQ(spec["linux"]["resources"]["unified"]["cpu.weight"], "200");
  bool has_share = false;
  bool has_hosts = false;
  for (const auto& mount : spec["mounts"]) {
    has_share = has_share || (mount["destination"] == "/data" && mount["options"][0] == "rbind");
    has_hosts = has_hosts || mount["destination"] == "/etc/hosts";
  }
  EXPECT_TRUE(has_share);
  EXPECT_TRUE(has_hosts);
  // Pods share network/IPC/UTS: only pid, mount and cgroup namespaces are new.
  EXPECT_EQ(spec["linux"]["namespaces"].size(), 3u);
  EXPECT_TRUE(spec["linux"].contains("maskedPaths"));
}

TEST(OciSpec, ExecInheritsTheContainersProcess) {
  v1::ProcessSpec container;
  container.add_args("sleep");
  container.add_env("PATH=/app/bin:/bin");
  container.add_env("GREETING=hello");
  container.set_cwd("/work");
  container.mutable_user()->set_uid(1000);
  container.mutable_capabilities()->add_names("CAP_NET_BIND_SERVICE");
  container.set_no_new_privileges(true);
  auto* limit = container.add_rlimits();
  limit->set_type("RLIMIT_NOFILE");
  limit->set_soft(1024);
  limit->set_hard(1024);

  v1::ProcessSpec request;
  request.add_args("env");
  request.set_tty(true);
  auto exec = ExecProcessSpec(container, request);
  EXPECT_EQ(exec.args().size(), 1);
  EXPECT_EQ(exec.args(0), "env");
  EXPECT_TRUE(exec.tty());
  EXPECT_EQ(exec.env().size(), 2);
  EXPECT_EQ(exec.cwd(), "/work");
  EXPECT_EQ(exec.user().uid(), 1000u);
  ASSERT_TRUE(exec.has_capabilities());
  EXPECT_EQ(exec.capabilities().names_size(), 1);
  EXPECT_TRUE(exec.no_new_privileges());
  EXPECT_EQ(exec.rlimits_size(), 1);

  // The request's env overrides by name and adds; its cwd and user replace; it cannot lift no_new_privileges
  // nor bring capabilities of its own.
  request.add_env("GREETING=bye");
  request.add_env("EXTRA=1");
  request.set_cwd("/tmp");
  request.mutable_user()->set_uid(0);
  request.mutable_capabilities()->add_names("CAP_SYS_ADMIN");
  exec = ExecProcessSpec(container, request);
  EXPECT_EQ(std::vector<std::string>(exec.env().begin(), exec.env().end()),
            (std::vector<std::string>{"PATH=/app/bin:/bin", "GREETING=bye", "EXTRA=1"}));
  EXPECT_EQ(exec.cwd(), "/tmp");
  EXPECT_EQ(exec.user().uid(), 0u);
  EXPECT_EQ(exec.capabilities().names_size(), 1);
  EXPECT_EQ(exec.capabilities().names(0), "CAP_NET_BIND_SERVICE");
  EXPECT_TRUE(exec.no_new_privileges());

  // A container created without a capability set (the defaults) hands that on: the exec gets the defaults too.
  container.clear_capabilities();
  EXPECT_FALSE(ExecProcessSpec(container, request).has_capabilities());
}

TEST(OciSpec, CapabilitiesDefaultsAndPrivileged) {
  auto c = ValidConfig();
  auto spec = BuildOciSpec(c, {});
  EXPECT_EQ(spec["process"]["capabilities"]["bounding"].size(), DefaultCapabilities().size());
  c.mutable_process()->mutable_capabilities()->add_names("CAP_NET_ADMIN");
  spec = BuildOciSpec(c, {});
  EXPECT_EQ(spec["process"]["capabilities"]["bounding"], (std::vector<std::string>{"CAP_NET_ADMIN"}));
  // A present but empty set is no capability at all (Kubernetes' drop: [ALL]), not the defaults.
  c.mutable_process()->mutable_capabilities()->clear_names();
  spec = BuildOciSpec(c, {});
  EXPECT_TRUE(spec["process"]["capabilities"]["bounding"].empty());
  EXPECT_TRUE(spec["process"]["capabilities"]["effective"].empty());
  // Ambient capabilities: a non-root user keeps exactly those through its exec; root keeps its whole set.
  c.mutable_process()->mutable_capabilities()->add_names("CAP_NET_BIND_SERVICE");
  c.mutable_process()->mutable_capabilities()->add_names("CAP_NET_RAW");
  c.mutable_process()->mutable_capabilities()->add_ambient("CAP_NET_BIND_SERVICE");
  c.mutable_process()->mutable_user()->set_uid(1000);
  spec = BuildOciSpec(c, {});
  const std::vector<std::string> bind_only = {"CAP_NET_BIND_SERVICE"};
  EXPECT_EQ(spec["process"]["capabilities"]["ambient"], bind_only);
  EXPECT_EQ(spec["process"]["capabilities"]["inheritable"], bind_only);
  EXPECT_EQ(spec["process"]["capabilities"]["effective"], bind_only);
  EXPECT_EQ(spec["process"]["capabilities"]["permitted"].size(), 2u);
  c.mutable_process()->mutable_user()->set_uid(0);
  spec = BuildOciSpec(c, {});
  EXPECT_EQ(spec["process"]["capabilities"]["ambient"], bind_only);
  EXPECT_EQ(spec["process"]["capabilities"]["inheritable"].size(), 2u);
  c.mutable_process()->mutable_capabilities()->Clear();
  c.set_privileged(true);
  spec = BuildOciSpec(c, {});
  EXPECT_GT(spec["process"]["capabilities"]["bounding"].size(), 30u);
  EXPECT_FALSE(spec["linux"].contains("maskedPaths"));
  auto tty = ValidConfig();
  tty.mutable_process()->set_tty(true);
  auto process = BuildOciProcess(tty.process(), false);
  EXPECT_EQ(process["terminal"], false) << "the agent owns the pty";
  auto env = process["env"].get<std::vector<std::string>>();
  EXPECT_NE(std::find(env.begin(), env.end(), "TERM=xterm"), env.end());
}

TEST(Sandbox, RendersResolvConfAndHosts) {
  v1::DnsConfig dns;
  dns.add_servers("10.96.0.10");
  dns.add_searches("default.svc.cluster.local");
  dns.add_searches("svc.cluster.local");
  dns.add_options("ndots:5");
  EXPECT_EQ(RenderResolvConf(dns),
            "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n");
  std::string hosts = RenderHosts("pod-a", {"10.0.0.5 db"});
  EXPECT_NE(hosts.find("127.0.0.1\tlocalhost"), std::string::npos);
  EXPECT_NE(hosts.find("pod-a"), std::string::npos);
  EXPECT_NE(hosts.find("10.0.0.5 db\n"), std::string::npos);
}

TEST(Sandbox, NetworkCommandsFindNicByMac) {
  v1::SetupSandboxRequest r;
  auto* itf = r.add_interfaces();
  itf->set_mac("02:AA:00:00:00:01");
  itf->set_name("eth0");
  itf->set_mtu(1450);
  itf->add_addresses()->set_address("10.1.0.5");
  itf->mutable_addresses(0)->set_prefix_length(24);
  auto* route = r.add_routes();
  route->set_destination("0.0.0.0/0");
  route->set_gateway("10.1.0.1");
  auto cmds = NetworkCommands(r, {{"02:aa:00:00:00:01", "enp0s3"}});
  ASSERT_TRUE(cmds.ok());
  std::vector<std::vector<std::string>> want = {{"ip", "link", "set", "dev", "lo", "up"},
                                                {"ip", "link", "set", "dev", "enp0s3", "down"},
                                                {"ip", "link", "set", "dev", "enp0s3", "name", "eth0"},
                                                {"ip", "link", "set", "dev", "eth0", "mtu", "1450"},
                                                {"ip", "addr", "replace", "10.1.0.5/24", "dev", "eth0"},
                                                {"ip", "link", "set", "dev", "eth0", "up"},
                                                {"ip", "route", "replace", "default", "via", "10.1.0.1"}};
  EXPECT_EQ(*cmds, want);
  auto missing = NetworkCommands(r, {});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), base::ErrorCode::kNotFound);
}

TEST(Storage, OverlayOptionsPutTopLayerFirst) {
  EXPECT_EQ(OverlayOptions({"/l/base", "/l/mid", "/l/top"}, "/u", "/w"),
            "lowerdir=/l/top:/l/mid:/l/base,upperdir=/u,workdir=/w,index=off,redirect_dir=off");
  std::string header(2048, '\0');
  EXPECT_FALSE(HasExt4Superblock(header));
  header[1080] = static_cast<char>(0x53);
  header[1081] = static_cast<char>(0xEF);
  EXPECT_TRUE(HasExt4Superblock(header));
}

TEST(Cgroup, ParsesKeyValueFiles) {
  std::string text = "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n";
  EXPECT_EQ(CgroupKey(text, "usage_usec"), 1234u);
  EXPECT_EQ(CgroupKey(text, "system_usec"), 234u);
  EXPECT_EQ(CgroupKey(text, "missing"), 0u);
  EXPECT_EQ(CgroupKey("low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n", "oom_kill"), 1u);
}

TEST(Modules, LoadOrderPutsDependenciesFirstWithoutRepeats) {
  auto deps = ParseModulesDep(
      "kernel/virtio_pci.ko: kernel/virtio_pci_legacy_dev.ko kernel/virtio_pci_modern_dev.ko kernel/virtio.ko "
      "kernel/virtio_ring.ko\nkernel/virtio.ko: kernel/virtio_ring.ko\nkernel/virtio_ring.ko:\n"
      "kernel/virtio_blk.ko: kernel/virtio.ko kernel/virtio_ring.ko\nkernel/virtio_pci_legacy_dev.ko:\n"
      "kernel/virtio_pci_modern_dev.ko:\n");
  auto order = ModuleLoadOrder({"kernel/virtio_pci.ko", "kernel/virtio_blk.ko"}, deps);
  std::vector<std::string> want = {
      "kernel/virtio_ring.ko",           "kernel/virtio.ko",     "kernel/virtio_pci_modern_dev.ko",
      "kernel/virtio_pci_legacy_dev.ko", "kernel/virtio_pci.ko", "kernel/virtio_blk.ko"};
  EXPECT_EQ(order, want);
  auto found = FindModulePath(deps, "virtio_blk");
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(*found, "kernel/virtio_blk.ko");
  EXPECT_FALSE(FindModulePath(deps, "ext4").ok());
}

TEST(Modules, PhaseKeepsTheBootPathToWhatTheChannelAndNicNeed) {
  GuestHardware none;
  EXPECT_EQ(PhaseOfModule("kernel/drivers/char/virtio_console.ko", none), ModulePhase::kBoot);
  EXPECT_EQ(PhaseOfModule("kernel/drivers/net/virtio_net.ko", none), ModulePhase::kDeferred);
  EXPECT_EQ(PhaseOfModule("kernel/drivers/block/virtio_blk.ko", none), ModulePhase::kDeferred);
  EXPECT_EQ(PhaseOfModule("kernel/drivers/net/net_failover.ko", none), ModulePhase::kDeferred);
  EXPECT_EQ(PhaseOfModule("kernel/drivers/virtio/virtio_pci.ko", none), ModulePhase::kBoot);
  // Filesystems load after the agent serves; the requests that mount wait for them.
  EXPECT_EQ(PhaseOfModule("kernel/fs/erofs/erofs.ko", none), ModulePhase::kDeferred);
  EXPECT_EQ(PhaseOfModule("kernel/fs/overlayfs/overlay.ko", none), ModulePhase::kDeferred);
  EXPECT_EQ(PhaseOfModule("kernel/fs/fuse/virtiofs.ko", none), ModulePhase::kDeferred);
  EXPECT_EQ(PhaseOfModule("kernel/lib/libcrc32c.ko", none), ModulePhase::kDeferred);
  // Drivers for hardware the VM does not have are skipped, and loaded when it does.
  EXPECT_EQ(PhaseOfModule("kernel/net/vmw_vsock/vsock.ko", none), ModulePhase::kSkip);
  EXPECT_EQ(PhaseOfModule("kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko", none), ModulePhase::kSkip);
  EXPECT_EQ(PhaseOfModule("kernel/drivers/virtio/virtio_mmio.ko", none), ModulePhase::kSkip);
  GuestHardware all{.virtio_vsock = true, .virtio_mmio = true};
  EXPECT_EQ(PhaseOfModule("kernel/net/vmw_vsock/vsock.ko", all), ModulePhase::kBoot);
  EXPECT_EQ(PhaseOfModule("kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko", all), ModulePhase::kBoot);
  EXPECT_EQ(PhaseOfModule("kernel/drivers/virtio/virtio_mmio.ko", all), ModulePhase::kBoot);
  // Compressed module files are named the same way.
  EXPECT_EQ(PhaseOfModule("kernel/fs/erofs/erofs.ko.xz", none), ModulePhase::kDeferred);
}

TEST(Modules, WaitingWithoutADeferredLoadReturnsAtOnce) {
  EXPECT_TRUE(WaitForDeferredModules(std::chrono::milliseconds(0)).ok());
  EXPECT_TRUE(WaitForModule("virtio_net", std::chrono::milliseconds(0)).ok());
}

TEST(Modules, DeferredOnesLoadInTheOrderAPodSetupNeedsThem) {
  // The image builder's list: dependencies first.
  const std::string list =
      "kernel/drivers/virtio/virtio_ring.ko\n"
      "kernel/drivers/virtio/virtio_pci.ko\n"
      "kernel/drivers/block/virtio_blk.ko\n"
      "kernel/net/core/failover.ko\n"
      "kernel/drivers/net/net_failover.ko\n"
      "kernel/drivers/net/virtio_net.ko\n"
      "kernel/drivers/char/virtio_console.ko\n"
      "kernel/net/vmw_vsock/vsock.ko\n"
      "kernel/lib/libcrc32c.ko\n"
      "kernel/fs/erofs/erofs.ko\n"
      "kernel/fs/overlayfs/overlay.ko\n"
      "\n"
      "kernel/fs/fuse/fuse.ko\n"
      "kernel/fs/fuse/virtiofs.ko";
  GuestHardware none;
  EXPECT_EQ(ModulesToLoad(list, ModulePhase::kBoot, none),
            (std::vector<std::string>{"kernel/drivers/virtio/virtio_ring.ko", "kernel/drivers/virtio/virtio_pci.ko",
                                      "kernel/drivers/char/virtio_console.ko"}));
  EXPECT_EQ(ModulesToLoad(list, ModulePhase::kDeferred, none),
            (std::vector<std::string>{
                "kernel/net/core/failover.ko", "kernel/drivers/net/net_failover.ko", "kernel/drivers/net/virtio_net.ko",
                "kernel/fs/fuse/fuse.ko", "kernel/fs/fuse/virtiofs.ko", "kernel/drivers/block/virtio_blk.ko",
                "kernel/lib/libcrc32c.ko", "kernel/fs/erofs/erofs.ko", "kernel/fs/overlayfs/overlay.ko"}));
  EXPECT_EQ(ModulesToLoad(list, ModulePhase::kSkip, none), (std::vector<std::string>{"kernel/net/vmw_vsock/vsock.ko"}));
  EXPECT_TRUE(ModulesToLoad("", ModulePhase::kDeferred, none).empty());
}

TEST(ImageBuilder, ParsesLddOutput) {
  auto libs = ParseLddOutput(
      "\tlinux-vdso.so.1 (0x00007ffc)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n"
      "\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n");
  ASSERT_TRUE(libs.ok());
  EXPECT_EQ(*libs, (std::vector<std::string>{"/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}));
  EXPECT_FALSE(ParseLddOutput("\tlibfoo.so => not found\n").ok());
  EXPECT_TRUE(ParseLddOutput("\tstatically linked\n")->empty());
}

TEST(Cpio, NewcArchiveIsSortedAndReproducible) {
  CpioArchive a;
  CpioEntry file;
  file.data = "hello";
  file.mode = 0755;
  ASSERT_TRUE(a.Add("usr/bin/tool", file).ok());
  CpioEntry link;
  link.type = CpioEntry::Type::kSymlink;
  link.data = "tool";
  ASSERT_TRUE(a.Add("usr/bin/alias", link).ok());
  EXPECT_TRUE(a.Contains("usr"));  // parents are added
  EXPECT_FALSE(a.Add("../escape", file).ok());
  EXPECT_FALSE(a.Add("/abs", file).ok());
  std::string bytes = a.Serialize(0);
  EXPECT_EQ(bytes.substr(0, 6), "070701");
  EXPECT_EQ(bytes.size() % 512, 0u);
  EXPECT_NE(bytes.find("TRAILER!!!"), std::string::npos);
  // Parents precede children; the same members in another insertion order give the same bytes.
  EXPECT_LT(bytes.find("usr\0", 0), bytes.find("usr/bin/tool"));
  CpioArchive b;
  ASSERT_TRUE(b.Add("usr/bin/alias", link).ok());
  ASSERT_TRUE(b.Add("usr/bin/tool", file).ok());
  EXPECT_EQ(b.Serialize(0), bytes);
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

}  // namespace
}  // namespace chrys::guest

namespace chrys::guest::kmod {
namespace {

std::string SignedModule(const std::string& body, const std::string& signature) {
  std::string info(12, '\0');
  uint32_t n = static_cast<uint32_t>(signature.size());
  info[8] = static_cast<char>(n >> 24);
  info[9] = static_cast<char>(n >> 16);
  info[10] = static_cast<char>(n >> 8);
  info[11] = static_cast<char>(n);
  return body + signature + info + std::string(kSignatureMagic);
}

TEST(ModuleSignature, StripsTheAppendedSignature) {
  std::string body = std::string(
                         "\x7f"
                         "ELF",
                         4) +
                     std::string(300, 'x');
  auto stripped = StripModuleSignature(SignedModule(body, std::string(512, 's')), "test.ko");
  ASSERT_TRUE(stripped.ok()) << stripped.error().message();
  EXPECT_EQ(*stripped, body);
  EXPECT_FALSE(HasModuleSignature(*stripped));
}

TEST(ModuleSignature, UnsignedModuleUnchanged) {
  std::string body = std::string(
                         "\x7f"
                         "ELF",
                         4) +
                     std::string(100, 'y');
  auto stripped = StripModuleSignature(body, "plain.ko");
  ASSERT_TRUE(stripped.ok());
  EXPECT_EQ(*stripped, body);
}

TEST(ModuleSignature, LengthBeyondTheFileIsAnErrorNamingTheModule) {
  std::string module = SignedModule("tiny", "sig");
  module[module.size() - kSignatureMagic.size() - 4] = '\x7f';  // signature length now ~2 GiB
  auto stripped = StripModuleSignature(module, "broken.ko");
  ASSERT_FALSE(stripped.ok());
  EXPECT_NE(stripped.error().message().find("broken.ko"), std::string::npos);
  EXPECT_NE(stripped.error().message().find("exceeds the file"), std::string::npos);
  auto truncated = StripModuleSignature(std::string(kSignatureMagic), "stub.ko");
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.error().message().find("stub.ko"), std::string::npos);
}

// A module of the installed kernel, when there is one: what the image builders really read.
TEST(ModuleSignature, RealKernelModuleLosesOnlyItsSignature) {
  std::string path;
  for (const auto& entry : std::filesystem::directory_iterator(
           "/lib/modules", std::filesystem::directory_options::skip_permission_denied)) {
    std::string candidate = entry.path().string() + "/kernel/lib/crc16.ko";
    if (std::filesystem::exists(candidate)) {
      path = candidate;
      break;
    }
  }
  if (path.empty()) {
    GTEST_SKIP() << "no /lib/modules/*/kernel/lib/crc16.ko on this machine";
  }
  auto module = base::ReadFile(path, 16 << 20);
  ASSERT_TRUE(module.ok());
  if (!HasModuleSignature(*module)) {
    GTEST_SKIP() << path << " is not signed";
  }
  auto stripped = StripModuleSignature(*module, path);
  ASSERT_TRUE(stripped.ok()) << stripped.error().message();
  EXPECT_LT(stripped->size(), module->size());
  EXPECT_EQ(stripped->compare(0, 4,
                              "\x7f"
                              "ELF"),
            0);
  EXPECT_EQ(module->compare(0, stripped->size(), *stripped), 0);
  EXPECT_GT(module->size() - stripped->size(), 256u);  // an RSA signature and its trailer
}

}  // namespace
}  // namespace chrys::guest::kmod
