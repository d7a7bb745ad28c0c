#include "cri/container_monitor.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "cri/cri_util.h"

namespace chrys::cri {

namespace {
// A stop ends the call in flight through its canceller, so the slice only bounds a call to a guest that stopped
// answering without closing the channel. Long: each new slice is a new stream the idle guest has to set up
// (every 2 s per container, it was a good part of an idle pod VM's CPU under emulation).
constexpr auto kReadSlice = std::chrono::seconds(60);
}  // namespace

ContainerMonitor::ContainerMonitor(PodStore& pods, runtime::GrpcAgentConnector& agents,
                                   std::function<void(const std::string&)> on_exit)
    : pods_(pods), agents_(agents), on_exit_(std::move(on_exit)) {}

namespace {

// A retry pause that a stopping follower cuts short.
void PauseUnlessStopped(const std::atomic<bool>& stop, std::chrono::milliseconds pause) {
  constexpr auto kStep = std::chrono::milliseconds(20);
  for (auto waited = std::chrono::milliseconds(0); waited < pause && !stop; waited += kStep) {
    std::this_thread::sleep_for(kStep);
  }
}

}  // namespace

ContainerMonitor::~ContainerMonitor() {
  std::map<std::string, std::unique_ptr<Watched>> all;
  {
    std::lock_guard lock(mutex_);
    all.swap(watched_);
  }
  for (auto& [id, w] : all) {
    w->Stop();
  }
  for (auto& [id, w] : all) {
    if (w->thread.joinable()) {
      w->thread.join();
    }
  }
}

void ContainerMonitor::Watch(const std::string& container_id, const std::string& sandbox_id,
                             const runtime::AgentEndpoint& endpoint, std::unique_ptr<ContainerLog> log) {
  auto watched = std::make_unique<Watched>();
  watched->log = std::move(log);
  Watched* raw = watched.get();
  std::lock_guard lock(mutex_);
  if (auto old = watched_.find(container_id); old != watched_.end()) {
    return;  // already followed
  }
  watched_[container_id] = std::move(watched);
  raw->thread =
      std::thread([this, container_id, sandbox_id, endpoint, raw] { Follow(container_id, sandbox_id, endpoint, raw); });
}

void ContainerMonitor::Follow(const std::string& container_id, const std::string& sandbox_id,
                              const runtime::AgentEndpoint& endpoint, Watched* watched) {
  runtime::agent::v1::ProcessRef process;
  process.set_container_id(container_id);
  int failures = 0;
  while (!watched->stop) {
    auto client = agents_.Get(sandbox_id, endpoint, std::chrono::seconds(5));
    if (!client.ok()) {
      if (++failures > 5) {
        spdlog::warn("container {}: agent unreachable ({}); its output is no longer followed", container_id,
                     client.error().message());
        return;
      }
      PauseUnlessStopped(watched->stop, std::chrono::seconds(1));
      continue;
    }
    auto sink = [&](runtime::agent::v1::OutputChunk::Stream stream, std::string_view data) {
      if (watched->log) {
        auto written = watched->log->Write(
            stream == runtime::agent::v1::OutputChunk::STDERR ? LogStream::kStderr : LogStream::kStdout, data);
        if (!written.ok()) {
          spdlog::warn("container {}: {}", container_id, written.error().message());
        }
      }
      return !watched->stop.load();
    };
    auto read = (*client)->ReadOutput(process, sink, kReadSlice, &watched->canceller);
    if (read.ok()) {
      break;  // both streams closed: the process is done writing
    }
    if (read.error().code() == base::ErrorCode::kDeadlineExceeded) {
      continue;
    }
    if (read.error().code() == base::ErrorCode::kNotFound) {
      break;
    }
    if (++failures > 5) {
      spdlog::warn("container {}: output stream failed: {}", container_id, read.error().message());
      break;
    }
    PauseUnlessStopped(watched->stop, std::chrono::milliseconds(200));
  }
  if (watched->stop) {
    return;
  }
  if (watched->log) {
    watched->log->Flush().ok();
  }
  // The output is complete in the log; only now may the container be reported exited.
  for (int attempt = 0; attempt < 30 && !watched->stop; ++attempt) {
    auto client = agents_.Get(sandbox_id, endpoint, std::chrono::seconds(5));
    if (!client.ok()) {
      break;
    }
    auto status = (*client)->WaitProcess(process, kReadSlice, &watched->canceller);
    if (status.ok() && status->exited()) {
      RecordExit(container_id, *status);
      return;
    }
    if (!status.ok() && watched->stop) {
      return;  // cancelled by a stop
    }
    if (!status.ok() && status.error().code() != base::ErrorCode::kDeadlineExceeded) {
      spdlog::warn("container {}: wait failed: {}", container_id, status.error().message());
      break;
    }
  }
}

void ContainerMonitor::RecordExit(const std::string& container_id, const runtime::agent::v1::ExitStatus& status) {
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
  std::lock_guard lock(mutex_);
  if (auto it = watched_.find(container_id); it != watched_.end()) {
    it->second->exited = true;
  }
  exited_.notify_all();
}

bool ContainerMonitor::WaitExited(const std::string& container_id, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return exited_.wait_for(lock, timeout, [&] {
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
  std::unique_ptr<Watched> watched;
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
  if (watched->thread.joinable()) {
    watched->thread.join();
  }
  exited_.notify_all();
}

}  // namespace chrys::cri
