// SandboxManager's state machine and records against a scripted in-memory Vmm: no QEMU, no root.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/file_util.h"
#include "runtime/sandbox.h"

namespace chrys::runtime {
namespace {

using namespace std::chrono_literals;
using base::Result;
using base::Status;

// What the fake VMMs did, shared by all instances of one test.
struct FakeWorld {
  bool fail_start = false;
  bool never_ready = false;
  bool adopt_fails = false;
  int starts = 0, kills = 0, shutdowns = 0, adopts = 0;
  std::vector<std::string> hotplugged;
  bool nic_hotplug_fails = false;
  std::atomic<bool> vms_died{false};  // every VM's process is gone (read by the warm pool's thread)
  int rehomes = 0;
  std::vector<std::string> hotplugged_nics;
  bool grow_fails = false;
  std::vector<std::pair<int, int>> grown;               // (vCPUs, MiB) each Grow asked for
  VmLaunchSpec last_start;                              // the spec the last Start was given
  std::vector<DiskSpec> boot_disks;                     // what the last Start was given
  std::map<std::string, std::string> adopted_disk_bus;  // sandbox id -> disk_hotplug_bus Adopt was given
  // Template runs (read after the pool is full or stopped, or under mu).
  std::mutex mu;
  std::vector<VmLaunchSpec> started;          // every Start's spec
  std::vector<std::string> saved;             // sandbox ids SaveState was asked of
  std::vector<bool> saved_after_session_end;  // per save: the console showed the agent's host session ended
  bool save_fails = false;
  std::atomic<int> restore_failures_left{0};  // restores (Start with restore_state_path) that fail
  std::atomic<int> pool_start_delay_ms{0};    // slows starts in the pool's cgroup parent (the refill thread's)
};

// What the agent prints on its console when the host's session ends (guest/agent/channel.cpp).
constexpr const char* kSessionEnded = "host session on /dev/vport2p1 ended: host disconnected";

class FakeVmm : public Vmm {
 public:
  explicit FakeVmm(FakeWorld* world) : world_(world) {}
  VmmKind kind() const override { return VmmKind::kQemu; }
  Status Start(const VmLaunchSpec& spec) override {
    ++world_->starts;
    world_->boot_disks = spec.disks;
    world_->last_start = spec;
    {
      std::lock_guard<std::mutex> lock(world_->mu);
      world_->started.push_back(spec);
    }
    if (world_->fail_start) {
      return base::Unavailable("fake start failure");
    }
    if (spec.cgroup_parent == "chrysalis-warm" && world_->pool_start_delay_ms > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(world_->pool_start_delay_ms.load()));
    }
    if (!spec.restore_state_path.empty() && world_->restore_failures_left.fetch_sub(1) > 0) {
      return base::Internal("fake restore failure");
    }
    spec_ = spec;
    state_.pid = 4242;
    state_.binary = "/fake";
    state_.disk_hotplug_bus = kDiskBusBridge;
    state_.agent.socket_path = spec.run_dir + "/agent.sock";
    run_dir_ = spec.run_dir;
    alive_ = true;
    return Status::Ok();
  }
  Status WaitReady(const ReadinessCheck& check, std::chrono::milliseconds) override {
    if (world_->never_ready) {
      alive_ = false;
      return base::DeadlineExceeded("fake guest never ready; console tail: fake console");
    }
    auto ready = check();
    return ready.ok() && *ready ? Status::Ok() : Status(base::Internal("check said no"));
  }
  Status HotplugDisk(const DiskSpec& disk, std::chrono::milliseconds) override {
    CHRYS_RETURN_IF_ERROR(ValidateDiskSpec(disk));
    world_->hotplugged.push_back(disk.serial);
    state_.plugged_disks.push_back({disk.serial, "disk-" + disk.serial, 0, disk.read_only, disk.path});
    return Status::Ok();
  }
  Status UnplugDisk(const std::string& serial, std::chrono::milliseconds) override {
    std::erase_if(state_.plugged_disks, [&](const PluggedDisk& d) { return d.serial == serial; });
    return Status::Ok();
  }
  Status HotplugNic(const NetInterfaceSpec& nic, std::chrono::milliseconds) override {
    if (world_->nic_hotplug_fails) {
      return base::Internal("fake NIC hot-plug failure");
    }
    world_->hotplugged_nics.push_back(nic.guest_mac);
    state_.plugged_nics.push_back({"nic", "net", 29, nic.guest_mac});
    return Status::Ok();
  }
  Status Grow(int vcpus, int memory_mib, std::chrono::milliseconds) override {
    if (world_->grow_fails) {
      return base::Internal("fake grow failure");
    }
    world_->grown.emplace_back(vcpus, memory_mib);
    return Status::Ok();
  }
  Status Rehome(const VmLaunchSpec& target) override {
    ++world_->rehomes;
    if (::rename(run_dir_.c_str(), target.run_dir.c_str()) != 0) {
      return base::SystemError("fake rehome");
    }
    run_dir_ = target.run_dir;
    state_.agent.socket_path = target.run_dir + "/agent.sock";
    return Status::Ok();
  }
  Status SaveState(const std::string& path, std::chrono::milliseconds) override {
    auto console = base::ReadFile(spec_.console_log_path);
    std::lock_guard<std::mutex> lock(world_->mu);
    world_->saved.push_back(spec_.sandbox_id);
    world_->saved_after_session_end.push_back(console.ok() && console->find(kSessionEnded) != std::string::npos);
    if (world_->save_fails) {
      return base::Internal("fake save failure");
    }
    if (spec_.memory_fd < 0 || !spec_.fs_shares.empty()) {
      return base::FailedPrecondition("fake: not a template");
    }
    return base::WriteFileAtomic(path, "state of " + spec_.sandbox_id);
  }
  Status Shutdown(bool, std::chrono::milliseconds) override {
    ++world_->shutdowns;
    alive_ = false;
    return Status::Ok();
  }
  Status Kill() override {
    ++world_->kills;
    alive_ = false;
    return Status::Ok();
  }
  Result<VmInfo> Info() override {
    VmInfo i;
    i.state = alive_ ? VmRunState::kRunning : VmRunState::kShutdown;
    return i;
  }
  Status Adopt(const VmmProcessState& state, const VmLaunchSpec& spec) override {
    ++world_->adopts;
    world_->adopted_disk_bus[spec.sandbox_id] = state.disk_hotplug_bus;
    if (world_->adopt_fails) {
      return base::NotFound("fake: process gone");
    }
    state_ = state;
    alive_ = true;
    return Status::Ok();
  }
  bool Alive() const override { return alive_ && !world_->vms_died; }
  const VmmProcessState& process_state() const override { return state_; }
  AgentEndpoint agent_endpoint() const override { return state_.agent; }
  Result<std::vector<std::string>> CommandLine(const VmLaunchSpec&) const override {
    return std::vector<std::string>{"/fake"};
  }

