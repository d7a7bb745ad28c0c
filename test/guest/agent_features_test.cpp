// Unit tests of the agent's container features: cgroup resource updates (the writes, their rollback, reading
// back), user resolution in the container's /etc/passwd and /etc/group, and the seccomp filters.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>

#include "base/file_util.h"
#include "guest/agent/container_manager.h"
#include "guest/agent/hotplug.h"
#include "guest/agent/oci_spec.h"
#include "guest/agent/storage.h"
#include "guest/agent/validation.h"

namespace chrys::guest {
namespace {

using nlohmann::json;

// A scratch directory standing in for a container's cgroup: the interface files exist, as the kernel's would.
class FakeCgroup {
 public:
  FakeCgroup() {
    char tmpl[] = "/tmp/chrys-cgroup-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~FakeCgroup() { (void)base::RemoveTree(path_); }
  void Set(const std::string& file, const std::string& value) {
    ASSERT_TRUE(base::WriteFileAtomic(path_ + "/" + file, value).ok());
  }
  std::string Get(const std::string& file) const {
    auto text = base::ReadFile(path_ + "/" + file);
    return text.ok() ? *text : "<missing>";
  }
  std::function<std::string(const std::string&)> Reader() const {
    return [this](const std::string& file) {
      auto text = base::ReadFile(path_ + "/" + file);
      return text.ok() ? *text : std::string();
    };
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::map<std::string, std::string> AsMap(const std::vector<CgroupWrite>& writes) {
  std::map<std::string, std::string> out;
  for (const auto& w : writes) {
    out[w.file] = w.value;
  }
  return out;
}

TEST(CgroupUpdate, OnlyFieldsThatAreSetAreWritten) {
  FakeCgroup cg;
  cg.Set("cpu.max", "max 100000\n");
  v1::Resources r;
  r.set_memory_limit_bytes(64 << 20);
  auto writes = CgroupWritesFor(r, cg.Reader());
  ASSERT_TRUE(writes.ok()) << writes.error().message();
  EXPECT_EQ(AsMap(*writes), (std::map<std::string, std::string>{{"memory.max", "67108864"}}));

  v1::Resources all;
  all.set_cpu_quota_us(50000);
  all.set_cpu_weight(300);
  all.set_cpuset_cpus("0-1");
  all.set_cpuset_mems("0");
  all.set_pids_limit(64);
  (*all.mutable_hugepage_limits())["2MB"] = 4 << 20;
  (*all.mutable_unified())["memory.high"] = "50000000";
  writes = CgroupWritesFor(all, cg.Reader());
  ASSERT_TRUE(writes.ok());
  auto m = AsMap(*writes);
  EXPECT_EQ(m["cpu.max"], "50000 100000");  // the period the cgroup had stays
  EXPECT_EQ(m["cpu.weight"], "300");
  EXPECT_EQ(m["cpuset.cpus"], "0-1");
  EXPECT_EQ(m["cpuset.mems"], "0");
  EXPECT_EQ(m["pids.max"], "64");
  EXPECT_EQ(m["hugetlb.2MB.max"], "4194304");
  EXPECT_EQ(m["memory.high"], "50000000");
  EXPECT_EQ(writes->back().file, "memory.high");  // unified last: an explicit file wins
}

TEST(CgroupUpdate, CpuMaxKeepsTheHalfNotAskedFor) {
  FakeCgroup cg;
  cg.Set("cpu.max", "20000 50000\n");
  v1::Resources period_only;
  period_only.set_cpu_period_us(200000);
  auto writes = CgroupWritesFor(period_only, cg.Reader());
  ASSERT_TRUE(writes.ok());
  EXPECT_EQ(AsMap(*writes)["cpu.max"], "20000 200000");
}

TEST(CgroupUpdate, SwapCountsMemoryPlusSwapLikeOci) {
  FakeCgroup cg;
  cg.Set("memory.max", "134217728\n");
  v1::Resources r;
  r.set_memory_swap_limit_bytes(200 << 20);
  auto writes = CgroupWritesFor(r, cg.Reader());
  ASSERT_TRUE(writes.ok());
  EXPECT_EQ(AsMap(*writes)["memory.swap.max"], std::to_string((200 << 20) - 134217728));

  r.set_memory_swap_limit_bytes(100 << 20);  // below the memory limit in force
  writes = CgroupWritesFor(r, cg.Reader());
  ASSERT_FALSE(writes.ok());
  EXPECT_NE(writes.error().message().find("below the memory limit"), std::string::npos);

  r.set_memory_swap_limit_bytes(-1);
  writes = CgroupWritesFor(r, cg.Reader());
  ASSERT_TRUE(writes.ok());
  EXPECT_EQ(AsMap(*writes)["memory.swap.max"], "max");
}

TEST(CgroupUpdate, AppliesAndReadsBack) {
  FakeCgroup cg;
  cg.Set("memory.max", "max\n");
  cg.Set("cpu.max", "max 100000\n");
  cg.Set("pids.max", "max\n");
  v1::Resources r;
  r.set_memory_limit_bytes(32 << 20);
  r.set_cpu_quota_us(25000);
  auto writes = CgroupWritesFor(r, cg.Reader());
  ASSERT_TRUE(writes.ok());
  ASSERT_TRUE(ApplyCgroupWrites(cg.path(), *writes).ok());
  EXPECT_EQ(cg.Get("memory.max"), "33554432");
  auto now = ReadCgroupResources(cg.path(), r);
  EXPECT_EQ(now.memory_limit_bytes(), 32 << 20);
  EXPECT_EQ(now.cpu_quota_us(), 25000);
  EXPECT_EQ(now.cpu_period_us(), 100000u);
  EXPECT_EQ(now.pids_limit(), 0);  // "max" reads as unlimited
}

TEST(CgroupUpdate, AFailedWriteRestoresTheFilesAlreadyWritten) {
  FakeCgroup cg;
  cg.Set("memory.max", "max\n");
  cg.Set("cpu.weight", "100\n");
  // cpuset.cpus does not exist in this cgroup (controller not enabled): the update must not half-apply.
  std::vector<CgroupWrite> writes = {{"memory.max", "33554432"}, {"cpu.weight", "500"}, {"cpuset.cpus", "0"}};
  auto applied = ApplyCgroupWrites(cg.path(), writes);
  ASSERT_FALSE(applied.ok());
  EXPECT_NE(applied.error().message().find("cpuset.cpus"), std::string::npos) << applied.error().message();
  EXPECT_EQ(cg.Get("memory.max"), "max");
  EXPECT_EQ(cg.Get("cpu.weight"), "100");
}

TEST(CgroupUpdate, NoSwapIsFineWithoutSwapAccounting) {
  FakeCgroup cg;
  cg.Set("memory.max", "max\n");
  std::vector<CgroupWrite> writes = {{"memory.max", "33554432"}, {"memory.swap.max", "0"}};
  EXPECT_TRUE(ApplyCgroupWrites(cg.path(), writes).ok());
  EXPECT_EQ(cg.Get("memory.max"), "33554432");
}

TEST(CgroupUpdate, ValidationRefusesNegativeValuesAndForeignFiles) {
  v1::UpdateContainerResourcesRequest req;
  req.set_container_id("c1");
  req.mutable_resources()->set_memory_limit_bytes(-5);
  auto s = ValidateUpdateResources(req);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("resources.memory_limit_bytes"), std::string::npos);

  req.mutable_resources()->set_memory_limit_bytes(0);
  req.mutable_resources()->set_cpu_quota_us(-1);
  EXPECT_FALSE(ValidateUpdateResources(req).ok());
  req.mutable_resources()->set_cpu_quota_us(0);
  req.mutable_resources()->set_memory_swap_limit_bytes(-2);
  EXPECT_FALSE(ValidateUpdateResources(req).ok());
  req.mutable_resources()->set_memory_swap_limit_bytes(-1);
  EXPECT_TRUE(ValidateUpdateResources(req).ok());

  for (const char* key : {"../../cgroup.procs", "cgroup.procs", "memory", "Memory.max", ""}) {
    v1::UpdateContainerResourcesRequest bad;
    bad.set_container_id("c1");
    (*bad.mutable_resources()->mutable_unified())[key] = "1";
    EXPECT_FALSE(ValidateUpdateResources(bad).ok()) << key;
  }
  v1::UpdateContainerResourcesRequest pages;
  pages.set_container_id("c1");
  (*pages.mutable_resources()->mutable_hugepage_limits())["2XB"] = 1;
  EXPECT_FALSE(ValidateUpdateResources(pages).ok());
  v1::UpdateContainerResourcesRequest cpus;
  cpus.set_container_id("c1");
  cpus.mutable_resources()->set_cpuset_cpus("0;reboot");
  EXPECT_FALSE(ValidateUpdateResources(cpus).ok());
  v1::UpdateContainerResourcesRequest no_id;
  EXPECT_FALSE(ValidateUpdateResources(no_id).ok());
}

TEST(OciSpec, CarriesTheNewResourceFields) {
  v1::ContainerConfig c;
  c.set_id("c1");
  c.mutable_process()->add_args("/bin/sh");
  c.mutable_resources()->set_memory_limit_bytes(64 << 20);
  c.mutable_resources()->set_memory_swap_limit_bytes(128 << 20);
  c.mutable_resources()->set_cpuset_mems("0");
  (*c.mutable_resources()->mutable_hugepage_limits())["2MB"] = 2 << 20;
  (*c.mutable_resources()->mutable_unified())["memory.high"] = "60000000";
  c.mutable_resources()->set_cpu_weight(50);
  auto spec = BuildOciSpec(c, SpecContext{"/r", "/chrys/c1", {}});
  const auto& res = spec["linux"]["resources"];
  EXPECT_EQ(res["memory"]["swap"], 128 << 20);
  EXPECT_EQ(res["cpu"]["mems"], "0");
  EXPECT_EQ(res["hugepageLimits"][0]["pageSize"], "2MB");
  EXPECT_EQ(res["unified"]["memory.high"], "60000000");
  EXPECT_EQ(res["unified"]["cpu.weight"], "50");
}

const char* kPasswd =
    "root:x:0:0:root:/root:/bin/sh\n"
    "# a comment\n"
    "app:x:1000:1000:App:/home/app:/bin/sh\n"
    "broken line\n"
    "svc:x:1001:50::/:/bin/false\n";
const char* kGroup =
    "root:x:0:\n"
    "app:x:1000:\n"
    "staff:x:50:app,svc\n"
    "audio:x:29:app\n";

TEST(ResolveUser, NamesNumbersAndGroups) {
  v1::User by_name;
  by_name.set_name("app");
  auto u = ResolveUser(by_name, std::string(kPasswd), std::string(kGroup));
  ASSERT_TRUE(u.ok()) << u.error().message();
  EXPECT_EQ(u->uid(), 1000u);
  EXPECT_EQ(u->gid(), 1000u);
  EXPECT_EQ(std::vector<uint32_t>(u->additional_gids().begin(), u->additional_gids().end()),
            (std::vector<uint32_t>{50, 29}));
  EXPECT_TRUE(u->name().empty());  // resolved: nothing left for crun to look up

  v1::User name_and_group = by_name;
  name_and_group.set_group("staff");
  name_and_group.add_additional_gids(29);  // already a group of app: not repeated
  name_and_group.add_additional_gids(4000);
  u = ResolveUser(name_and_group, std::string(kPasswd), std::string(kGroup));
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->gid(), 50u);
  EXPECT_EQ(std::vector<uint32_t>(u->additional_gids().begin(), u->additional_gids().end()),
            (std::vector<uint32_t>{29, 4000}));

  v1::User numeric;
  numeric.set_name("1001");
  u = ResolveUser(numeric, std::string(kPasswd), std::string(kGroup));
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->uid(), 1001u);
  EXPECT_EQ(u->gid(), 50u);                 // from its passwd entry
  EXPECT_EQ(u->additional_gids_size(), 0);  // staff is its primary group already

