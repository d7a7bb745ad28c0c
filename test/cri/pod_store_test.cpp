// PodStore: persistence round trips, read-modify-write without lost updates, and the concurrency property the
// read RPCs rely on: a read never waits for a writer's disk I/O.
#include "cri/pod_store.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <filesystem>
#include <future>
#include <thread>

#include "cri/validation.h"

namespace chrys::cri {
namespace {

class PodStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/chrys-podstore-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto state = StateStore::Open(dir_ + "/state");
    ASSERT_TRUE(state.ok());
    state_.emplace(std::move(state).value());
    store_ = std::make_unique<PodStore>(*state_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static PodRecord Pod(const std::string& id, const std::string& name) {
    PodRecord pod;
    pod.id = id;
    pod.state = PodState::kReady;
    pod.config.mutable_metadata()->set_name(name);
    pod.config.mutable_metadata()->set_namespace_("default");
    pod.config.mutable_metadata()->set_uid("uid-" + name);
    return pod;
  }
  static ContainerRecord Container(const std::string& id, const std::string& pod_id, const std::string& name) {
    ContainerRecord c;
    c.id = id;
    c.sandbox_id = pod_id;
    c.state = ContainerState::kRunning;
    c.config.mutable_metadata()->set_name(name);
    return c;
  }

  std::string dir_;
  std::optional<StateStore> state_;
  std::unique_ptr<PodStore> store_;
};

TEST_F(PodStoreTest, RecordsSurviveAReload) {
  ASSERT_TRUE(store_->AddPod(Pod("p1", "web")).ok());
  ASSERT_TRUE(store_->AddContainer(Container("c1", "p1", "app")).ok());
  auto dup = store_->AddPod(Pod("p2", "web"));
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code(), base::ErrorCode::kAlreadyExists);
  PodStore reloaded(*state_);
  reloaded.Load();
  EXPECT_EQ(reloaded.ListPods().size(), 1u);
  ASSERT_TRUE(reloaded.FindContainer("c").ok()) << reloaded.FindContainer("c").error().message();
  EXPECT_EQ(reloaded.FindContainer("c")->sandbox_id, "p1");
  EXPECT_EQ(reloaded.SnapshotContainers().size(), 1u);
  ASSERT_TRUE(reloaded.RemoveContainer("c1").ok());
  EXPECT_EQ(reloaded.FindContainer("c1").error().code(), base::ErrorCode::kNotFound);
}

TEST_F(PodStoreTest, MutateContainerLosesNoConcurrentUpdate) {
  ASSERT_TRUE(store_->AddContainer(Container("c1", "p1", "app")).ok());
  // Two kinds of writers change different fields of one record at once, as the exit monitor and
  // UpdateContainerResources do; each read-modify-write must see the other's result.
  constexpr int kRounds = 50;
  auto bump_exit = std::async(std::launch::async, [&] {
    for (int i = 0; i < kRounds; ++i) {
      ASSERT_TRUE(store_->MutateContainer("c1", [](ContainerRecord& c) { ++c.exit_code; }).ok());
    }
  });
  auto bump_memory = std::async(std::launch::async, [&] {
    for (int i = 0; i < kRounds; ++i) {
      ASSERT_TRUE(store_
                      ->MutateContainer("c1",
                                        [](ContainerRecord& c) {
                                          auto* r = c.config.mutable_linux()->mutable_resources();
                                          r->set_memory_limit_in_bytes(r->memory_limit_in_bytes() + 1);
                                        })
                      .ok());
    }
  });
  bump_exit.get();
  bump_memory.get();
  auto c = store_->GetContainer("c1");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->exit_code, kRounds);
  EXPECT_EQ(c->config.linux().resources().memory_limit_in_bytes(), kRounds);
  EXPECT_EQ(store_->MutateContainer("nope", [](ContainerRecord&) {}).error().code(), base::ErrorCode::kNotFound);
}

TEST_F(PodStoreTest, ReadsDoNotWaitForAWriterStuckInItsDiskWrite) {
  ASSERT_TRUE(store_->AddPod(Pod("p1", "web")).ok());
  ASSERT_TRUE(store_->AddContainer(Container("c1", "p1", "app")).ok());

  // The hook runs inside a writer, after its record file is written and before the index changes: hold the
  // writer there, as a slow fsync would, and check that every read RPC's store call still completes.
  std::mutex mu;
  std::condition_variable cv;
  bool writer_inside = false;
  bool release_writer = false;
  store_->SetWriteHookForTest([&] {
    std::unique_lock lock(mu);
    writer_inside = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release_writer; });
  });
  auto writer = std::async(std::launch::async, [&] {
    return store_->MutateContainer("c1", [](ContainerRecord& c) { c.state = ContainerState::kExited; });
  });
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return writer_inside; }));
  }
  auto reader = std::async(std::launch::async, [&] {
    int found = 0;
    found += store_->SnapshotContainers().size() == 1 ? 1 : 0;
    found += store_->SnapshotPods().size() == 1 ? 1 : 0;
    found += store_->FindContainerPtr("c1").ok() ? 1 : 0;
    found += store_->FindPod("p1").ok() ? 1 : 0;
    found += store_->ListContainers().size() == 1 ? 1 : 0;
    // Still the old state: the writer has not published its record yet.
    found += (*store_->FindContainerPtr("c1"))->state == ContainerState::kRunning ? 1 : 0;
    return found;
  });
  // Bounded: if the reads waited for the writer this would time out (the writer is parked until we release it).
  bool reads_done = reader.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  {
    std::lock_guard lock(mu);
    release_writer = true;
  }
  cv.notify_all();
  ASSERT_TRUE(writer.get().ok());
  store_->SetWriteHookForTest(nullptr);
  ASSERT_TRUE(reads_done) << "a read waited for a writer's disk write";
  EXPECT_EQ(reader.get(), 6);
  EXPECT_EQ((*store_->FindContainerPtr("c1"))->state, ContainerState::kExited);
}