 private:
  FakeWorld* world_;
  std::string run_dir_;
  VmLaunchSpec spec_;
  VmmProcessState state_;
  bool alive_ = false;
};

class AlwaysReady : public AgentConnector {
 public:
  // Joins the console writers.
  ~AlwaysReady() override {
    for (auto& t : console_writers_) {
      t.join();
    }
  }
  Result<bool> Probe(const std::string&, const AgentEndpoint&, std::chrono::milliseconds) override { return true; }
  Status Shutdown(const std::string&, const AgentEndpoint&, std::chrono::milliseconds) override {
    ++shutdowns;
    return Status::Ok();
  }
  // As the agent does when the host drops its connection: logs the session's end on the console, a moment later.
  // Only for the template, the one VM whose console chrysd reads for it.
  void Forget(const std::string& id) override {
    if (state_dir.empty() || id.find(kTemplateIdMark) == std::string::npos) {
      return;
    }
    std::string console = state_dir + "/" + id + "/console.log";
    int delay_ms = session_end_delay_ms;
    std::lock_guard<std::mutex> lock(mu);
    console_writers_.emplace_back([console, delay_ms] {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      std::ofstream(console, std::ios::app) << "[    6.555] chrys-agent info: " << kSessionEnded << "\n";
    });
  }
  void Rename(const std::string&, const std::string&) override {}
  Status OnlineResources(const std::string& id, const AgentEndpoint&, int vcpus, int added_memory_mib,
                         std::chrono::milliseconds) override {
    onlined.push_back(id + " " + std::to_string(vcpus) + " +" + std::to_string(added_memory_mib));
    return Status::Ok();
  }
  Result<bool> Settled(const std::string&, const AgentEndpoint&, std::chrono::milliseconds) override {
    return settled.load();
  }
  Status Resume(const std::string& id, const AgentEndpoint&, std::chrono::milliseconds) override {
    std::lock_guard<std::mutex> lock(mu);
    resumed.push_back(id);
    return Status::Ok();
  }
  Status PrepareTemplate(const std::string& id, const AgentEndpoint&, std::chrono::milliseconds) override {
    std::lock_guard<std::mutex> lock(mu);
    prepared_templates.push_back(id);
    return Status::Ok();
  }
  std::vector<std::string> Resumed() {
    std::lock_guard<std::mutex> lock(mu);
    return resumed;
  }
  int shutdowns = 0;
  std::vector<std::string> onlined;  // "<sandbox> <vcpus> +<added MiB>" per OnlineResources
  std::atomic<bool> settled{true};
  std::mutex mu;
  std::vector<std::string> resumed;             // sandbox ids Resume was called for
  std::vector<std::string> prepared_templates;  // sandbox ids PrepareTemplate was called for
  std::string state_dir;                        // where the consoles are; none written when empty
  int session_end_delay_ms = 0;

 private:
  std::vector<std::thread> console_writers_;
};

class SandboxManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = "/tmp/sbm-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++);
    ASSERT_TRUE(base::MakeDirs(root_).ok());
    ASSERT_TRUE(base::WriteFileAtomic(root_ + "/vmlinuz", "k").ok());
    ASSERT_TRUE(base::WriteFileAtomic(root_ + "/layer.img", "l").ok());
    agent_ = std::make_shared<AlwaysReady>();
    agent_->state_dir = root_ + "/state";
  }
  void TearDown() override { (void)base::RemoveTree(root_); }

  SandboxManagerOptions Options() {
    SandboxManagerOptions o;
    o.state_dir = root_ + "/state";
    o.run_dir = root_ + "/run";
    o.kernel_path = root_ + "/vmlinuz";
    o.agent = agent_;
    o.vmm_factory = [this](VmmKind) -> Result<std::unique_ptr<Vmm>> {
      return std::unique_ptr<Vmm>(std::make_unique<FakeVmm>(&world_));
    };
    return o;
  }
  SandboxRequest Request(const std::string& id) {
    SandboxRequest r;
    r.id = id;
    r.handler = "chrysalis-qemu";
    r.resources.cpu_millis = 2500;
    r.resources.memory_bytes = 1LL << 30;
    return r;
  }
  nlohmann::json Record(const std::string& id) {
    return nlohmann::json::parse(*base::ReadFile(root_ + "/state/" + id + "/sandbox.json"));
  }

  static int counter_;
  std::string root_;
  FakeWorld world_;
  std::shared_ptr<AlwaysReady> agent_;
};
int SandboxManagerTest::counter_ = 0;

