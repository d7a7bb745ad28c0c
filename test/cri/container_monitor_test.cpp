// ContainerMonitor and the asynchronous agent calls it rides on, against an in-process stand-in for chrys-agent on a
// unix socket: output reaches the CRI log in order before the exit is recorded, a blocked stream is cancelled by a
// stop, failures map to our error codes, and following many containers costs no thread per container.
#include "cri/container_monitor.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "base/file_util.h"

namespace chrys::cri {
namespace {

namespace av1 = runtime::agent::v1;
using namespace std::chrono_literals;

// What the stand-in agent does for one container.
struct Script {
  std::vector<std::pair<av1::OutputChunk::Stream, std::string>> chunks;
  enum class End { kClose, kBlockUntilCancelled, kUnavailable } output_end = End::kClose;
  bool wait_blocks = false;  // WaitProcess blocks until cancelled instead of answering
  int exit_code = 0;
};

// chrys-agent's ReadOutput, WaitProcess and Ping as scripted per container, as callbacks: a blocked call holds no
// thread of this process, so the thread count measures the client side alone. Counts the calls it saw cancelled.
class FakeAgent final : public av1::Agent::CallbackService {
 public:
  void SetScript(const std::string& container_id, Script script) {
    std::lock_guard lock(mutex_);
    scripts_[container_id] = std::move(script);
  }
  int cancelled() const {
    std::lock_guard lock(mutex_);
    return cancelled_;
  }
  // Blocks (at most `timeout`) until `n` calls were seen cancelled.
  bool WaitCancelled(int n, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return cancelled_ >= n; });
  }