  v1::User unknown_number;
  unknown_number.set_name("4242");
  unknown_number.set_group("4343");
  u = ResolveUser(unknown_number, std::nullopt, std::nullopt);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->uid(), 4242u);
  EXPECT_EQ(u->gid(), 4343u);

  v1::User number_no_entry;
  number_no_entry.set_name("4242");
  u = ResolveUser(number_no_entry, std::string(kPasswd), std::string(kGroup));
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->gid(), 0u);

  v1::User unset;
  unset.set_uid(7);
  unset.set_gid(8);
  u = ResolveUser(unset, std::nullopt, std::nullopt);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->uid(), 7u);
  EXPECT_EQ(u->gid(), 8u);
}

TEST(ResolveUser, UnknownNamesAreErrorsThatNameThem) {
  v1::User ghost;
  ghost.set_name("ghost");
  auto u = ResolveUser(ghost, std::string(kPasswd), std::string(kGroup));
  ASSERT_FALSE(u.ok());
  EXPECT_NE(u.error().message().find("'ghost'"), std::string::npos);
  EXPECT_NE(u.error().message().find("/etc/passwd"), std::string::npos);

  u = ResolveUser(ghost, std::nullopt, std::nullopt);
  ASSERT_FALSE(u.ok());
  EXPECT_NE(u.error().message().find("has no /etc/passwd"), std::string::npos);

  v1::User bad_group;
  bad_group.set_name("app");
  bad_group.set_group("wheel");
  u = ResolveUser(bad_group, std::string(kPasswd), std::string(kGroup));
  ASSERT_FALSE(u.ok());
  EXPECT_NE(u.error().message().find("'wheel'"), std::string::npos);

  v1::ProcessSpec p;
  p.add_args("/bin/sh");
  p.mutable_user()->set_name("a:b");
  EXPECT_FALSE(ValidateProcessSpec(p, "process").ok());
  p.mutable_user()->set_name("");
  p.mutable_user()->set_group("staff");
  EXPECT_FALSE(ValidateProcessSpec(p, "process").ok());  // a group needs a user
}

