// End-to-end tests of VM sandboxes on real QEMU (TCG here): create, agent, hot-plug, stop, adoption, bad input.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "base/file_util.h"
#include "e2e/runtime/test_guest.h"
#include "runtime/cgroup.h"
#include "runtime/qemu.h"
#include "runtime/sandbox.h"

namespace chrys::runtime {
namespace {

using namespace std::chrono_literals;
using testing::BuildErofsImage;
using testing::BuildTestInitramfs;
using testing::GuestFlavor;
using testing::LineAgentConnector;
using testing::ProcessesMentioning;
using testing::TestNetns;

bool Exists(const std::string& path) {
  return ::access(path.c_str(), F_OK) == 0;
}

struct Env {
  std::string work;
  std::string kernel;
  std::string kernel_version;
  std::string agent_initramfs;
  std::string never_ready_initramfs;
  std::string garbage_initramfs;
  std::string skip_reason;
};

Env& TheEnv() {
  static Env env;
  return env;
}

class RuntimeE2eEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    Env& env = TheEnv();
    // VMMs are double-forked; as subreaper this process reaps them, like systemd does for chrysd.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    if (::geteuid() != 0) {
      env.skip_reason = "needs root";
      return;
    }
    env.kernel = testing::FindCloudKernel();
    if (env.kernel.empty() || !Exists("/usr/bin/qemu-system-x86_64")) {
      env.skip_reason = "needs /boot/vmlinuz-*-cloud-amd64 and qemu-system-x86_64";
      return;
    }
    env.kernel_version = env.kernel.substr(std::string("/boot/vmlinuz-").size());
    env.work = "/tmp/crt-" + std::to_string(::getpid());
    ASSERT_TRUE(base::MakeDirs(env.work + "/agent").ok());
    ASSERT_TRUE(base::MakeDirs(env.work + "/never").ok());
    auto agent = BuildTestInitramfs(env.work + "/agent", env.kernel_version, GuestFlavor::kAgent);
    ASSERT_TRUE(agent.ok()) << agent.error().message();
    env.agent_initramfs = *agent;
    auto never = BuildTestInitramfs(env.work + "/never", env.kernel_version, GuestFlavor::kNeverReady);
    ASSERT_TRUE(never.ok()) << never.error().message();
    env.never_ready_initramfs = *never;
    env.garbage_initramfs = env.work + "/garbage.img";
    ASSERT_TRUE(base::WriteFileAtomic(env.garbage_initramfs, std::string(4096, 'x')).ok());
  }
  void TearDown() override {
    if (!TheEnv().work.empty()) {
      (void)base::RemoveTree(TheEnv().work);
    }
  }
};

const auto* const kEnvRegistered = ::testing::AddGlobalTestEnvironment(new RuntimeE2eEnvironment);