TEST_F(SandboxManagerTest, CreateStopRemoveAndRecords) {
  SandboxManagerOptions options = Options();
  ASSERT_TRUE(base::WriteFileAtomic(root_ + "/tools.erofs", "tools").ok());
  options.boot_disks = {{"chrys-tools", root_ + "/tools.erofs", true}};
  SandboxManager m(options);
  ASSERT_TRUE(m.Recover().ok());
  auto created = m.Create(Request("pod1"));
  ASSERT_TRUE(created.ok()) << created.error().message();
  EXPECT_EQ(created->state, SandboxState::kReady);
  auto rec = Record("pod1");
  EXPECT_EQ(rec["state"], "ready");
  EXPECT_EQ(rec["spec"]["vcpus"], 3);
  EXPECT_EQ(rec["spec"]["memory_mib"], 1024 + 128);
  EXPECT_EQ(rec["process"]["pid"], 4242);
  // Every VM boots with the image's tools disk, and the record says so.
  ASSERT_EQ(world_.boot_disks.size(), 1u);
  EXPECT_EQ(world_.boot_disks[0].serial, "chrys-tools");
  EXPECT_TRUE(world_.boot_disks[0].read_only);
  EXPECT_EQ(rec["spec"]["disks"][0]["serial"], "chrys-tools");
  EXPECT_EQ(rec["spec"]["disks"][0]["path"], root_ + "/tools.erofs");
  ASSERT_TRUE(m.AttachLayerDisk("pod1", "l1", root_ + "/layer.img").ok());
  EXPECT_EQ(Record("pod1")["process"]["disks"][0]["serial"], "l1");
  auto scratch = m.AttachScratchDisk("pod1", "s1", 1 << 20);
  ASSERT_TRUE(scratch.ok());
  EXPECT_EQ(::access(scratch->c_str(), F_OK), 0);
  if (::access("/sbin/mkfs.ext4", X_OK) == 0) {
    // Formatted on the host: the ext4 magic 0xEF53 sits at byte 1080 (superblock at 1024, s_magic at +56).
    unsigned char magic[2] = {0, 0};
    int fd = ::open(scratch->c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(::pread(fd, magic, sizeof(magic), 1080), 2);
    ::close(fd);
    EXPECT_EQ(magic[0], 0x53);
    EXPECT_EQ(magic[1], 0xEF);
  }
  ASSERT_TRUE(m.DetachDisk("pod1", "s1").ok());
  EXPECT_NE(::access(scratch->c_str(), F_OK), 0) << "scratch file must go with its disk";
  ASSERT_TRUE(m.Stop("pod1").ok());
  EXPECT_EQ(agent_->shutdowns, 1);
  EXPECT_EQ(world_.shutdowns, 1);
  EXPECT_EQ(Record("pod1")["state"], "stopped");
  EXPECT_FALSE(m.AttachLayerDisk("pod1", "l2", root_ + "/layer.img").ok()) << "not ready any more";
  ASSERT_TRUE(m.Stop("pod1").ok()) << "idempotent";
  EXPECT_EQ(world_.shutdowns, 1);
  ASSERT_TRUE(m.Remove("pod1").ok());
  EXPECT_NE(::access((root_ + "/state/pod1").c_str(), F_OK), 0);
  EXPECT_TRUE(m.Remove("pod1").ok()) << "idempotent";
  EXPECT_EQ(m.Stop("nope").error().code(), base::ErrorCode::kNotFound);
}

TEST_F(SandboxManagerTest, BadRequestsAreRefusedAndLeaveNothing) {
  SandboxManager m(Options());
  ASSERT_TRUE(m.Recover().ok());
  EXPECT_EQ(m.Create(Request("../etc")).error().code(), base::ErrorCode::kInvalidArgument);
  auto bad_handler = Request("pod2");
  bad_handler.handler = "runc";
  EXPECT_EQ(m.Create(bad_handler).error().code(), base::ErrorCode::kInvalidArgument);
  auto bad_mac = Request("pod3");
  bad_mac.interfaces.push_back({{0}, "not-a-mac", 1500});
  auto r = m.Create(bad_mac);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("guest_mac"), std::string::npos);
  EXPECT_NE(::access((root_ + "/state/pod3").c_str(), F_OK), 0);
  ASSERT_TRUE(m.Create(Request("pod4")).ok());
  EXPECT_EQ(m.Create(Request("pod4")).error().code(), base::ErrorCode::kAlreadyExists);
  EXPECT_FALSE(m.AttachScratchDisk("pod4", "bad serial", 1 << 20).ok());
  EXPECT_FALSE(m.AttachScratchDisk("pod4", "s", 10).ok());
}

