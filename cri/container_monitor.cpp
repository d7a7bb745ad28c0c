#include "cri/container_monitor.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "cri/cri_util.h"

namespace chrys::cri {

namespace {
// A stop ends the call in flight by cancelling it, so the slice only bounds a call to a guest that stopped answering
// without closing the channel. Long: each new slice is a new stream the idle guest has to set up (every 2 s per
// container, it was a good part of an idle pod VM's CPU under emulation).
constexpr auto kReadSlice = std::chrono::seconds(60);
// Dialling an agent that is not connected (after a chrysd restart, or a broken channel).
constexpr auto kDialTimeout = std::chrono::seconds(5);
constexpr int kMaxFailures = 5;       // agent unreachable or output stream failing, in a row
constexpr int kMaxWaitAttempts = 30;  // WaitProcess slices before giving up on an exit that never comes
constexpr auto kForgetPatience = std::chrono::seconds(5);
}  // namespace

struct ContainerMonitor::Watched {
  std::string container_id;
  std::string sandbox_id;
  runtime::AgentEndpoint endpoint;
  std::unique_ptr<ContainerLog> log;
  std::atomic<bool> stop{false};
  int failures = 0;       // worker thread only
  int wait_attempts = 0;  // worker thread only
  bool exited = false;    // under the monitor's mutex_
  bool finished = false;  // under the monitor's mutex_

  runtime::agent::v1::ProcessRef Process() const {
    runtime::agent::v1::ProcessRef process;
    process.set_container_id(container_id);
    return process;
  }
  // Records the call in flight, cancelling it at once when a stop came meanwhile.
  void SetCall(std::shared_ptr<runtime::agent::AgentCall> started) {
    std::lock_guard lock(call_mutex);
    call = std::move(started);
    if (stop) {
      call->Cancel();
    }
  }
  void ClearCall() {
    std::lock_guard lock(call_mutex);
    call.reset();
  }
  // Sets `stop` and cancels the call in flight: the follower ends at once, not after its slice.
  void Stop() {
    stop = true;
    std::lock_guard lock(call_mutex);
    if (call) {
      call->Cancel();
    }
  }

 private:
  std::mutex call_mutex;
  std::shared_ptr<runtime::agent::AgentCall> call;
};

ContainerMonitor::ContainerMonitor(PodStore& pods, runtime::GrpcAgentConnector& agents,
                                   std::function<void(const std::string&)> on_exit)
    : pods_(pods), agents_(agents), on_exit_(std::move(on_exit)) {
  worker_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "chrys-monitor");
    WorkerLoop();
  });
}

ContainerMonitor::~ContainerMonitor() {
  std::vector<WatchedPtr> all;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, w] : watched_) {
      all.push_back(w);
    }
    watched_.clear();
  }
  for (auto& w : all) {
    w->Stop();
  }
  WakeWorker();  // stopped followers' pending steps are due now
  {
    // Cancelled calls end promptly; a dial in progress within kDialTimeout. Nothing may call back into a gone monitor.
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return unfinished_ == 0; });
  }
  {
    std::lock_guard lock(tasks_mutex_);
    quit_ = true;
  }
  tasks_changed_.notify_all();
  worker_.join();
}

void ContainerMonitor::Post(const WatchedPtr& watched, std::chrono::milliseconds delay, std::function<void()> run) {
  {
    std::lock_guard lock(tasks_mutex_);
    tasks_.push_back(Task{std::chrono::steady_clock::now() + delay, watched, std::move(run)});
  }
  tasks_changed_.notify_all();
}

void ContainerMonitor::WakeWorker() {
  // Under the lock: the worker is either before its check of `stop` or already waiting, never in between.
  { std::lock_guard lock(tasks_mutex_); }
  tasks_changed_.notify_all();
}