class SandboxE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    (void)kEnvRegistered;
    if (!TheEnv().skip_reason.empty()) {
      GTEST_SKIP() << TheEnv().skip_reason;
    }
    // Short: unix socket paths under the run dir must stay below 108 bytes.
    static int counter = 0;
    tag_ = "rt" + std::to_string(::getpid()) + "t" + std::to_string(++counter);
    root_ = TheEnv().work + "/" + tag_;
    ASSERT_TRUE(base::MakeDirs(root_).ok());
    cgroup_parent_ = "chrys-e2e-" + tag_;
    agent_ = std::make_shared<LineAgentConnector>();
  }

  void TearDown() override {
    if (manager_) {
      // A test that failed half-way may leave a running sandbox: stop it the regular way first.
      for (const auto& st : manager_->List()) {
        (void)manager_->Stop(st.id);
      }
      manager_.reset();
    }
    for (pid_t pid : ProcessesMentioning(tag_)) {
      ::kill(pid, SIGKILL);  // only processes of this test: their command line carries the unique tag
    }
    // Killed VMMs leave their cgroup only once they are gone.
    for (int i = 0; i < 100 && !ProcessesMentioning(tag_).empty(); ++i) {
      std::this_thread::sleep_for(50ms);
    }
    auto hierarchies = DiscoverCgroupHierarchies();
    if (hierarchies.ok()) {
      for (const auto& h : *hierarchies) {
        std::string dir = h.mount_point + "/" + cgroup_parent_;
        ::rmdir((dir + "/chrys-" + last_id_).c_str());
        ::rmdir(dir.c_str());
      }
    }
  }

  SandboxManagerOptions Options(const std::string& initramfs) {
    SandboxManagerOptions o;
    o.state_dir = root_ + "/state";
    o.run_dir = root_ + "/run";
    o.kernel_path = TheEnv().kernel;
    o.initramfs_path = initramfs;
    o.kernel_cmdline = "console=ttyS0 panic=-1 quiet";
    o.sizing.default_vcpus = 1;
    o.sizing.default_memory_mib = 256;
    o.sizing.overhead_memory_mib = 0;
    o.boot_timeout = 90s;
    o.graceful_stop_timeout = 10s;
    o.agent = agent_;
    o.vmm_factory = [](VmmKind kind) -> base::Result<std::unique_ptr<Vmm>> {
      QemuConfig c;
      c.accel = "auto";
      c.accel_cache_path = "";
      return std::unique_ptr<Vmm>(std::make_unique<QemuVmm>(c));
    };
    return o;
  }

  SandboxRequest Request(const std::string& id) {
    last_id_ = id;
    SandboxRequest r;
    r.id = id;
    r.handler = "chrysalis-qemu";
    r.cgroup_parent = cgroup_parent_;
    return r;
  }

  // Stop left nothing: no process, socket dir, scratch disk or cgroup.
  void ExpectNothingLeft(const std::string& id, const SandboxManagerOptions& o) {
    EXPECT_TRUE(ProcessesMentioning(tag_).empty()) << "a qemu/virtiofsd process of " << id << " survived";
    EXPECT_FALSE(Exists(o.run_dir + "/" + id)) << "run dir (sockets) left";
    EXPECT_FALSE(Exists(o.state_dir + "/" + id + "/disks")) << "scratch disks left";
    auto hierarchies = DiscoverCgroupHierarchies();
    ASSERT_TRUE(hierarchies.ok());
    for (const auto& h : *hierarchies) {
      EXPECT_FALSE(Exists(h.mount_point + "/" + cgroup_parent_ + "/chrys-" + id)) << "cgroup left in " << h.mount_point;
    }
  }

  std::string Call(const std::string& id, const std::string& cmd) {
    auto st = manager_->Inspect(id);
    EXPECT_TRUE(st.ok());
    auto reply = agent_->Call(id, st->agent, cmd, 30s);
    return reply.ok() ? *reply : "ERROR: " + reply.error().message();
  }

  std::string tag_;
  std::string root_;
  std::string cgroup_parent_;
  std::string last_id_;
  std::shared_ptr<LineAgentConnector> agent_;
  std::unique_ptr<SandboxManager> manager_;
};