TEST_F(SandboxManagerTest, FailedStartAndNeverReadyAreUndone) {
  SandboxManager m(Options());
  ASSERT_TRUE(m.Recover().ok());
  world_.fail_start = true;
  auto r = m.Create(Request("pod5"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("fake start failure"), std::string::npos);
  EXPECT_NE(::access((root_ + "/state/pod5").c_str(), F_OK), 0);
  EXPECT_NE(::access((root_ + "/run/pod5").c_str(), F_OK), 0);
  world_.fail_start = false;
  world_.never_ready = true;
  r = m.Create(Request("pod6"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), base::ErrorCode::kDeadlineExceeded);
  EXPECT_NE(r.error().message().find("console tail"), std::string::npos);
  EXPECT_GE(world_.kills, 1);
  EXPECT_FALSE(m.Inspect("pod6").ok());
  EXPECT_NE(::access((root_ + "/state/pod6").c_str(), F_OK), 0);
}

TEST_F(SandboxManagerTest, RecoverAdoptsCleansAndMarksNotReady) {
  {
    SandboxManager m(Options());
    ASSERT_TRUE(m.Recover().ok());
    ASSERT_TRUE(m.Create(Request("alive")).ok());
    ASSERT_TRUE(m.Create(Request("dead")).ok());
    ASSERT_TRUE(m.Create(Request("gone")).ok());
    ASSERT_TRUE(m.Stop("gone").ok());
  }
  // A half-created one: its record says booting.
  auto rec = Record("alive");
  rec["id"] = "half";
  rec["state"] = "booting";
  ASSERT_TRUE(base::MakeDirs(root_ + "/state/half").ok());
  ASSERT_TRUE(base::WriteFileAtomic(root_ + "/state/half/sandbox.json", rec.dump()).ok());
  // An unreadable record is reported and left alone.
  ASSERT_TRUE(base::MakeDirs(root_ + "/state/junk").ok());
  ASSERT_TRUE(base::WriteFileAtomic(root_ + "/state/junk/sandbox.json", "{not json").ok());

  // Every VMM re-attaches, but the agent of "dead" never answers again.
  auto opts = Options();
  struct FailSecond : AgentConnector {
    int probes = 0;
    Result<bool> Probe(const std::string& id, const AgentEndpoint&, std::chrono::milliseconds) override {
      ++probes;
      return id != "dead";
    }
    Status Shutdown(const std::string&, const AgentEndpoint&, std::chrono::milliseconds) override {
      return Status::Ok();
    }
    void Forget(const std::string&) override {}
    void Rename(const std::string&, const std::string&) override {}
    Status OnlineResources(const std::string&, const AgentEndpoint&, int, int, std::chrono::milliseconds) override {
      return Status::Ok();
    }
    Result<bool> Settled(const std::string&, const AgentEndpoint&, std::chrono::milliseconds) override { return true; }
    Status Resume(const std::string&, const AgentEndpoint&, std::chrono::milliseconds) override { return Status::Ok(); }
    Status PrepareTemplate(const std::string&, const AgentEndpoint&, std::chrono::milliseconds) override {
      return Status::Ok();
    }
  };
  auto probe = std::make_shared<FailSecond>();
  opts.agent = probe;
  opts.boot_timeout = 300ms;
  SandboxManager m2(opts);
  auto report = m2.Recover();
  ASSERT_FALSE(report.ok()) << "the unreadable record is reported";
  EXPECT_NE(report.error().message().find("junk"), std::string::npos);
  EXPECT_EQ(m2.Inspect("alive")->state, SandboxState::kReady);
  EXPECT_EQ(m2.Inspect("dead")->state, SandboxState::kNotReady);
  EXPECT_NE(m2.Inspect("dead")->error.find("did not answer"), std::string::npos);
  EXPECT_EQ(m2.Inspect("gone")->state, SandboxState::kStopped);
  EXPECT_FALSE(m2.Inspect("half").ok()) << "half-created sandboxes are removed";
  EXPECT_NE(::access((root_ + "/state/half").c_str(), F_OK), 0);
  EXPECT_EQ(::access((root_ + "/state/junk/sandbox.json").c_str(), F_OK), 0);
  EXPECT_EQ(Record("dead")["state"], "notready");
}

// A VM keeps the disk hot-plug layout it was started with across chrysd restarts; records written before the
// layout was recorded are VMs with one PCIe root port per disk.
TEST_F(SandboxManagerTest, RecoveredVmsKeepTheirDiskHotplugLayout) {
  {
    SandboxManager m(Options());
    ASSERT_TRUE(m.Recover().ok());
    ASSERT_TRUE(m.Create(Request("current")).ok());
    ASSERT_TRUE(m.Create(Request("older")).ok());
  }
  EXPECT_EQ(Record("current")["process"]["disk_hotplug_bus"], kDiskBusBridge);
  auto older = Record("older");
  older["process"].erase("disk_hotplug_bus");
  ASSERT_TRUE(base::WriteFileAtomic(root_ + "/state/older/sandbox.json", older.dump()).ok());

  SandboxManager m2(Options());
  ASSERT_TRUE(m2.Recover().ok());
  EXPECT_EQ(world_.adopted_disk_bus["current"], kDiskBusBridge);
  EXPECT_EQ(world_.adopted_disk_bus["older"], kDiskBusRootPorts);
}

// The warm pool's fixture: shares are plain directories whose preparation and release are counted.
class WarmPoolTest : public SandboxManagerTest {
 protected:
  SandboxManagerOptions PoolOptions(int size) {
    SandboxManagerOptions o = Options();
    o.warm_pool.size = size;
    o.warm_pool.share_tag = "chrys-pod";
    o.warm_pool.share_root = root_ + "/shares";
    o.warm_pool.retry_delay = 10ms;
    o.warm_pool.health_check_interval = 10ms;
    o.warm_pool.prepare_share = [this](const std::string& dir) {
      std::lock_guard<std::mutex> lock(shares_mu_);
      prepared_.push_back(dir);
      return base::MakeDirs(dir);
    };
    o.warm_pool.release_share = [this](const std::string& dir) {
      std::lock_guard<std::mutex> lock(shares_mu_);
      released_.push_back(dir);
      return base::RemoveTree(dir);
    };
    return o;
  }
  // A pool of one whose warm VMs are clones of a VM template.
  SandboxManagerOptions TemplatePoolOptions() {
    SandboxManagerOptions o = PoolOptions(1);
    o.warm_pool.use_template = true;
    return o;
  }
  // A pod of the default shape (no pod-level limits) with one NIC and the pod share.
  SandboxRequest PodRequest(const std::string& id) {
    SandboxRequest r;
    r.id = id;
    r.handler = "chrysalis";
    r.fs_shares.push_back({"chrys-pod", root_ + "/pods/" + id, false});
    EXPECT_TRUE(base::MakeDirs(r.fs_shares[0].host_dir).ok());  // the caller prepares it, as cri does
    NetInterfaceSpec nic;
    nic.tap_queue_fds = {0};
    nic.guest_mac = "02:00:00:00:00:01";
    r.interfaces.push_back(nic);
    return r;
  }
  static bool WaitFor(const std::function<bool()>& done) {
    for (int i = 0; i < 500; ++i) {
      if (done()) {
        return true;
      }
      std::this_thread::sleep_for(10ms);
    }
    return done();
  }
  // Recovers (nothing), starts the pool and waits until its VMs are booted.
  static void StartFull(SandboxManager& m) {
    ASSERT_TRUE(m.Recover().ok());
    m.StartWarmPool();
    ASSERT_TRUE(PoolFull(m));
  }
  static bool PoolFull(SandboxManager& m) {
    return WaitFor([&m] {
      auto s = m.warm_pool_status();
      return s.ready == s.size && s.booting == 0;
    });
  }
  std::vector<std::string> Entries(const std::string& dir) {
    std::vector<std::string> out;
    if (DIR* d = ::opendir(dir.c_str())) {
      while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] != '.') {
          out.emplace_back(e->d_name);
        }
      }
      ::closedir(d);
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  std::vector<std::string> Released() {
    std::lock_guard<std::mutex> lock(shares_mu_);
    return released_;
  }

  std::mutex shares_mu_;
  std::vector<std::string> prepared_;
  std::vector<std::string> released_;
};