TEST_F(PodStoreTest, SnapshotsStayValidWhileRecordsChange) {
  ASSERT_TRUE(store_->AddContainer(Container("c1", "p1", "app")).ok());
  auto snapshot = store_->SnapshotContainers();
  ASSERT_TRUE(store_->MutateContainer("c1", [](ContainerRecord& c) { c.exit_code = 7; }).ok());
  ASSERT_TRUE(store_->RemoveContainer("c1").ok());
  ASSERT_EQ(snapshot.size(), 1u);
  EXPECT_EQ(snapshot[0]->exit_code, 0);  // the record as it was when listed
  EXPECT_EQ(snapshot[0]->id, "c1");
}

TEST(ResourcesValidation, NegativeValuesNameTheField) {
  ::runtime::v1::LinuxContainerResources r;
  r.set_memory_limit_in_bytes(-1);
  auto s = ValidateLinuxResources(r, "linux");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), base::ErrorCode::kInvalidArgument);
  EXPECT_NE(s.error().message().find("linux.memory_limit_in_bytes"), std::string::npos);
  for (auto set : std::vector<std::function<void(::runtime::v1::LinuxContainerResources&)>>{
           [](auto& x) { x.set_cpu_period(-1); }, [](auto& x) { x.set_cpu_quota(-5); },
           [](auto& x) { x.set_cpu_shares(-2); }, [](auto& x) { x.set_memory_swap_limit_in_bytes(-2); },
           [](auto& x) { x.set_oom_score_adj(-1001); }, [](auto& x) { x.set_cpu_quota(10); },
           [](auto& x) { x.set_memory_limit_in_bytes(4096); }}) {
    ::runtime::v1::LinuxContainerResources bad;
    set(bad);
    EXPECT_FALSE(ValidateLinuxResources(bad, "linux").ok()) << bad.DebugString();
  }
  ::runtime::v1::LinuxContainerResources good;
  good.set_memory_limit_in_bytes(64 << 20);
  good.set_memory_swap_limit_in_bytes(-1);
  good.set_cpu_quota(50000);
  good.set_cpu_period(100000);
  good.set_cpu_shares(512);
  EXPECT_TRUE(ValidateLinuxResources(good, "linux").ok());
}

TEST(ResourcesValidation, MergeKeepsWhatTheUpdateLeavesUnset) {
  ::runtime::v1::LinuxContainerResources current;
  current.set_memory_limit_in_bytes(128 << 20);
  current.set_cpu_quota(50000);
  current.set_cpu_period(100000);
  current.set_oom_score_adj(500);
  (*current.mutable_unified())["memory.high"] = "1";
  auto* huge = current.add_hugepage_limits();
  huge->set_page_size("2MB");
  huge->set_limit(1);
  ::runtime::v1::LinuxContainerResources update;
  update.set_memory_limit_in_bytes(64 << 20);
  update.set_oom_score_adj(-10);  // cannot change once running: ignored
  (*update.mutable_unified())["pids.max"] = "10";
  auto* huge2 = update.add_hugepage_limits();
  huge2->set_page_size("2MB");
  huge2->set_limit(2);
  auto merged = MergeLinuxResources(current, update);
  EXPECT_EQ(merged.memory_limit_in_bytes(), 64 << 20);
  EXPECT_EQ(merged.cpu_quota(), 50000);
  EXPECT_EQ(merged.oom_score_adj(), 500);
  EXPECT_EQ(merged.unified().at("memory.high"), "1");
  EXPECT_EQ(merged.unified().at("pids.max"), "10");
  ASSERT_EQ(merged.hugepage_limits_size(), 1);
  EXPECT_EQ(merged.hugepage_limits(0).limit(), 2u);
}

TEST(ResourcesValidation, CpuSharesBecomeWeights) {
  EXPECT_EQ(CpuSharesToWeight(0), 0u);
  EXPECT_EQ(CpuSharesToWeight(2), 1u);
  EXPECT_EQ(CpuSharesToWeight(1024), 39u);
  EXPECT_EQ(CpuSharesToWeight(262144), 10000u);
  EXPECT_EQ(CpuSharesToWeight(1), 1u);  // below the v1 minimum: clamped
}

}  // namespace
}  // namespace chrys::cri