bool DeniesWithEperm(const json& seccomp, const std::string& name) {
  for (const auto& rule : seccomp["syscalls"]) {
    auto names = rule["names"].get<std::vector<std::string>>();
    if (std::find(names.begin(), names.end(), name) != names.end()) {
      return rule["action"] == "SCMP_ACT_ERRNO" && rule["errnoRet"] == 1;
    }
  }
  return false;
}

TEST(Seccomp, RuntimeDefaultDeniesKernelWideCalls) {
  auto profile = RuntimeDefaultSeccomp(DefaultCapabilities());
  EXPECT_EQ(profile["defaultAction"], "SCMP_ACT_ALLOW");
  EXPECT_FALSE(profile["architectures"].empty());
  for (const char* name : {"kexec_load", "open_by_handle_at", "init_module", "finit_module", "delete_module", "mount",
                           "keyctl", "add_key", "request_key", "ptrace", "bpf", "perf_event_open", "userfaultfd"}) {
    EXPECT_TRUE(DeniesWithEperm(profile, name)) << name;
  }
  EXPECT_FALSE(DeniesWithEperm(profile, "read"));
  EXPECT_FALSE(DeniesWithEperm(profile, "clone3"));  // ENOSYS, not EPERM: libc falls back to clone
  // unshare is refused only with CLONE_NEWUSER in its flags.
  bool newuser_rule = false;
  for (const auto& rule : profile["syscalls"]) {
    auto names = rule["names"].get<std::vector<std::string>>();
    if (std::find(names.begin(), names.end(), "unshare") != names.end()) {
      newuser_rule = rule["args"][0]["op"] == "SCMP_CMP_MASKED_EQ" && rule["args"][0]["value"] == 0x10000000;
    }
  }
  EXPECT_TRUE(newuser_rule);

  // Granted capabilities keep the calls they exist for.
  auto admin = DefaultCapabilities();
  admin.push_back("CAP_SYS_ADMIN");
  admin.push_back("CAP_SYS_PTRACE");
  auto relaxed = RuntimeDefaultSeccomp(admin);
  EXPECT_FALSE(DeniesWithEperm(relaxed, "mount"));
  EXPECT_FALSE(DeniesWithEperm(relaxed, "unshare"));
  EXPECT_FALSE(DeniesWithEperm(relaxed, "ptrace"));
  EXPECT_TRUE(DeniesWithEperm(relaxed, "kexec_load"));
}