void ContainerMonitor::WorkerLoop() {
  std::unique_lock lock(tasks_mutex_);
  while (true) {
    // A stopped follower's step first (its pause is cut short), else the earliest due.
    auto next = tasks_.end();
    for (auto it = tasks_.begin(); it != tasks_.end(); ++it) {
      if (it->watched->stop) {
        next = it;
        break;
      }
      if (next == tasks_.end() || it->due < next->due) {
        next = it;
      }
    }
    if (next == tasks_.end()) {
      if (quit_) {
        return;
      }
      tasks_changed_.wait(lock);
      continue;
    }
    if (!next->watched->stop && next->due > std::chrono::steady_clock::now()) {
      tasks_changed_.wait_until(lock, next->due);
      continue;
    }
    Task task = std::move(*next);
    tasks_.erase(next);
    lock.unlock();
    task.run();
    lock.lock();
  }
}

void ContainerMonitor::Watch(const std::string& container_id, const std::string& sandbox_id,
                             const runtime::AgentEndpoint& endpoint, std::unique_ptr<ContainerLog> log) {
  auto watched = std::make_shared<Watched>();
  watched->container_id = container_id;
  watched->sandbox_id = sandbox_id;
  watched->endpoint = endpoint;
  watched->log = std::move(log);
  {
    std::lock_guard lock(mutex_);
    if (watched_.count(container_id) != 0) {
      return;  // already followed
    }
    watched_[container_id] = watched;
    ++unfinished_;
  }
  Post(watched, std::chrono::milliseconds(0), [this, watched] { StartReading(watched); });
}

void ContainerMonitor::StartReading(const WatchedPtr& w) {
  if (w->stop) {
    Finish(w);
    return;
  }
  auto client = agents_.Get(w->sandbox_id, w->endpoint, kDialTimeout);
  if (!client.ok()) {
    if (++w->failures > kMaxFailures) {
      spdlog::warn("container {}: agent unreachable ({}); its output is no longer followed", w->container_id,
                   client.error().message());
      Finish(w);
      return;
    }
    Post(w, std::chrono::seconds(1), [this, w] { StartReading(w); });
    return;
  }
  // On a gRPC callback thread, one chunk at a time: the next read starts when this one is in the log.
  auto sink = [w](runtime::agent::v1::OutputChunk::Stream stream, std::string_view data) {
    if (w->log) {
      auto written = w->log->Write(
          stream == runtime::agent::v1::OutputChunk::STDERR ? LogStream::kStderr : LogStream::kStdout, data);
      if (!written.ok()) {
        spdlog::warn("container {}: {}", w->container_id, written.error().message());
      }
    }
    return !w->stop.load();
  };
  w->SetCall((*client)->ReadOutputAsync(w->Process(), kReadSlice, std::move(sink), [this, w](base::Status read) {
    Post(w, std::chrono::milliseconds(0), [this, w, read = std::move(read)] { ReadEnded(w, read); });
  }));
}

void ContainerMonitor::ReadEnded(const WatchedPtr& w, const base::Status& read) {
  w->ClearCall();
  if (w->stop) {
    Finish(w);
    return;
  }
  if (read.ok() || read.error().code() == base::ErrorCode::kNotFound) {
    OutputComplete(w);  // both streams closed (the process is done writing), or the agent has no such process
    return;
  }
  if (read.error().code() == base::ErrorCode::kDeadlineExceeded) {
    StartReading(w);  // the slice ended: a new one
    return;
  }
  if (++w->failures > kMaxFailures) {
    spdlog::warn("container {}: output stream failed: {}", w->container_id, read.error().message());
    OutputComplete(w);
    return;
  }
  Post(w, std::chrono::milliseconds(200), [this, w] { StartReading(w); });
}

void ContainerMonitor::OutputComplete(const WatchedPtr& w) {
  if (w->stop) {
    Finish(w);
    return;
  }
  if (w->log) {
    if (auto flushed = w->log->Flush(); !flushed.ok()) {
      spdlog::warn("container {}: {}", w->container_id, flushed.error().message());
    }
  }
  // The output is complete in the log; only now may the container be reported exited.
  w->wait_attempts = 0;
  StartWaiting(w);
}