  grpc::ServerUnaryReactor* Ping(grpc::CallbackServerContext* context, const av1::PingRequest* /*request*/,
                                 av1::PingResponse* response) override {
    response->set_ready(true);
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerWriteReactor<av1::OutputChunk>* ReadOutput(grpc::CallbackServerContext* /*context*/,
                                                         const av1::ReadOutputRequest* request) override {
    return new OutputWriter(this, Find(request->process().container_id()));
  }

  grpc::ServerUnaryReactor* WaitProcess(grpc::CallbackServerContext* context, const av1::WaitProcessRequest* request,
                                        av1::WaitProcessResponse* response) override {
    Script script = Find(request->process().container_id());
    if (script.wait_blocks) {
      return new UntilCancelled(this);
    }
    response->mutable_status()->set_exited(true);
    response->mutable_status()->set_exit_code(script.exit_code);
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  // Writes the script's chunks one by one, then ends the stream as scripted.
  class OutputWriter final : public grpc::ServerWriteReactor<av1::OutputChunk> {
   public:
    OutputWriter(FakeAgent* agent, Script script) : agent_(agent), script_(std::move(script)) { Next(); }
    void OnWriteDone(bool ok) override {
      if (ok) {
        Next();
      }
    }
    void OnCancel() override {
      agent_->NoteCancelled();
      End({grpc::StatusCode::CANCELLED, "cancelled"});
    }
    void OnDone() override { delete this; }

   private:
    void Next() {
      if (next_ < script_.chunks.size()) {
        chunk_.set_stream(script_.chunks[next_].first);
        chunk_.set_data(script_.chunks[next_].second);
        ++next_;
        StartWrite(&chunk_);
        return;
      }
      if (script_.output_end == Script::End::kClose) {
        End(grpc::Status::OK);
      } else if (script_.output_end == Script::End::kUnavailable) {
        End({grpc::StatusCode::UNAVAILABLE, "the guest went away"});
      }  // kBlockUntilCancelled: OnCancel ends it
    }
    void End(const grpc::Status& status) {
      std::lock_guard lock(mutex_);
      if (!finished_) {
        finished_ = true;
        Finish(status);
      }
    }
    FakeAgent* agent_;
    Script script_;
    size_t next_ = 0;
    av1::OutputChunk chunk_;
    std::mutex mutex_;
    bool finished_ = false;
  };

  // A unary call that ends only when the client cancels it or its deadline passes.
  class UntilCancelled final : public grpc::ServerUnaryReactor {
   public:
    explicit UntilCancelled(FakeAgent* agent) : agent_(agent) {}
    void OnCancel() override {
      agent_->NoteCancelled();
      Finish({grpc::StatusCode::CANCELLED, "cancelled"});
    }
    void OnDone() override { delete this; }

   private:
    FakeAgent* agent_;
  };

  Script Find(const std::string& container_id) {
    std::lock_guard lock(mutex_);
    auto it = scripts_.find(container_id);
    return it == scripts_.end() ? Script{} : it->second;
  }
  void NoteCancelled() {
    std::lock_guard lock(mutex_);
    ++cancelled_;
    changed_.notify_all();
  }

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, Script> scripts_;
  int cancelled_ = 0;
};

int ThreadCount() {
  int n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
    ++n;
  }
  return n;
}

class ContainerMonitorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/chrys-monitor-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + dir_ + "/agent.sock", grpc::InsecureServerCredentials());
    builder.RegisterService(&agent_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    endpoint_.kind = runtime::AgentChannelKind::kVirtioSerial;
    endpoint_.socket_path = dir_ + "/agent.sock";
    auto state = StateStore::Open(dir_ + "/state");
    ASSERT_TRUE(state.ok());
    state_.emplace(std::move(state).value());
    pods_ = std::make_unique<PodStore>(*state_);
    PodRecord pod;
    pod.id = "pod1";
    pod.state = PodState::kReady;
    pod.config.mutable_metadata()->set_name("pod");
    pod.config.mutable_metadata()->set_namespace_("default");
    pod.config.mutable_metadata()->set_uid("uid-pod");
    ASSERT_TRUE(pods_->AddPod(pod).ok());
    monitor_ = std::make_unique<ContainerMonitor>(*pods_, agents_, [this](const std::string& id) {
      std::lock_guard lock(exits_mutex_);
      exits_.push_back(id);
    });
  }
  void TearDown() override {
    monitor_.reset();
    agents_.Forget("pod1");
    server_->Shutdown(std::chrono::system_clock::now() + 2s);
    std::filesystem::remove_all(dir_);
  }

  // A running container record and its follower, logging to <dir>/<id>.log.
  void Follow(const std::string& id, Script script) {
    agent_.SetScript(id, std::move(script));
    ContainerRecord c;
    c.id = id;
    c.sandbox_id = "pod1";
    c.state = ContainerState::kRunning;
    c.config.mutable_metadata()->set_name(id);
    ASSERT_TRUE(pods_->AddContainer(c).ok());
    auto log = ContainerLog::Open(dir_ + "/" + id + ".log");
    ASSERT_TRUE(log.ok());
    monitor_->Watch(id, "pod1", endpoint_, std::move(log).value());
  }
  std::string Log(const std::string& id) {
    auto text = base::ReadFile(dir_ + "/" + id + ".log");
    return text.ok() ? *text : "";
  }
  // Waits (5 s at most) until the container's log holds `text`: its follower is inside its stream.
  bool WaitForLog(const std::string& id, const std::string& text) {
    for (int i = 0; i < 500 && Log(id).find(text) == std::string::npos; ++i) {
      std::this_thread::sleep_for(10ms);
    }
    return Log(id).find(text) != std::string::npos;
  }

  std::string dir_;
  FakeAgent agent_;
  std::unique_ptr<grpc::Server> server_;
  runtime::AgentEndpoint endpoint_;
  std::optional<StateStore> state_;
  std::unique_ptr<PodStore> pods_;
  runtime::GrpcAgentConnector agents_;
  std::unique_ptr<ContainerMonitor> monitor_;
  std::mutex exits_mutex_;
  std::vector<std::string> exits_;
};

TEST_F(ContainerMonitorTest, OutputReachesTheLogInOrderBeforeTheExitIsRecorded) {
  Script script;
  script.chunks = {{av1::OutputChunk::STDOUT, "first line\nsecond "},
                   {av1::OutputChunk::STDERR, "an error\n"},
                   {av1::OutputChunk::STDOUT, "half\nno newline at the end"}};
  script.exit_code = 3;
  Follow("c1", script);
  ASSERT_TRUE(monitor_->WaitExited("c1", 20s));

  auto record = pods_->FindContainer("c1");
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->state, ContainerState::kExited);
  EXPECT_EQ(record->exit_code, 3);
  EXPECT_EQ(record->reason, "Error");
  {
    std::lock_guard lock(exits_mutex_);
    EXPECT_EQ(exits_, std::vector<std::string>{"c1"});
  }
  // Every line, in order, the unterminated last one flushed as a full record once the output ended.
  std::string log = Log("c1");
  auto first = log.find(" stdout F first line\n");
  auto error = log.find(" stderr F an error\n");
  auto second = log.find(" stdout F second half\n");
  auto last = log.find(" stdout F no newline at the end\n");
  ASSERT_NE(first, std::string::npos) << log;
  ASSERT_NE(error, std::string::npos) << log;
  ASSERT_NE(second, std::string::npos) << log;
  ASSERT_NE(last, std::string::npos) << log;
  EXPECT_LT(first, second);
  EXPECT_LT(second, last);
}