TEST(Seccomp, SpecFollowsTheModeAndPrivilegedIsUnconfined) {
  v1::ContainerConfig c;
  c.set_id("c1");
  c.mutable_process()->add_args("/bin/sh");
  SpecContext ctx{"/r", "/chrys/c1", {}};
  EXPECT_FALSE(BuildOciSpec(c, ctx)["linux"].contains("seccomp"));  // Unconfined
  c.mutable_seccomp()->set_mode(v1::Seccomp::RUNTIME_DEFAULT);
  auto spec = BuildOciSpec(c, ctx);
  ASSERT_TRUE(spec["linux"].contains("seccomp"));
  EXPECT_TRUE(DeniesWithEperm(spec["linux"]["seccomp"], "mount"));
  c.set_privileged(true);
  EXPECT_FALSE(BuildOciSpec(c, ctx)["linux"].contains("seccomp"));
  c.set_privileged(false);
  c.mutable_seccomp()->set_mode(v1::Seccomp::LOCALHOST);
  c.mutable_seccomp()->set_profile_json(
      R"({"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"}]})");
  EXPECT_TRUE(ValidateContainerConfig([&] {
                auto v = c;
                v.mutable_rootfs()->add_layer_serials("l1");
                return v;
              }())
                  .ok());
  spec = BuildOciSpec(c, ctx);
  EXPECT_EQ(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
  EXPECT_EQ(spec["linux"]["seccomp"]["syscalls"][0]["names"][1], "write");
}

TEST(Seccomp, LocalhostProfilesAreCheckedAndNormalised) {
  // Docker's form: archMap and single names.
  auto docker = LocalhostSeccomp(R"({
    "defaultAction": "SCMP_ACT_ALLOW",
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
    "syscalls": [{"name": "chmod", "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "args": []}]})");
  ASSERT_TRUE(docker.ok()) << docker.error().message();
  EXPECT_EQ((*docker)["syscalls"][0]["names"][0], "chmod");
#if defined(__x86_64__)
  EXPECT_EQ((*docker)["architectures"],
            (std::vector<std::string>{"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"}));
#endif
  EXPECT_FALSE(LocalhostSeccomp("not json").ok());
  EXPECT_FALSE(LocalhostSeccomp("[]").ok());
  EXPECT_FALSE(LocalhostSeccomp(R"({"defaultAction":"ALLOW"})").ok());
  EXPECT_FALSE(
      LocalhostSeccomp(R"({"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":[],"action":"SCMP_ACT_ERRNO"}]})")
          .ok());
  auto conditional = LocalhostSeccomp(
      R"({"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["mount"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}}]})");
  ASSERT_FALSE(conditional.ok());
  EXPECT_NE(conditional.error().message().find("includes/excludes"), std::string::npos);

  v1::Seccomp bad;
  bad.set_mode(v1::Seccomp::LOCALHOST);
  EXPECT_FALSE(ValidateSeccomp(bad, "config.seccomp").ok());  // no profile
  bad.set_profile_json("{");
  EXPECT_FALSE(ValidateSeccomp(bad, "config.seccomp").ok());
  v1::Seccomp stray;
  stray.set_mode(v1::Seccomp::RUNTIME_DEFAULT);
  stray.set_profile_json("{}");
  EXPECT_FALSE(ValidateSeccomp(stray, "config.seccomp").ok());
}