TEST_F(SandboxE2eTest, CreateHotplugRunStopLeavesNothing) {
  auto netns = TestNetns::Create(tag_, 2);
  ASSERT_TRUE(netns.ok()) << netns.error().message();
  std::string share = root_ + "/share";
  ASSERT_TRUE(base::MakeDirs(share).ok());
  ASSERT_TRUE(base::WriteFileAtomic(share + "/greeting", "hello-from-virtiofs").ok());

  auto opts = Options(TheEnv().agent_initramfs);
  manager_ = std::make_unique<SandboxManager>(opts);
  ASSERT_TRUE(manager_->Recover().ok());
  SandboxRequest req = Request(tag_ + "-a");
  req.netns_path = (*netns)->path();
  req.resources.cpu_millis = 1500;  // → 2 vCPUs, one tap queue pair each
  req.interfaces.push_back({(*netns)->queue_fds(), "02:00:00:aa:bb:01", 1500});
  req.fs_shares.push_back({"vol0", share, false});
  auto created = manager_->Create(req);
  ASSERT_TRUE(created.ok()) << created.error().message();
  EXPECT_EQ(created->state, SandboxState::kReady);
  EXPECT_TRUE(ProcessRunning(created->vmm_pid));

  // The VMM runs inside the pod netns and in the pod cgroup.
  auto ns_link = [](const std::string& p) {
    char buf[128] = {};
    ssize_t n = ::readlink(p.c_str(), buf, sizeof buf - 1);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  };
  struct stat ns_stat {};
  ASSERT_EQ(::stat((*netns)->path().c_str(), &ns_stat), 0);
  EXPECT_EQ(ns_link("/proc/" + std::to_string(created->vmm_pid) + "/ns/net"),
            "net:[" + std::to_string(ns_stat.st_ino) + "]");
  auto cg = base::ReadFile("/proc/" + std::to_string(created->vmm_pid) + "/cgroup");
  ASSERT_TRUE(cg.ok());
  EXPECT_NE(cg->find(cgroup_parent_ + "/chrys-" + req.id), std::string::npos) << *cg;

  // The guest sees the NIC with the MAC we gave and two queue pairs.
  std::string nics = Call(req.id, "NICS");
  EXPECT_NE(nics.find("02:00:00:aa:bb:01"), std::string::npos) << nics;
  EXPECT_NE(nics.find("rx-1"), std::string::npos) << nics;
  // The volume share through virtiofsd.
  EXPECT_EQ(Call(req.id, "FSREAD vol0 greeting"), "OUT hello-from-virtiofs");

  // A read-only layer disk, hot-plugged, and a program run from it.
  auto layer = BuildErofsImage(root_, "layer1", {{"hello.sh", "echo hello-from-layer $((6*7))\n"}});
  ASSERT_TRUE(layer.ok()) << layer.error().message();
  ASSERT_TRUE(manager_->AttachLayerDisk(req.id, "layer1", *layer).ok());
  EXPECT_EQ(Call(req.id, "RUN layer1 hello.sh"), "OUT hello-from-layer 42 ");

  // A writable scratch disk.
  auto scratch = manager_->AttachScratchDisk(req.id, "scratch1", 8 << 20);
  ASSERT_TRUE(scratch.ok()) << scratch.error().message();
  EXPECT_TRUE(Exists(*scratch));
  EXPECT_EQ(Call(req.id, "WRITE scratch1 written-by-guest"), "OUT written-by-guest");
  // Duplicate serials are refused.
  EXPECT_FALSE(manager_->AttachLayerDisk(req.id, "layer1", *layer).ok());

  // Far more disks than the 8 root ports a VM once had (one image of many layers needs that many): ten more,
  // and the last one works.
  std::vector<std::string> extra;
  for (int i = 2; i <= 11; ++i) {
    std::string serial = "layer" + std::to_string(i);
    auto image = BuildErofsImage(root_, serial, {{"n.sh", "echo layer-" + std::to_string(i) + "\n"}});
    ASSERT_TRUE(image.ok()) << image.error().message();
    auto attached = manager_->AttachLayerDisk(req.id, serial, *image);
    ASSERT_TRUE(attached.ok()) << serial << ": " << attached.error().message();
    extra.push_back(serial);
  }
  EXPECT_EQ(Call(req.id, "RUN layer11 n.sh"), "OUT layer-11 ");
  EXPECT_EQ(manager_->Inspect(req.id)->disks.size(), 12u);
  for (const auto& serial : extra) {
    auto detached = manager_->DetachDisk(req.id, serial);
    ASSERT_TRUE(detached.ok()) << serial << ": " << detached.error().message();
  }

  // Hot-unplug: the guest loses the device.
  auto detached = manager_->DetachDisk(req.id, "layer1");
  ASSERT_TRUE(detached.ok()) << detached.error().message();
  EXPECT_EQ(Call(req.id, "GONE layer1"), "OUT 0");
  ASSERT_TRUE(manager_->DetachDisk(req.id, "scratch1").ok());
  EXPECT_FALSE(Exists(*scratch));

  auto stop_start = std::chrono::steady_clock::now();
  auto stopped = manager_->Stop(req.id);
  ASSERT_TRUE(stopped.ok()) << stopped.error().message();
  std::cout
      << "[ info ] stop took "
      << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - stop_start).count()
      << " ms\n";
  EXPECT_EQ(manager_->Inspect(req.id)->state, SandboxState::kStopped);
  ExpectNothingLeft(req.id, opts);
  EXPECT_TRUE(manager_->Stop(req.id).ok()) << "Stop is idempotent";
  EXPECT_TRUE(manager_->Remove(req.id).ok());
  EXPECT_FALSE(Exists(opts.state_dir + "/" + req.id));
}