TEST_F(ContainerMonitorTest, ForgetCancelsABlockedStreamAndNoExitIsRecorded) {
  Script script;
  script.chunks = {{av1::OutputChunk::STDOUT, "running\n"}};
  script.output_end = Script::End::kBlockUntilCancelled;
  Follow("c1", script);
  ASSERT_TRUE(WaitForLog("c1", "running"));

  monitor_->Forget("c1");
  EXPECT_TRUE(agent_.WaitCancelled(1, 20s)) << "the agent never saw the stream cancelled";
  EXPECT_EQ(monitor_->watched(), 0U);
  auto record = pods_->FindContainer("c1");
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->state, ContainerState::kRunning);  // forgotten, not exited
  EXPECT_TRUE(monitor_->WaitExited("c1", 0ms));        // not followed any more: nothing to wait for
}

TEST_F(ContainerMonitorTest, ManyFollowedContainersCostNoThreadEach) {
  // Warm up gRPC's own threads (channel, callback executors) with one follower inside its stream first.
  Script blocking;
  blocking.chunks = {{av1::OutputChunk::STDOUT, "up\n"}};
  blocking.output_end = Script::End::kBlockUntilCancelled;
  Follow("warm", blocking);
  ASSERT_TRUE(WaitForLog("warm", "up"));
  std::this_thread::sleep_for(200ms);
  int before = ThreadCount();
  constexpr int kContainers = 40;
  for (int i = 0; i < kContainers; ++i) {
    Follow("c" + std::to_string(i), blocking);
  }
  EXPECT_EQ(monitor_->watched(), static_cast<size_t>(kContainers + 1));
  // Every follower inside its stream: its first line is in its log.
  for (int i = 0; i < kContainers; ++i) {
    ASSERT_TRUE(WaitForLog("c" + std::to_string(i), "up")) << "c" << i;
  }
  // A thread per follower would add 40; gRPC may start a few more of its own under load.
  int after = ThreadCount();
  EXPECT_LT(after - before, 8) << "threads before " << before << ", after " << after;

  // The monitor's destructor cancels every stream and returns only when all followers let go.
  monitor_.reset();
  EXPECT_TRUE(agent_.WaitCancelled(kContainers + 1, 20s)) << "cancelled: " << agent_.cancelled();
}

TEST_F(ContainerMonitorTest, AStreamThatFailsStillEndsInTheRecordedExit) {
  Script script;
  script.chunks = {{av1::OutputChunk::STDOUT, "before the failure\n"}};
  script.output_end = Script::End::kUnavailable;  // every slice fails: after kMaxFailures the follower waits
  script.exit_code = 0;
  Follow("c1", script);
  ASSERT_TRUE(monitor_->WaitExited("c1", 30s));
  auto record = pods_->FindContainer("c1");
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->state, ContainerState::kExited);
  EXPECT_EQ(record->reason, "Completed");
  EXPECT_NE(Log("c1").find("before the failure"), std::string::npos);
}

// The asynchronous calls themselves, on a client of their own.
class AgentCallTest : public ContainerMonitorTest {
 protected:
  std::shared_ptr<runtime::agent::AgentClient> Client() {
    auto client = agents_.Get("pod1", endpoint_, 10s);
    EXPECT_TRUE(client.ok()) << client.error().message();
    return client.ok() ? *client : nullptr;
  }
  static av1::ProcessRef Process(const std::string& id) {
    av1::ProcessRef process;
    process.set_container_id(id);
    return process;
  }
};

TEST_F(AgentCallTest, ReadOutputAsyncDeliversChunksInOrderThenOk) {
  Script script;
  script.chunks = {{av1::OutputChunk::STDOUT, "a"}, {av1::OutputChunk::STDERR, "b"}, {av1::OutputChunk::STDOUT, "c"}};
  agent_.SetScript("x", script);
  auto client = Client();
  ASSERT_NE(client, nullptr);
  std::string seen;
  std::promise<base::Status> done;
  auto call = client->ReadOutputAsync(
      Process("x"), 10s,
      [&](av1::OutputChunk::Stream stream, std::string_view data) {
        seen += (stream == av1::OutputChunk::STDERR ? "E:" : "O:") + std::string(data) + " ";
        return true;
      },
      [&](base::Status status) { done.set_value(std::move(status)); });
  auto future = done.get_future();
  ASSERT_EQ(future.wait_for(20s), std::future_status::ready);
  base::Status status = future.get();
  EXPECT_TRUE(status.ok()) << status.error().message();
  EXPECT_EQ(seen, "O:a E:b O:c ");
}