TEST(Storage, WaitUntilReadableIsBoundedAndNamesTheDisk) {
  FakeCgroup dir;  // any scratch directory
  dir.Set("disk", "x");
  EXPECT_TRUE(WaitUntilReadable(dir.path() + "/disk", std::chrono::milliseconds(100)).ok());
  dir.Set("empty", "");
  auto empty = WaitUntilReadable(dir.path() + "/empty", std::chrono::milliseconds(50));
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.error().message().find("size 0"), std::string::npos) << empty.error().message();
  auto missing = WaitUntilReadable(dir.path() + "/vdz", std::chrono::milliseconds(50));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("/vdz"), std::string::npos);
}

}  // namespace
// A stand-in for /sys/devices/system: CPU and memory-block directories whose state files the onliner writes, as
// the kernel's would be.
class FakeSystemDir {
 public:
  FakeSystemDir() {
    char tmpl[] = "/tmp/chrys-sysfs-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
    EXPECT_TRUE(base::MakeDirs(path_ + "/cpu/cpu0").ok());  // the boot CPU: no 'online' file
    EXPECT_TRUE(base::MakeDirs(path_ + "/memory").ok());
    EXPECT_TRUE(base::WriteFileAtomic(path_ + "/memory/block_size_bytes", "8000000\n").ok());  // 128 MiB
  }
  ~FakeSystemDir() { (void)base::RemoveTree(path_); }
  void AddCpu(int n, const std::string& online) {
    ASSERT_TRUE(base::MakeDirs(path_ + "/cpu/cpu" + std::to_string(n)).ok());
    ASSERT_TRUE(base::WriteFileAtomic(path_ + "/cpu/cpu" + std::to_string(n) + "/online", online + "\n").ok());
  }
  void AddMemoryBlock(int n, const std::string& state) {
    ASSERT_TRUE(base::MakeDirs(path_ + "/memory/memory" + std::to_string(n)).ok());
    ASSERT_TRUE(base::WriteFileAtomic(path_ + "/memory/memory" + std::to_string(n) + "/state", state + "\n").ok());
  }
  std::string Read(const std::string& rel) const {
    auto text = base::ReadFile(path_ + "/" + rel);
    return text.ok() ? *text : "<missing>";
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(ResourceOnliner, OnlinesHotPluggedCpusAndMemoryBeyondTheBootMemory) {
  FakeSystemDir sys;
  sys.AddMemoryBlock(0, "online");
  sys.AddMemoryBlock(1, "online");
  ResourceOnliner onliner(sys.path());  // boot: 1 CPU, 2 blocks
  EXPECT_EQ(onliner.boot_memory_blocks(), 2);
  auto nothing_yet = onliner.OnlinePass();
  ASSERT_TRUE(nothing_yet.ok()) << nothing_yet.error().message();
  EXPECT_EQ(nothing_yet->vcpus, 1);
  EXPECT_EQ(nothing_yet->added_memory_mib, 0);
  EXPECT_EQ(nothing_yet->memory_block_mib, 128);

  // The host plugs a vCPU and 256 MiB: the kernel adds them offline.
  sys.AddCpu(1, "0");
  sys.AddMemoryBlock(32, "offline");
  sys.AddMemoryBlock(33, "offline");
  auto online = onliner.WaitOnline(2, 256, std::chrono::seconds(2));
  ASSERT_TRUE(online.ok()) << online.error().message();
  EXPECT_EQ(online->vcpus, 2);
  EXPECT_EQ(online->added_memory_mib, 256);
  EXPECT_EQ(sys.Read("cpu/cpu1/online"), "1");
  EXPECT_EQ(sys.Read("memory/memory32/state"), "online");
  EXPECT_EQ(sys.Read("memory/memory33/state"), "online");
  EXPECT_EQ(sys.Read("memory/memory0/state"), "online\n") << "what is online is left alone";
}

TEST(ResourceOnliner, SaysWhatNeverCameOnline) {
  FakeSystemDir sys;
  sys.AddMemoryBlock(0, "online");
  ResourceOnliner onliner(sys.path());
  sys.AddCpu(1, "0");
  auto missing = onliner.WaitOnline(3, 128, std::chrono::milliseconds(50));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), base::ErrorCode::kDeadlineExceeded);
  EXPECT_NE(missing.error().message().find("2 of 3 vCPUs and 0 of 128 MiB"), std::string::npos)
      << missing.error().message();

  // A kernel without memory hot-plug has no block size: refused with the file named.
  ASSERT_TRUE(base::RemoveFileIfExists(sys.path() + "/memory/block_size_bytes").ok());
  auto no_hotplug = onliner.OnlinePass();
  ASSERT_FALSE(no_hotplug.ok());
  EXPECT_NE(no_hotplug.error().message().find("block_size_bytes"), std::string::npos);
}

}  // namespace chrys::guest