void ContainerMonitor::StartWaiting(const WatchedPtr& w) {
  if (w->stop || ++w->wait_attempts > kMaxWaitAttempts) {
    Finish(w);
    return;
  }
  auto client = agents_.Get(w->sandbox_id, w->endpoint, kDialTimeout);
  if (!client.ok()) {
    Finish(w);
    return;
  }
  w->SetCall((*client)->WaitProcessAsync(
      w->Process(), kReadSlice, [this, w](base::Result<runtime::agent::v1::ExitStatus> status) {
        Post(w, std::chrono::milliseconds(0), [this, w, status = std::move(status)] { WaitEnded(w, status); });
      }));
}

void ContainerMonitor::WaitEnded(const WatchedPtr& w, const base::Result<runtime::agent::v1::ExitStatus>& status) {
  w->ClearCall();
  if (status.ok() && status->exited()) {
    RecordExit(w, *status);
    Finish(w);
    return;
  }
  if (w->stop) {
    Finish(w);
    return;
  }
  if (!status.ok() && status.error().code() != base::ErrorCode::kDeadlineExceeded) {
    spdlog::warn("container {}: wait failed: {}", w->container_id, status.error().message());
    Finish(w);
    return;
  }
  StartWaiting(w);
}

void ContainerMonitor::RecordExit(const WatchedPtr& w, const runtime::agent::v1::ExitStatus& status) {
  const std::string& container_id = w->container_id;
  // Read and write in one step: an update of the same record meanwhile (new resources) is not lost.
  bool recorded = false;
  auto record = pods_.MutateContainer(container_id, [&](ContainerRecord& c) {
    if (c.state != ContainerState::kRunning) {
      return;
    }
    c.state = ContainerState::kExited;
    c.exit_code = status.exit_code();
    // Host time, like started_at: the guest clock may differ from the host's.
    c.finished_at = std::max(NowNanos(), c.started_at);
    c.reason = status.oom_killed() ? "OOMKilled" : status.exit_code() == 0 ? "Completed" : "Error";
    recorded = true;
  });
  if (!record.ok() && record.error().code() != base::ErrorCode::kNotFound) {
    spdlog::error("container {}: cannot record its exit: {}", container_id, record.error().message());
  }
  if (record.ok() && recorded) {
    spdlog::info("container {} exited with code {} ({})", container_id, record->exit_code, record->reason);
    if (on_exit_) {
      on_exit_(container_id);
    }
  }
  {
    std::lock_guard lock(mutex_);
    w->exited = true;
  }
  changed_.notify_all();
}

void ContainerMonitor::Finish(const WatchedPtr& w) {
  w->ClearCall();
  {
    std::lock_guard lock(mutex_);
    if (w->finished) {
      return;
    }
    w->finished = true;
    --unfinished_;
  }
  changed_.notify_all();
}

bool ContainerMonitor::WaitExited(const std::string& container_id, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] {
    auto it = watched_.find(container_id);
    return it == watched_.end() || it->second->exited;
  });
}

base::Status ContainerMonitor::ReopenLog(const std::string& container_id) {
  std::lock_guard lock(mutex_);
  auto it = watched_.find(container_id);
  if (it == watched_.end() || !it->second->log) {
    return base::NotFound("container " + container_id + " has no open log");
  }
  return it->second->log->Reopen();
}

void ContainerMonitor::Forget(const std::string& container_id) {
  WatchedPtr watched;
  {
    std::lock_guard lock(mutex_);
    auto it = watched_.find(container_id);
    if (it == watched_.end()) {
      return;
    }
    watched = std::move(it->second);
    watched_.erase(it);
  }
  watched->Stop();
  WakeWorker();  // a pending retry of this follower is due now
  std::unique_lock lock(mutex_);
  changed_.notify_all();  // WaitExited callers: the container is no longer followed
  if (!changed_.wait_for(lock, kForgetPatience, [&] { return watched->finished; })) {
    spdlog::warn("container {}: its follower did not stop within {} s (an agent dial in progress); it ends on its own",
                 container_id, kForgetPatience.count());
  }
}

size_t ContainerMonitor::watched() const {
  std::lock_guard lock(mutex_);
  return watched_.size();
}

}  // namespace chrys::cri