TEST_F(WarmPoolTest, AFittingPodClaimsAWarmVmAndThePoolRefills) {
  SandboxManager m(PoolOptions(1));
  ASSERT_NO_FATAL_FAILURE(StartFull(m));
  std::vector<std::string> warm_ids = Entries(root_ + "/state");
  ASSERT_EQ(warm_ids.size(), 1u);
  const std::string warm_id = warm_ids[0];
  EXPECT_EQ(warm_id.rfind(kWarmIdPrefix, 0), 0u) << warm_id;
  EXPECT_TRUE(m.List().empty()) << "warm VMs are nobody's sandboxes";

  auto created = m.Create(PodRequest("pod1"));
  ASSERT_TRUE(created.ok()) << created.error().message();
  EXPECT_TRUE(created->from_warm_pool);
  EXPECT_EQ(created->state, SandboxState::kReady);
  // The warm VM's share is served, not the one requested: the caller takes it over.
  ASSERT_EQ(created->fs_shares.size(), 1u);
  EXPECT_EQ(created->fs_shares[0].host_dir, root_ + "/shares/" + warm_id);
  EXPECT_EQ(created->agent.socket_path, root_ + "/run/pod1/agent.sock");
  EXPECT_EQ(world_.rehomes, 1);
  EXPECT_EQ(world_.hotplugged_nics, std::vector<std::string>{"02:00:00:00:00:01"});
  // The default shape is 640 MiB; the warm VM booted with 256 and grew by 3 blocks.
  EXPECT_EQ(world_.grown, (std::vector<std::pair<int, int>>{{1, 640}}));
  EXPECT_EQ(agent_->onlined, std::vector<std::string>{"pod1 1 +384"});
  EXPECT_EQ(created->memory_mib, 640);
  auto rec = Record("pod1");
  EXPECT_EQ(rec["id"], "pod1");
  EXPECT_EQ(rec["state"], "ready");
  EXPECT_EQ(rec["spec"]["run_dir"], root_ + "/run/pod1");
  EXPECT_EQ(rec["spec"]["console"], root_ + "/state/pod1/console.log");
  EXPECT_EQ(rec["process"]["nics"][0]["mac"], "02:00:00:00:00:01");
  EXPECT_NE(::access((root_ + "/state/" + warm_id).c_str(), F_OK), 0) << "the warm record goes";
  EXPECT_EQ(::access((root_ + "/run/pod1").c_str(), F_OK), 0) << "the run dir was renamed";

  // A replacement boots; the pod is an ordinary sandbox from here on.
  ASSERT_TRUE(PoolFull(m));
  auto status = m.warm_pool_status();
  EXPECT_EQ(status.claimed, 1u);
  EXPECT_EQ(status.missed, 0u);
  EXPECT_EQ(world_.starts, 2);
  ASSERT_EQ(m.List().size(), 1u);
  ASSERT_TRUE(m.Stop("pod1").ok());
  ASSERT_TRUE(m.Remove("pod1").ok());
  EXPECT_TRUE(Released().empty()) << "the pod's share is its owner's to release";

  m.StopWarmPool();
  EXPECT_TRUE(Entries(root_ + "/state").empty());
  EXPECT_TRUE(Entries(root_ + "/run").empty());
  EXPECT_EQ(Released().size(), 1u) << "the replacement's share";
  EXPECT_TRUE(Entries(root_ + "/shares").size() == 1u && Entries(root_ + "/shares")[0] == warm_id)
      << "only the claimed share is left, for its pod";
}

TEST_F(WarmPoolTest, ThePoolPreparesItsCgroupParentBeforeItsFirstBoot) {
  SandboxManagerOptions o = PoolOptions(1);
  std::vector<std::string> prepared_parents;
  int starts_before_prepare = -1;
  o.warm_pool.prepare_cgroup_parent = [&](const std::string& parent) {
    prepared_parents.push_back(parent);
    starts_before_prepare = world_.starts;
    return base::FailedPrecondition("no CPU weight here");
  };
  SandboxManager m(o);
  ASSERT_NO_FATAL_FAILURE(StartFull(m));
  EXPECT_EQ(prepared_parents, std::vector<std::string>{"chrysalis-warm"});
  EXPECT_EQ(starts_before_prepare, 0);
  // A parent without a low weight is reported, and the pool still serves.
  EXPECT_NE(m.warm_pool_status().last_error.find("no CPU weight here"), std::string::npos)
      << m.warm_pool_status().last_error;
  auto created = m.Create(PodRequest("pod1"));
  ASSERT_TRUE(created.ok()) << created.error().message();
  EXPECT_TRUE(created->from_warm_pool);
  ASSERT_TRUE(m.Stop("pod1").ok());
  ASSERT_TRUE(m.Remove("pod1").ok());
  m.StopWarmPool();
  EXPECT_EQ(prepared_parents.size(), 1u) << "once per pool, not per boot";
}