TEST_F(AgentCallTest, ASinkThatStopsEndsTheCallWithOk) {
  Script script;
  script.chunks = {{av1::OutputChunk::STDOUT, "1"}, {av1::OutputChunk::STDOUT, "2"}};
  script.output_end = Script::End::kBlockUntilCancelled;
  agent_.SetScript("x", script);
  auto client = Client();
  ASSERT_NE(client, nullptr);
  int chunks = 0;
  std::promise<base::Status> done;
  auto call = client->ReadOutputAsync(
      Process("x"), 10s, [&](av1::OutputChunk::Stream, std::string_view) { return ++chunks < 1; },
      [&](base::Status status) { done.set_value(std::move(status)); });
  auto future = done.get_future();
  ASSERT_EQ(future.wait_for(20s), std::future_status::ready);
  EXPECT_TRUE(future.get().ok());
  EXPECT_EQ(chunks, 1);  // nothing delivered after the sink said stop
}

TEST_F(AgentCallTest, CancelEndsABlockedCallWithCancelledAndDeadlineWithDeadlineExceeded) {
  Script script;
  script.output_end = Script::End::kBlockUntilCancelled;
  script.wait_blocks = true;
  agent_.SetScript("x", script);
  auto client = Client();
  ASSERT_NE(client, nullptr);

  std::promise<base::Status> read_done;
  auto read = client->ReadOutputAsync(
      Process("x"), 60s, [](av1::OutputChunk::Stream, std::string_view) { return true; },
      [&](base::Status status) { read_done.set_value(std::move(status)); });
  read->Cancel();
  auto read_future = read_done.get_future();
  ASSERT_EQ(read_future.wait_for(20s), std::future_status::ready);
  base::Status read_status = read_future.get();
  ASSERT_FALSE(read_status.ok());
  EXPECT_EQ(read_status.error().code(), base::ErrorCode::kCancelled) << read_status.error().message();
  EXPECT_NE(read_status.error().message().find("agent ReadOutput x"), std::string::npos)
      << read_status.error().message();

  std::promise<base::Result<av1::ExitStatus>> wait_done;
  auto wait = client->WaitProcessAsync(
      Process("x"), 300ms, [&](base::Result<av1::ExitStatus> status) { wait_done.set_value(std::move(status)); });
  auto wait_future = wait_done.get_future();
  ASSERT_EQ(wait_future.wait_for(20s), std::future_status::ready);
  auto wait_status = wait_future.get();
  ASSERT_FALSE(wait_status.ok());
  EXPECT_EQ(wait_status.error().code(), base::ErrorCode::kDeadlineExceeded) << wait_status.error().message();
  EXPECT_TRUE(client->Healthy());  // neither says the connection is gone
}

TEST_F(AgentCallTest, UnavailableMarksTheClientBroken) {
  Script script;
  script.output_end = Script::End::kUnavailable;
  agent_.SetScript("x", script);
  auto client = Client();
  ASSERT_NE(client, nullptr);
  std::promise<base::Status> done;
  auto call = client->ReadOutputAsync(
      Process("x"), 10s, [](av1::OutputChunk::Stream, std::string_view) { return true; },
      [&](base::Status status) { done.set_value(std::move(status)); });
  auto future = done.get_future();
  ASSERT_EQ(future.wait_for(20s), std::future_status::ready);
  base::Status status = future.get();
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code(), base::ErrorCode::kUnavailable);
  EXPECT_FALSE(client->Healthy());  // the owner dials again before the next call
}

TEST_F(AgentCallTest, WaitProcessAsyncReturnsTheExitStatus) {
  Script script;
  script.exit_code = 42;
  agent_.SetScript("x", script);
  auto client = Client();
  ASSERT_NE(client, nullptr);
  std::promise<base::Result<av1::ExitStatus>> done;
  auto call = client->WaitProcessAsync(
      Process("x"), 10s, [&](base::Result<av1::ExitStatus> status) { done.set_value(std::move(status)); });
  auto future = done.get_future();
  ASSERT_EQ(future.wait_for(20s), std::future_status::ready);
  auto status = future.get();
  ASSERT_TRUE(status.ok()) << status.error().message();
  EXPECT_TRUE(status->exited());
  EXPECT_EQ(status->exit_code(), 42);
}

}  // namespace
}  // namespace chrys::cri