TEST_F(SandboxE2eTest, AdoptsVmAfterCreatorIsKilled) {
  auto netns = TestNetns::Create(tag_, 1);
  ASSERT_TRUE(netns.ok()) << netns.error().message();
  auto opts = Options(TheEnv().agent_initramfs);
  std::string id = tag_ + "-b";
  last_id_ = id;
  // The creator plays chrysd: it creates the sandbox, reports, and is then killed with SIGKILL.
  int out_pipe[2];
  ASSERT_EQ(::pipe2(out_pipe, O_CLOEXEC), 0);
  pid_t creator = ::fork();
  ASSERT_GE(creator, 0);
  if (creator == 0) {
    ::dup2(out_pipe[1], STDOUT_FILENO);
    std::string self = "/proc/self/exe";
    char resolved[4096] = {};
    ssize_t n = ::readlink(self.c_str(), resolved, sizeof resolved - 1);
    std::string dir = std::string(resolved, static_cast<size_t>(n > 0 ? n : 0));
    dir = dir.substr(0, dir.rfind('/'));
    std::string helper = dir + "/chrys_sandbox_creator";
    ::execl(helper.c_str(), helper.c_str(), opts.state_dir.c_str(), opts.run_dir.c_str(), opts.kernel_path.c_str(),
            opts.initramfs_path.c_str(), id.c_str(), (*netns)->path().c_str(), cgroup_parent_.c_str(), nullptr);
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  std::string line;
  {
    pollfd pfd{out_pipe[0], POLLIN, 0};
    auto deadline = std::chrono::steady_clock::now() + 120s;
    char c;
    while (std::chrono::steady_clock::now() < deadline && line.find('\n') == std::string::npos) {
      if (::poll(&pfd, 1, 1000) > 0) {
        if (::read(out_pipe[0], &c, 1) != 1) {
          break;
        }
        line += c;
      }
    }
  }
  ::close(out_pipe[0]);
  ASSERT_EQ(line.rfind("READY", 0), 0u) << "creator said: " << line;
  ASSERT_EQ(::kill(creator, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(creator, &status, 0), creator);

  // A new "chrysd" adopts the VM and uses it.
  manager_ = std::make_unique<SandboxManager>(opts);
  auto report = manager_->Recover();
  ASSERT_TRUE(report.ok()) << report.error().message();
  ASSERT_EQ(report->adopted, std::vector<std::string>{id});
  auto st = manager_->Inspect(id);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state, SandboxState::kReady);
  EXPECT_EQ(Call(id, "PING"), "PONG");
  auto layer = BuildErofsImage(root_, "layer2", {{"run.sh", "echo adopted-and-running\n"}});
  ASSERT_TRUE(layer.ok());
  ASSERT_TRUE(manager_->AttachLayerDisk(id, "layer2", *layer).ok());
  EXPECT_EQ(Call(id, "RUN layer2 run.sh"), "OUT adopted-and-running ");

  ASSERT_TRUE(manager_->Stop(id).ok());
  ExpectNothingLeft(id, opts);
}

TEST_F(SandboxE2eTest, HalfCreatedSandboxIsCleanedUpOnRecover) {
  // A record left in "booting" with a live VMM (chrysd died between Start and ready) is removed on Recover.
  auto opts = Options(TheEnv().never_ready_initramfs);
  std::string id = tag_ + "-c";
  last_id_ = id;
  {
    QemuConfig c;
    c.accel_cache_path = "";
    QemuVmm vmm(c);
    VmLaunchSpec spec;
    spec.sandbox_id = id;
    spec.kernel_path = opts.kernel_path;
    spec.initramfs_path = opts.initramfs_path;
    spec.kernel_cmdline = opts.kernel_cmdline;
    spec.memory_mib = 256;
    spec.run_dir = opts.run_dir + "/" + id;
    spec.console_log_path = opts.state_dir + "/" + id + "/console.log";
    spec.cgroup_parent = cgroup_parent_;
    ASSERT_TRUE(base::MakeDirs(opts.state_dir + "/" + id).ok());
    ASSERT_TRUE(vmm.Start(spec).ok());
    const auto& ps = vmm.process_state();
    nlohmann::json record = {
        {"id", id},
        {"state", "booting"},
        {"vmm", "qemu"},
        {"spec", {{"sandbox_id", id}, {"run_dir", spec.run_dir}, {"console", spec.console_log_path}}},
        {"process",
         {{"kind", "qemu"},
          {"pid", ps.pid},
          {"start_time_ticks", ps.start_time_ticks},
          {"binary", ps.binary},
          {"control_socket", ps.control_socket},
          {"cgroup_dirs", ps.cgroup_dirs}}}};
    ASSERT_TRUE(base::WriteFileAtomic(opts.state_dir + "/" + id + "/sandbox.json", record.dump()).ok());
    // vmm goes out of scope without stopping: like a crash, the VMM keeps running.
  }
  ASSERT_FALSE(ProcessesMentioning(tag_).empty());
  manager_ = std::make_unique<SandboxManager>(opts);
  auto report = manager_->Recover();
  ASSERT_TRUE(report.ok()) << report.error().message();
  EXPECT_EQ(report->cleaned_up, std::vector<std::string>{id});
  EXPECT_FALSE(manager_->Inspect(id).ok());
  ExpectNothingLeft(id, opts);
  EXPECT_FALSE(Exists(opts.state_dir + "/" + id));
}

TEST_F(SandboxE2eTest, GuestThatNeverBecomesReadyFailsWithConsoleTail) {
  auto opts = Options(TheEnv().never_ready_initramfs);
  opts.boot_timeout = 15s;
  manager_ = std::make_unique<SandboxManager>(opts);
  SandboxRequest req = Request(tag_ + "-d");
  auto start = std::chrono::steady_clock::now();
  auto created = manager_->Create(req);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(created.ok());
  EXPECT_EQ(created.error().code(), base::ErrorCode::kDeadlineExceeded) << created.error().message();
  EXPECT_NE(created.error().message().find("never serves its agent"), std::string::npos)
      << "console tail missing: " << created.error().message();
  EXPECT_LT(took, 40s);
  ExpectNothingLeft(req.id, opts);
  EXPECT_FALSE(Exists(opts.state_dir + "/" + req.id)) << "failed create left its record";
}

TEST_F(SandboxE2eTest, KernelPanicFailsFastWithConsoleTail) {
  auto opts = Options(TheEnv().garbage_initramfs);  // not an initramfs: the kernel cannot find a root
  manager_ = std::make_unique<SandboxManager>(opts);
  SandboxRequest req = Request(tag_ + "-e");
  auto created = manager_->Create(req);
  ASSERT_FALSE(created.ok());
  EXPECT_NE(created.error().message().find("Kernel panic"), std::string::npos) << created.error().message();
  ExpectNothingLeft(req.id, opts);
  EXPECT_FALSE(Exists(opts.state_dir + "/" + req.id));
}

TEST_F(SandboxE2eTest, VmmDyingMidOperationIsReportedAndCollected) {
  auto opts = Options(TheEnv().agent_initramfs);
  manager_ = std::make_unique<SandboxManager>(opts);
  SandboxRequest req = Request(tag_ + "-f");
  auto created = manager_->Create(req);
  ASSERT_TRUE(created.ok()) << created.error().message();
  auto layer = BuildErofsImage(root_, "layer3", {{"x.sh", "echo x\n"}});
  ASSERT_TRUE(layer.ok());
  ASSERT_EQ(::kill(created->vmm_pid, SIGKILL), 0);
  auto attached = manager_->AttachLayerDisk(req.id, "layer3", *layer);
  EXPECT_FALSE(attached.ok());
  auto state = manager_->Refresh(req.id);
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(*state, SandboxState::kNotReady);
  EXPECT_NE(manager_->Inspect(req.id)->error.find("exited"), std::string::npos);
  ASSERT_TRUE(manager_->Stop(req.id).ok());
  ExpectNothingLeft(req.id, opts);
}

TEST_F(SandboxE2eTest, HotplugFailingHalfwayIsRolledBack) {
  QemuConfig c;
  c.accel_cache_path = "";
  c.hotplug_ports = 2;
  QemuVmm vmm(c);
  std::string id = tag_ + "-g";
  last_id_ = id;
  VmLaunchSpec spec;
  spec.sandbox_id = id;
  spec.kernel_path = TheEnv().kernel;
  spec.initramfs_path = TheEnv().never_ready_initramfs;
  spec.kernel_cmdline = "console=ttyS0 panic=-1 quiet";
  spec.memory_mib = 256;
  spec.run_dir = root_ + "/run-" + id;
  spec.console_log_path = root_ + "/console-" + id + ".log";
  spec.cgroup_parent = cgroup_parent_;
  ASSERT_TRUE(vmm.Start(spec).ok());
  auto layer = BuildErofsImage(root_, "layer4", {{"y.sh", "echo y\n"}});
  ASSERT_TRUE(layer.ok());
  // Occupy the device id our driver will use, so blockdev-add succeeds and device_add fails.
  ASSERT_TRUE(vmm.qmp()
                  ->Execute("device_add",
                            {{"driver", "virtio-rng-pci"}, {"id", "disk-half"}, {"bus", "hpbr0"}, {"addr", "0x1e"}},
                            10s)
                  .ok());
  auto plugged = vmm.HotplugDisk({"half", *layer, true}, 10s);
  ASSERT_FALSE(plugged.ok());
  EXPECT_NE(plugged.error().message().find("half"), std::string::npos) << plugged.error().message();
  auto nodes = vmm.qmp()->Execute("query-named-block-nodes", nlohmann::json::object(), 10s);
  ASSERT_TRUE(nodes.ok());
  EXPECT_EQ(nodes->dump().find("blk-half"), std::string::npos) << "block node was not rolled back: " << nodes->dump();
  EXPECT_TRUE(vmm.process_state().plugged_disks.empty());
  // A bad disk path fails before touching the VM.
  EXPECT_EQ(vmm.HotplugDisk({"nofile", root_ + "/missing.img", true}, 10s).error().code(),
            base::ErrorCode::kInvalidArgument);
  ASSERT_TRUE(vmm.Shutdown(false, 1s).ok());
  EXPECT_FALSE(vmm.Alive());
  EXPECT_TRUE(ProcessesMentioning(tag_).empty());
  EXPECT_FALSE(Exists(QemuVmm::QmpSocketPath(spec)));
}

}  // namespace
}  // namespace chrys::runtime