TEST_F(WarmPoolTest, PodsThatDoNotFitBootTheirOwnVm) {
  SandboxManager m(PoolOptions(1));
  ASSERT_NO_FATAL_FAILURE(StartFull(m));
  // Smaller than a warm VM boots (a VM cannot shrink), or memory that is not a whole number of hot-plug blocks more.
  SandboxRequest smaller = PodRequest("smaller");
  smaller.resources.memory_bytes = 64LL << 20;  // 192 MiB with the overhead; warm VMs boot with 256
  SandboxRequest odd_memory = PodRequest("odd");
  odd_memory.resources.memory_bytes = 700LL << 20;
  SandboxRequest confidential = PodRequest("cvm");
  confidential.handler = "chrysalis-snp";
  SandboxRequest read_only_share = PodRequest("ro");
  read_only_share.fs_shares[0].read_only = true;
  SandboxRequest no_nic = PodRequest("plain");
  no_nic.interfaces.clear();
  no_nic.extra_cmdline = "debug";
  for (const auto& request : {smaller, odd_memory, confidential, read_only_share, no_nic}) {
    auto created = m.Create(request);
    ASSERT_TRUE(created.ok()) << request.id << ": " << created.error().message();
    EXPECT_FALSE(created->from_warm_pool) << request.id;
    EXPECT_EQ(created->fs_shares[0].host_dir, request.fs_shares[0].host_dir) << request.id;
  }
  auto status = m.warm_pool_status();
  EXPECT_EQ(status.ready, 1);
  EXPECT_EQ(status.claimed, 0u);
  EXPECT_EQ(world_.rehomes, 0);

  // The pool's own ids are not for pods, and a refusal leaves nothing.
  auto reserved = m.Create(PodRequest("warm-123"));
  ASSERT_FALSE(reserved.ok());
  EXPECT_EQ(reserved.error().code(), base::ErrorCode::kInvalidArgument);
  EXPECT_NE(reserved.error().message().find("warm-"), std::string::npos) << reserved.error().message();
  EXPECT_EQ(Entries(root_ + "/state").size(), 6u) << "5 pods and the warm VM";
  EXPECT_TRUE(world_.grown.empty());
}

TEST_F(WarmPoolTest, ALargerPodGetsAWarmVmGrownToItsSize) {
  SandboxManager m(PoolOptions(1));
  ASSERT_NO_FATAL_FAILURE(StartFull(m));
  // The warm VM booted small (one block above the overhead) with room to grow.
  VmLaunchSpec warm = world_.last_start;
  EXPECT_EQ(warm.vcpus, 1);
  EXPECT_EQ(warm.memory_mib, 256);
  EXPECT_EQ(warm.max_vcpus, 16);
  EXPECT_GE(warm.max_memory_mib, 1152) << "room up to the host's memory";
  EXPECT_EQ(warm.max_memory_mib % kHotplugMemoryBlockMib, 0);
  EXPECT_NE(warm.kernel_cmdline.find("swiotlb=noforce"), std::string::npos)
      << "no bounce buffer for the memory it may grow into: " << warm.kernel_cmdline;

  SandboxRequest big = PodRequest("big");
  big.resources.cpu_millis = 2500;
  big.resources.memory_bytes = 1LL << 30;  // + 128 MiB overhead = 1152 MiB: 896 MiB (7 blocks) more than warm
  auto created = m.Create(big);
  ASSERT_TRUE(created.ok()) << created.error().message();
  EXPECT_TRUE(created->from_warm_pool);
  EXPECT_EQ(world_.grown, (std::vector<std::pair<int, int>>{{3, 1152}}));
  EXPECT_EQ(agent_->onlined, std::vector<std::string>{"big 3 +896"}) << "the guest onlines what was plugged";
  auto rec = Record("big");
  EXPECT_EQ(rec["spec"]["vcpus"], 3);
  EXPECT_EQ(rec["spec"]["memory_mib"], 1152);
  auto inspected = m.Inspect("big");
  ASSERT_TRUE(inspected.ok());
  EXPECT_EQ(inspected->vcpus, 3);
  EXPECT_EQ(inspected->memory_mib, 1152);
}

TEST_F(WarmPoolTest, AFailedGrowthDropsTheWarmVmAndThePodBootsItsOwn) {
  SandboxManager m(PoolOptions(1));
  ASSERT_NO_FATAL_FAILURE(StartFull(m));
  const std::string warm_id = Entries(root_ + "/state")[0];
  world_.grow_fails = true;
  SandboxRequest big = PodRequest("big");
  big.resources.cpu_millis = 2000;
  auto created = m.Create(big);
  ASSERT_TRUE(created.ok()) << created.error().message();
  EXPECT_FALSE(created->from_warm_pool);
  EXPECT_EQ(created->fs_shares[0].host_dir, big.fs_shares[0].host_dir) << "its own share, as without the pool";
  EXPECT_EQ(created->vcpus, 2);
  EXPECT_NE(m.warm_pool_status().last_error.find("fake grow failure"), std::string::npos)
      << m.warm_pool_status().last_error;
  EXPECT_NE(::access((root_ + "/state/" + warm_id).c_str(), F_OK), 0);
  auto released = Released();
  EXPECT_NE(std::find(released.begin(), released.end(), root_ + "/shares/" + warm_id), released.end());
  EXPECT_GE(world_.kills, 1);
}

TEST_F(WarmPoolTest, AnEmptyPoolIsAMissAndThePodBoots) {
  SandboxManager m(PoolOptions(1));
  ASSERT_TRUE(m.Recover().ok());
  // No StartWarmPool: nothing is warm.
  auto created = m.Create(PodRequest("pod1"));
  ASSERT_TRUE(created.ok()) << created.error().message();
  EXPECT_FALSE(created->from_warm_pool);
  EXPECT_EQ(m.warm_pool_status().missed, 1u);
}

TEST_F(WarmPoolTest, AFailedClaimUndoesEverythingAndLeavesTheRequestedIdFree) {
  SandboxManager m(PoolOptions(1));
  ASSERT_NO_FATAL_FAILURE(StartFull(m));
  const std::string warm_id = Entries(root_ + "/state")[0];
  world_.nic_hotplug_fails = true;
  auto created = m.Create(PodRequest("pod1"));
  ASSERT_FALSE(created.ok());
  EXPECT_NE(created.error().message().find("fake NIC hot-plug failure"), std::string::npos)
      << created.error().message();
  EXPECT_NE(::access((root_ + "/state/pod1").c_str(), F_OK), 0);
  EXPECT_NE(::access((root_ + "/run/pod1").c_str(), F_OK), 0);
  EXPECT_NE(::access((root_ + "/state/" + warm_id).c_str(), F_OK), 0);
  auto released = Released();
  EXPECT_NE(std::find(released.begin(), released.end(), root_ + "/shares/" + warm_id), released.end())
      << "the claimed VM's share is released: no pod owns it";
  EXPECT_GE(world_.kills, 1);
  EXPECT_FALSE(m.Inspect("pod1").ok());
  world_.nic_hotplug_fails = false;
  ASSERT_TRUE(PoolFull(m));
  auto again = m.Create(PodRequest("pod1"));
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_TRUE(again->from_warm_pool);
}

TEST_F(WarmPoolTest, AWarmVmThatDiesWhileWaitingIsReplaced) {
  SandboxManager m(PoolOptions(1));
  ASSERT_NO_FATAL_FAILURE(StartFull(m));
  const std::string first = Entries(root_ + "/state")[0];
  world_.vms_died = true;
  ASSERT_TRUE(WaitFor([&] { return m.warm_pool_status().last_error.find("exited") != std::string::npos; }));
  world_.vms_died = false;
  ASSERT_TRUE(WaitFor([&] {
    auto entries = Entries(root_ + "/state");
    return entries.size() == 1 && entries[0] != first && m.warm_pool_status().ready == 1;
  }));
  EXPECT_NE(::access((root_ + "/state/" + first).c_str(), F_OK), 0);
  auto released = Released();
  EXPECT_NE(std::find(released.begin(), released.end(), root_ + "/shares/" + first), released.end());
}

TEST_F(WarmPoolTest, ARestartedManagerRemovesWarmVmsLeftByACrash) {
  std::string warm_id;
  std::string record;
  {
    SandboxManager m(PoolOptions(1));
    ASSERT_NO_FATAL_FAILURE(StartFull(m));
    warm_id = Entries(root_ + "/state")[0];
    record = *base::ReadFile(root_ + "/state/" + warm_id + "/sandbox.json");
  }
  // The destructor killed it; a crash would have left the record and the share behind.
  ASSERT_TRUE(base::MakeDirs(root_ + "/state/" + warm_id).ok());
  ASSERT_TRUE(base::WriteFileAtomic(root_ + "/state/" + warm_id + "/sandbox.json", record).ok());
  ASSERT_TRUE(base::MakeDirs(root_ + "/shares/" + warm_id).ok());
  {
    std::lock_guard<std::mutex> lock(shares_mu_);
    released_.clear();
  }
  int kills_before = world_.kills;
  SandboxManager m2(PoolOptions(0));
  auto report = m2.Recover();
  ASSERT_TRUE(report.ok()) << report.error().message();
  EXPECT_EQ(report->cleaned_up, std::vector<std::string>{warm_id});
  EXPECT_TRUE(report->adopted.empty());
  EXPECT_EQ(world_.kills, kills_before + 1);
  EXPECT_NE(::access((root_ + "/state/" + warm_id).c_str(), F_OK), 0);
  EXPECT_EQ(Released(), std::vector<std::string>{root_ + "/shares/" + warm_id});
  EXPECT_TRUE(m2.List().empty());
}

TEST_F(WarmPoolTest, WithATemplateWarmVmsAreRestoredAndResumed) {
  SandboxManager m(TemplatePoolOptions());
  ASSERT_NO_FATAL_FAILURE(StartFull(m));
  EXPECT_EQ(m.warm_pool_status().template_state, "ready");
  std::vector<VmLaunchSpec> started;
  {
    std::lock_guard<std::mutex> lock(world_.mu);
    started = world_.started;
    ASSERT_EQ(world_.saved.size(), 1u);
  }
  ASSERT_EQ(started.size(), 2u);
  // First the template: RAM in a memfd chrysd keeps, no share (vhost-user-fs cannot be saved); it is gone after.
  const VmLaunchSpec& tmpl = started[0];
  EXPECT_NE(tmpl.sandbox_id.find(kTemplateIdMark), std::string::npos);
  EXPECT_GE(tmpl.memory_fd, 0);
  EXPECT_TRUE(tmpl.fs_shares.empty());
  EXPECT_TRUE(tmpl.restore_state_path.empty());
  // Then the warm VM: restored from the saved state, with the pool's share, resumed (clock, entropy).
  const VmLaunchSpec& clone = started[1];
  EXPECT_EQ(clone.restore_state_path, root_ + "/run/vm-template.state");
  EXPECT_EQ(clone.memory_fd, tmpl.memory_fd);
  EXPECT_EQ(clone.memory_mib, tmpl.memory_mib) << "a clone has its template's shape";
  EXPECT_EQ(clone.max_memory_mib, tmpl.max_memory_mib);
  EXPECT_EQ(clone.kernel_cmdline, tmpl.kernel_cmdline);
  ASSERT_EQ(clone.fs_shares.size(), 1u);
  EXPECT_EQ(agent_->Resumed(), std::vector<std::string>{clone.sandbox_id});
  {
    std::lock_guard<std::mutex> lock(agent_->mu);
    EXPECT_EQ(agent_->prepared_templates, std::vector<std::string>{tmpl.sandbox_id}) << "zeroed before the save";
  }
  EXPECT_EQ(Entries(root_ + "/state"), std::vector<std::string>{clone.sandbox_id}) << "the template VM is gone";

  // A pod takes the warm VM; a second one, finding none ready (the refill is slowed), gets one restored on the
  // spot, under its own cgroup parent rather than the pool's lowest-weight one.
  world_.pool_start_delay_ms = 300;
  auto first = m.Create(PodRequest("pod1"));
  ASSERT_TRUE(first.ok()) << first.error().message();
  SandboxRequest second_request = PodRequest("pod2");
  second_request.cgroup_parent = "kubepods/pod2";
  auto second = m.Create(second_request);
  ASSERT_TRUE(second.ok()) << second.error().message();
  EXPECT_TRUE(second->from_warm_pool);
  {
    std::lock_guard<std::mutex> lock(world_.mu);
    auto on_demand = std::find_if(world_.started.begin(), world_.started.end(),
                                  [](const VmLaunchSpec& s) { return s.cgroup_parent == "kubepods/pod2"; });
    ASSERT_NE(on_demand, world_.started.end()) << "pod2's VM was not restored on the spot";
    EXPECT_FALSE(on_demand->restore_state_path.empty());
    EXPECT_EQ(on_demand->sandbox_id.rfind(kWarmIdPrefix, 0), 0u);
  }
  ASSERT_TRUE(PoolFull(m));
  auto status = m.warm_pool_status();
  EXPECT_EQ(status.claimed, 2u);
  EXPECT_GE(status.missed, 1u);
  EXPECT_GE(status.restored_on_demand, 1u);
  {
    std::lock_guard<std::mutex> lock(world_.mu);
    for (size_t i = 1; i < world_.started.size(); ++i) {
      EXPECT_FALSE(world_.started[i].restore_state_path.empty()) << "start " << i << " booted instead of restoring";
    }
  }
  m.StopWarmPool();
  EXPECT_NE(::access((root_ + "/run/vm-template.state").c_str(), F_OK), 0) << "the template goes with the pool";
  EXPECT_EQ(m.warm_pool_status().template_state, "off");
  for (const char* id : {"pod1", "pod2"}) {
    ASSERT_TRUE(m.Stop(id).ok());
    ASSERT_TRUE(m.Remove(id).ok());
  }
}

// Saved mid-session, every clone would resume inside the host's session of the template and stall its first
// connection: the save waits until the agent has logged that session's end.
TEST_F(WarmPoolTest, TheTemplateIsSavedOnlyOnceTheAgentSawTheHostSessionEnd) {
  agent_->session_end_delay_ms = 300;
  SandboxManager m(TemplatePoolOptions());
  ASSERT_NO_FATAL_FAILURE(StartFull(m));
  EXPECT_EQ(m.warm_pool_status().template_state, "ready");
  std::lock_guard<std::mutex> lock(world_.mu);
  EXPECT_EQ(world_.saved_after_session_end, std::vector<bool>{true});
}

TEST_F(WarmPoolTest, ATemplateThatCannotBeSavedLeavesWarmVmsBooting) {
  world_.save_fails = true;
  SandboxManager m(TemplatePoolOptions());
  ASSERT_NO_FATAL_FAILURE(StartFull(m));
  auto status = m.warm_pool_status();
  EXPECT_NE(status.template_state.find("failed: "), std::string::npos) << status.template_state;
  EXPECT_NE(status.last_error.find("fake save failure"), std::string::npos) << status.last_error;
  EXPECT_NE(::access((root_ + "/run/vm-template.state").c_str(), F_OK), 0);
  std::lock_guard<std::mutex> lock(world_.mu);
  ASSERT_EQ(world_.started.size(), 2u);
  EXPECT_TRUE(world_.started[1].restore_state_path.empty()) << "the warm VM boots";
  EXPECT_EQ(Entries(root_ + "/state").size(), 1u) << "only the warm VM is left";
}

TEST_F(WarmPoolTest, RestoresThatKeepFailingDropTheTemplate) {
  world_.restore_failures_left = kTemplateFailureLimit;
  SandboxManager m(TemplatePoolOptions());
  ASSERT_NO_FATAL_FAILURE(StartFull(m));
  auto status = m.warm_pool_status();
  EXPECT_NE(status.template_state.find("restores in a row failed"), std::string::npos) << status.template_state;
  EXPECT_NE(::access((root_ + "/run/vm-template.state").c_str(), F_OK), 0) << "a dropped template's file goes";
  std::lock_guard<std::mutex> lock(world_.mu);
  ASSERT_GE(world_.started.size(), 2u + kTemplateFailureLimit - 1);
  EXPECT_TRUE(world_.started.back().restore_state_path.empty()) << "after the drop, the warm VM boots";
}

}  // namespace
}  // namespace chrys::runtime
