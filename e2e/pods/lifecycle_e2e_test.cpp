// Pods and containers of a real chrysd, driven only through its CRI socket: lifecycles, exit codes, logs, ExecSync,
// localhost between containers, volumes both ways, chrysd restarts with pods running, 10 pods at once, a pod that
// takes a VM from the warm pool.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "base/file_util.h"
#include "e2e/pods/pod_env.h"

namespace chrys::e2e {
namespace {

using Clock = std::chrono::steady_clock;

std::unique_ptr<PodEnv> MakeEnv() {
  auto env = PodEnv::Create();
  if (!env.ok()) {
    ADD_FAILURE() << "pod test environment: " << env.error().message();
    return nullptr;
  }
  return std::move(env).value();
}

bool ProcessAlive(pid_t pid) {
  return pid > 0 && ::kill(pid, 0) == 0;
}

bool WaitGone(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (ProcessAlive(pid)) {
    if (Clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

// The VMM pid from PodSandboxStatus' verbose info (0 when absent).
pid_t VmPid(PodEnv& env, const std::string& pod_id) {
  v1::PodSandboxStatusRequest req;
  req.set_pod_sandbox_id(pod_id);
  req.set_verbose(true);
  v1::PodSandboxStatusResponse resp;
  if (!env.runtime().PodSandboxStatus(Ctx().get(), req, &resp).ok() || !resp.info().contains("info")) {
    return 0;
  }
  auto info = nlohmann::json::parse(resp.info().at("info"), nullptr, false);
  if (!info.is_object() || !info.contains("vm") || !info["vm"].contains("pid")) {
    return 0;
  }
  return info["vm"]["pid"].get<pid_t>();
}

// Waits (bounded) until the log file has a line of `stream` equal to `text`.
bool WaitForLogLine(const std::string& path, const std::string& stream, const std::string& text,
                    std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    auto lines = ReadCriLog(path);
    if (lines.ok()) {
      auto joined = JoinedLines(*lines, stream);
      if (std::find(joined.begin(), joined.end(), text) != joined.end()) {
        return true;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

std::string LogText(const std::string& path) {
  auto text = base::ReadFile(path, 64 << 20);
  return text.ok() ? *text : "(no log: " + text.error().message() + ")";
}

v1::ListContainersResponse ListContainers(PodEnv& env, const v1::ContainerFilter& filter) {
  v1::ListContainersRequest req;
  *req.mutable_filter() = filter;
  v1::ListContainersResponse resp;
  auto status = env.runtime().ListContainers(Ctx().get(), req, &resp);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return resp;
}

v1::ListPodSandboxResponse ListPods(PodEnv& env, const v1::PodSandboxFilter& filter) {
  v1::ListPodSandboxRequest req;
  *req.mutable_filter() = filter;
  v1::ListPodSandboxResponse resp;
  auto status = env.runtime().ListPodSandbox(Ctx().get(), req, &resp);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return resp;
}

grpc::Status ExecSync(PodEnv& env, const std::string& id, const std::vector<std::string>& cmd, int64_t timeout_s,
                      v1::ExecSyncResponse* resp) {
  v1::ExecSyncRequest req;
  req.set_container_id(id);
  for (const auto& c : cmd) {
    req.add_cmd(c);
  }
  req.set_timeout(timeout_s);
  return env.runtime().ExecSync(Ctx().get(), req, resp);
}

grpc::Status StopContainer(PodEnv& env, const std::string& id, int64_t timeout_s) {
  v1::StopContainerRequest req;
  req.set_container_id(id);
  req.set_timeout(timeout_s);
  v1::StopContainerResponse resp;
  return env.runtime().StopContainer(Ctx().get(), req, &resp);
}

grpc::Status RemoveContainer(PodEnv& env, const std::string& id) {
  v1::RemoveContainerRequest req;
  req.set_container_id(id);
  v1::RemoveContainerResponse resp;
  return env.runtime().RemoveContainer(Ctx().get(), req, &resp);
}

// Creates and starts a container; the id, or a failure recorded in the test.
std::string RunContainer(PodEnv& env, const std::string& pod_id, const v1::PodSandboxConfig& pod_config,
                         const v1::ContainerConfig& config) {
  auto id = env.CreateContainer(pod_id, config, pod_config);
  if (!id.ok()) {
    ADD_FAILURE() << config.metadata().name() << ": " << id.error().message();
    return "";
  }
  if (auto started = env.StartContainer(*id); !started.ok()) {
    ADD_FAILURE() << config.metadata().name() << ": " << started.error().message();
  }
  return *id;
}

// Waits (60 s at most) until `path` exists: a mark a container left in a shared directory.
bool WaitForFile(const std::string& path) {
  for (int i = 0; i < 600; ++i) {
    if (std::filesystem::exists(path)) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// A pod with one container running `script` that sees the host directory <env root>/<name> at /shared, where the
// container leaves marks for the test; returned once the container has created /shared/ready.
struct PodWithSharedDir {
  v1::PodSandboxConfig pod_config;
  std::string pod;
  std::string container;
  std::string shared;  // host side
};
PodWithSharedDir RunPodWithSharedDir(PodEnv& env, const std::string& name, const std::string& script) {
  PodWithSharedDir out;
  out.shared = env.root() + "/" + name;
  EXPECT_TRUE(base::MakeDirs(out.shared).ok());
  out.pod_config = env.PodConfig(name);
  auto pod = env.RunPod(out.pod_config);
  EXPECT_TRUE(pod.ok()) << pod.error().message() << "\n" << env.chrysd().Output();
  if (!pod.ok()) {
    return out;
  }
  out.pod = *pod;
  auto config = env.ContainerConfig(name, {"/bin/sh", "-c", "touch /shared/ready; " + script});
  auto* mount = config.add_mounts();
  mount->set_container_path("/shared");
  mount->set_host_path(out.shared);
  out.container = RunContainer(env, out.pod, out.pod_config, config);
  bool ready = !out.container.empty() && WaitForFile(out.shared + "/ready");
  EXPECT_TRUE(ready) << "the container did not start\n" << env.chrysd().Output();
  if (!ready) {
    out.container.clear();
  }
  return out;
}

TEST(PodLifecycle, RunInspectListStopRemoveIdempotent) {
  auto env = MakeEnv();
  ASSERT_TRUE(env);
  HostTraces clean = env->Traces();
  v1::PodSandboxConfig config = env->PodConfig("lifecycle");
  (*config.mutable_annotations())["e2e/note"] = "kept as given";
  auto id = env->RunPod(config);
  ASSERT_TRUE(id.ok()) << id.error().message() << "\n" << env->chrysd().Output();
  EXPECT_EQ(id->size(), 64U);

  auto status = env->PodStatus(*id);
  ASSERT_TRUE(status.ok()) << status.error().message();
  EXPECT_EQ(status->state(), v1::SANDBOX_READY);
  EXPECT_EQ(status->metadata().name(), "lifecycle");
  EXPECT_EQ(status->annotations().at("e2e/note"), "kept as given");
  EXPECT_GT(status->created_at(), 0);
  std::string prefix = env->subnet().substr(0, env->subnet().rfind('.') + 1);
  EXPECT_EQ(status->network().ip().rfind(prefix, 0), 0U) << status->network().ip() << " not in " << env->subnet();
  pid_t vm = VmPid(*env, *id);
  EXPECT_TRUE(ProcessAlive(vm)) << "verbose info names VMM pid " << vm;
  EXPECT_TRUE(std::filesystem::exists("/run/netns/" + *id));

  {
    v1::PodSandboxFilter filter;
    filter.set_id(id->substr(0, 10));
    EXPECT_EQ(ListPods(*env, filter).items_size(), 1);
    filter.Clear();
    filter.mutable_state()->set_state(v1::SANDBOX_NOTREADY);
    EXPECT_EQ(ListPods(*env, filter).items_size(), 0);
    filter.Clear();
    (*filter.mutable_label_selector())["pod"] = "lifecycle";
    EXPECT_EQ(ListPods(*env, filter).items_size(), 1);
    (*filter.mutable_label_selector())["pod"] = "other";
    EXPECT_EQ(ListPods(*env, filter).items_size(), 0);
  }

  ASSERT_TRUE(env->StopPod(*id).ok());
  ASSERT_TRUE(env->StopPod(*id).ok()) << "a second StopPodSandbox must succeed";
  status = env->PodStatus(*id);
  ASSERT_TRUE(status.ok()) << status.error().message();
  EXPECT_EQ(status->state(), v1::SANDBOX_NOTREADY);
  EXPECT_FALSE(ProcessAlive(vm)) << "VMM " << vm << " survived StopPodSandbox";
  EXPECT_FALSE(std::filesystem::exists("/run/netns/" + *id));

  ASSERT_TRUE(env->RemovePod(*id).ok());
  ASSERT_TRUE(env->RemovePod(*id).ok()) << "a second RemovePodSandbox must succeed";
  EXPECT_EQ(env->PodStatus(*id).error().code(), base::ErrorCode::kNotFound);
  EXPECT_EQ(NewTraces(clean, env->Traces()), "");
}

// StopPodSandbox terminates what still runs forcibly (CRI): kubelet gave each container its grace through
// StopContainer before, so a container that would take its time over SIGTERM gets SIGKILL, not a second grace.
TEST(PodLifecycle, StopPodSandboxKillsRunningContainersAtOnce) {
  auto env = MakeEnv();
  ASSERT_TRUE(env);
  HostTraces clean = env->Traces();
  // Notes a SIGTERM on the host and keeps running.
  PodWithSharedDir run =
      RunPodWithSharedDir(*env, "forced-stop", "trap 'echo term >> /shared/signals' TERM; while :; do sleep 0.1; done");
  ASSERT_FALSE(run.container.empty());
  pid_t vm = VmPid(*env, run.pod);

  ASSERT_TRUE(env->StopPod(run.pod).ok());
  EXPECT_FALSE(ProcessAlive(vm)) << "VMM " << vm << " survived StopPodSandbox";
  EXPECT_FALSE(std::filesystem::exists(run.shared + "/signals")) << "the container was sent SIGTERM";
  auto status = env->ContainerStatus(run.container);
  ASSERT_TRUE(status.ok()) << status.error().message();
  EXPECT_EQ(status->state(), v1::CONTAINER_EXITED);
  ASSERT_TRUE(env->RemovePod(run.pod).ok());
  EXPECT_EQ(NewTraces(clean, env->Traces()), "");
}

// One pod, several containers: exit codes and reasons, both streams in the CRI log, a line over 16 KiB and the
// output printed right before exit, ExecSync (output, exit code, timeout), StopContainer, RemoveContainer.
TEST(ContainerLifecycle, ExitCodesLogsExecStopRemove) {
  auto env = MakeEnv();
  ASSERT_TRUE(env);
  HostTraces clean = env->Traces();
  v1::PodSandboxConfig pod_config = env->PodConfig("containers");
  auto pod = env->RunPod(pod_config);
  ASSERT_TRUE(pod.ok()) << pod.error().message() << "\n" << env->chrysd().Output();

  auto ok_config = env->ContainerConfig("ok", {"/bin/sh", "-c", "echo hello out; echo hello err >&2; exit 0"});
  auto fail_config = env->ContainerConfig("fail", {"/bin/sh", "-c", "echo failing; exit 3"});
  // 20000 'x' then, with no pause before exit, a last line: both must be in the log when it is reported exited.
  auto long_config = env->ContainerConfig(
      "long", {"/bin/sh", "-c", "head -c 20000 /dev/zero | tr '\\000' x; echo; echo last words before exit"});
  // PID 1 of a container gets no default signal handling: the sleeper traps SIGTERM and says so right before it
  // exits; the stubborn one ignores it and must be killed when the stop timeout ends.
  auto sleeper_config = env->ContainerConfig(
      "sleeper", {"/bin/sh", "-c", "trap 'echo got TERM; exit 42' TERM; while :; do sleep 0.2; done"});
  (*sleeper_config.mutable_labels())["role"] = "sleeper";
  auto stubborn_config = env->ContainerConfig("stubborn", {"sleep", "3600"});

  std::string ok = RunContainer(*env, *pod, pod_config, ok_config);
  std::string fail = RunContainer(*env, *pod, pod_config, fail_config);
  std::string longline = RunContainer(*env, *pod, pod_config, long_config);
  std::string sleeper = RunContainer(*env, *pod, pod_config, sleeper_config);
  std::string stubborn = RunContainer(*env, *pod, pod_config, stubborn_config);
  ASSERT_FALSE(ok.empty() || fail.empty() || longline.empty() || sleeper.empty() || stubborn.empty());

  {
    SCOPED_TRACE("exit 0");
    auto st = env->WaitExited(ok);
    ASSERT_TRUE(st.ok()) << st.error().message();
    EXPECT_EQ(st->exit_code(), 0);
    EXPECT_EQ(st->reason(), "Completed");
    EXPECT_GT(st->started_at(), 0);
    EXPECT_GE(st->finished_at(), st->started_at());
    EXPECT_EQ(st->image().image(), env->image());
    EXPECT_EQ(st->log_path(), env->LogPath(pod_config, ok_config));
    auto lines = ReadCriLog(env->LogPath(pod_config, ok_config));
    ASSERT_TRUE(lines.ok()) << lines.error().message();
    EXPECT_EQ(JoinedLines(*lines, "stdout"), std::vector<std::string>{"hello out"});
    EXPECT_EQ(JoinedLines(*lines, "stderr"), std::vector<std::string>{"hello err"});
    for (const auto& line : *lines) {
      // RFC 3339 with nanoseconds: 2024-01-02T03:04:05.123456789Z or with an offset.
      EXPECT_GE(line.timestamp.size(), 20U) << line.timestamp;
      EXPECT_EQ(line.timestamp[10], 'T') << line.timestamp;
      EXPECT_NE(line.timestamp.find('.'), std::string::npos) << line.timestamp;
    }
  }
  {
    SCOPED_TRACE("exit 3");
    auto st = env->WaitExited(fail);
    ASSERT_TRUE(st.ok()) << st.error().message();
    EXPECT_EQ(st->exit_code(), 3);
    EXPECT_EQ(st->reason(), "Error");
  }
  {
    SCOPED_TRACE("line over 16 KiB and output right before exit");
    auto st = env->WaitExited(longline);
    ASSERT_TRUE(st.ok()) << st.error().message();
    EXPECT_EQ(st->exit_code(), 0);
    // Read only after the exit was reported: the log must already be complete.
    auto lines = ReadCriLog(env->LogPath(pod_config, long_config));
    ASSERT_TRUE(lines.ok()) << lines.error().message();
    auto joined = JoinedLines(*lines, "stdout");
    ASSERT_EQ(joined.size(), 2U) << LogText(env->LogPath(pod_config, long_config)).substr(0, 400);
    EXPECT_EQ(joined[0], std::string(20000, 'x'));
    EXPECT_EQ(joined[1], "last words before exit");
    int partial = 0;
    for (const auto& line : *lines) {
      EXPECT_LE(line.text.size(), 16U * 1024) << "a CRI log line longer than 16 KiB";
      partial += line.tag == "P" ? 1 : 0;
    }
    EXPECT_GE(partial, 1) << "the 20000-byte line was not split with P";
  }
  {
    SCOPED_TRACE("ExecSync");
    ASSERT_TRUE(env->WaitRunning(sleeper).ok());
    v1::ExecSyncResponse resp;
    auto status = ExecSync(*env, sleeper, {"/bin/sh", "-c", "echo exec out; echo exec err >&2; exit 7"}, 30, &resp);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(resp.stdout(), "exec out\n");
    EXPECT_EQ(resp.stderr(), "exec err\n");
    EXPECT_EQ(resp.exit_code(), 7);
    // The hostname the pod asked for is the container's.
    status = ExecSync(*env, sleeper, {"hostname"}, 30, &resp);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(resp.stdout(), "containers\n");

    auto start = Clock::now();
    status = ExecSync(*env, sleeper, {"sleep", "60"}, 2, &resp);
    auto took = Clock::now() - start;
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
    EXPECT_LT(took, std::chrono::seconds(30)) << "the 2 s ExecSync timeout was not honoured";
  }
  {
    SCOPED_TRACE("ListContainers filters");
    v1::ContainerFilter filter;
    filter.set_pod_sandbox_id(*pod);
    EXPECT_EQ(ListContainers(*env, filter).containers_size(), 5);
    filter.Clear();
    filter.mutable_state()->set_state(v1::CONTAINER_RUNNING);
    auto running = ListContainers(*env, filter);
    std::set<std::string> running_ids;
    for (const auto& c : running.containers()) {
      running_ids.insert(c.id());
    }
    EXPECT_EQ(running_ids, (std::set<std::string>{sleeper, stubborn}));
    filter.Clear();
    (*filter.mutable_label_selector())["role"] = "sleeper";
    EXPECT_EQ(ListContainers(*env, filter).containers_size(), 1);
    filter.Clear();
    filter.set_id(ok.substr(0, 12));
    EXPECT_EQ(ListContainers(*env, filter).containers_size(), 1);
  }
  {
    SCOPED_TRACE("StopContainer and RemoveContainer, twice each");
    auto status = StopContainer(*env, sleeper, 30);
    ASSERT_TRUE(status.ok()) << status.error_message();
    auto st = env->ContainerStatus(sleeper);
    ASSERT_TRUE(st.ok()) << st.error().message();
    EXPECT_EQ(st->state(), v1::CONTAINER_EXITED);
    EXPECT_EQ(st->exit_code(), 42) << "the trap's exit code";
    // Its last words, printed as it handled the signal, are in the log once it is reported exited.
    auto lines = ReadCriLog(env->LogPath(pod_config, sleeper_config));
    ASSERT_TRUE(lines.ok()) << lines.error().message();
    EXPECT_EQ(JoinedLines(*lines, "stdout"), std::vector<std::string>{"got TERM"});
    status = StopContainer(*env, sleeper, 10);
    EXPECT_TRUE(status.ok()) << "second StopContainer: " << status.error_message();

    // SIGTERM is ignored by a PID 1 without a handler: SIGKILL must follow when the 2 s timeout ends.
    auto start = Clock::now();
    status = StopContainer(*env, stubborn, 2);
    auto took = Clock::now() - start;
    ASSERT_TRUE(status.ok()) << status.error_message();
    st = env->ContainerStatus(stubborn);
    ASSERT_TRUE(st.ok()) << st.error().message();
    EXPECT_EQ(st->state(), v1::CONTAINER_EXITED);
    EXPECT_EQ(st->exit_code(), 137);
    EXPECT_LT(took, std::chrono::seconds(30)) << "the 2 s stop timeout was not honoured";
    for (const auto& id : {ok, fail, longline, sleeper, stubborn}) {
      status = RemoveContainer(*env, id);
      EXPECT_TRUE(status.ok()) << status.error_message();
      status = RemoveContainer(*env, id);
      EXPECT_TRUE(status.ok()) << "second RemoveContainer: " << status.error_message();
      EXPECT_EQ(env->ContainerStatus(id).error().code(), base::ErrorCode::kNotFound);
    }
    EXPECT_EQ(ListContainers(*env, v1::ContainerFilter()).containers_size(), 0);
  }
  ASSERT_TRUE(env->StopPod(*pod).ok());
  ASSERT_TRUE(env->RemovePod(*pod).ok());
  EXPECT_EQ(NewTraces(clean, env->Traces()), "");
}

// Two containers of one pod share its network namespace (talk over 127.0.0.1), and volumes carry files both ways.
TEST(ContainerLifecycle, LocalhostBetweenContainersAndVolumes) {
  auto env = MakeEnv();
  ASSERT_TRUE(env);
  std::string volume = env->root() + "/volume";
  std::string readonly = env->root() + "/readonly";
  ASSERT_TRUE(base::MakeDirs(volume).ok());
  ASSERT_TRUE(base::MakeDirs(readonly).ok());
  ASSERT_TRUE(base::WriteFileAtomic(volume + "/from-host.txt", "written on the host\n").ok());
  ASSERT_TRUE(base::WriteFileAtomic(readonly + "/config", "read-only config\n").ok());

  v1::PodSandboxConfig pod_config = env->PodConfig("shared");
  auto pod = env->RunPod(pod_config);
  ASSERT_TRUE(pod.ok()) << pod.error().message() << "\n" << env->chrysd().Output();

  auto server_config = env->ContainerConfig("server", {"/bin/sh", "-c", "echo pong-from-server | nc -l -p 8080"});
  auto client_config = env->ContainerConfig(
      "client", {"/bin/sh", "-c",
                 "for i in $(seq 100); do if nc 127.0.0.1 8080 </dev/null; then exit 0; fi; sleep 0.2; done; exit 1"});
  std::string server = RunContainer(*env, *pod, pod_config, server_config);
  ASSERT_FALSE(server.empty());
  std::string client = RunContainer(*env, *pod, pod_config, client_config);
  ASSERT_FALSE(client.empty());
  auto client_status = env->WaitExited(client, std::chrono::seconds(90));
  ASSERT_TRUE(client_status.ok()) << client_status.error().message();
  EXPECT_EQ(client_status->exit_code(), 0) << LogText(env->LogPath(pod_config, client_config));
  EXPECT_TRUE(WaitForLogLine(env->LogPath(pod_config, client_config), "stdout", "pong-from-server"))
      << LogText(env->LogPath(pod_config, client_config));

  auto volume_config = env->ContainerConfig(
      "volumes",
      {"/bin/sh", "-c",
       "cat /data/from-host.txt; echo written in the guest > /data/from-guest.txt; cat /config/config; "
       "if echo x > /config/attempt 2>/dev/null; then echo READONLY-BROKEN; else echo readonly-refused; fi"});
  auto* rw = volume_config.add_mounts();
  rw->set_container_path("/data");
  rw->set_host_path(volume);
  auto* ro = volume_config.add_mounts();
  ro->set_container_path("/config");
  ro->set_host_path(readonly);
  ro->set_readonly(true);
  std::string volumes = RunContainer(*env, *pod, pod_config, volume_config);
  ASSERT_FALSE(volumes.empty());
  auto volume_status = env->WaitExited(volumes, std::chrono::seconds(60));
  ASSERT_TRUE(volume_status.ok()) << volume_status.error().message();
  EXPECT_EQ(volume_status->exit_code(), 0);
  auto lines = ReadCriLog(env->LogPath(pod_config, volume_config));
  ASSERT_TRUE(lines.ok()) << lines.error().message();
  EXPECT_EQ(JoinedLines(*lines, "stdout"),
            (std::vector<std::string>{"written on the host", "read-only config", "readonly-refused"}));
  auto from_guest = base::ReadFile(volume + "/from-guest.txt");
  ASSERT_TRUE(from_guest.ok()) << from_guest.error().message();
  EXPECT_EQ(*from_guest, "written in the guest\n");
  EXPECT_FALSE(std::filesystem::exists(readonly + "/attempt"));
  bool has_mount = false;
  for (const auto& m : volume_status->mounts()) {
    has_mount |= m.container_path() == "/config" && m.host_path() == readonly && m.readonly();
  }
  EXPECT_TRUE(has_mount) << "ContainerStatus does not list the read-only mount";
}

// chrysd crashes, and later stops cleanly, while a pod runs: the pod and its container are still running, listed
// and usable after each restart, on the same VM.
TEST(ChrysdRestart, PodsKeepRunningAndStayUsable) {
  auto env = MakeEnv();
  ASSERT_TRUE(env);
  HostTraces clean = env->Traces();
  v1::PodSandboxConfig pod_config = env->PodConfig("survivor");
  auto pod = env->RunPod(pod_config);
  ASSERT_TRUE(pod.ok()) << pod.error().message() << "\n" << env->chrysd().Output();
  auto config = env->ContainerConfig("ticker", {"/bin/sh", "-c", "echo started; exec sleep 3600"});
  std::string container = RunContainer(*env, *pod, pod_config, config);
  ASSERT_FALSE(container.empty());
  ASSERT_TRUE(env->WaitRunning(container).ok());
  pid_t vm = VmPid(*env, *pod);
  ASSERT_TRUE(ProcessAlive(vm));

  for (bool crash : {true, false}) {
    SCOPED_TRACE(crash ? "after SIGKILL" : "after SIGTERM");
    ASSERT_TRUE(env->Restart(crash).ok()) << env->chrysd().Output();
    EXPECT_TRUE(ProcessAlive(vm)) << "the VM did not outlive chrysd";
    auto pods = ListPods(*env, v1::PodSandboxFilter());
    ASSERT_EQ(pods.items_size(), 1);
    EXPECT_EQ(pods.items(0).id(), *pod);
    EXPECT_EQ(pods.items(0).state(), v1::SANDBOX_READY);
    EXPECT_EQ(VmPid(*env, *pod), vm);
    v1::ContainerFilter filter;
    filter.set_id(container);
    auto containers = ListContainers(*env, filter);
    ASSERT_EQ(containers.containers_size(), 1);
    EXPECT_EQ(containers.containers(0).state(), v1::CONTAINER_RUNNING);
    v1::ExecSyncResponse resp;
    auto status = ExecSync(*env, container, {"echo", "still here"}, 30, &resp);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(resp.stdout(), "still here\n");
    // A new container in the adopted pod works too.
    auto extra_config = env->ContainerConfig(crash ? "after-crash" : "after-stop", {"echo", "new"});
    std::string extra = RunContainer(*env, *pod, pod_config, extra_config);
    ASSERT_FALSE(extra.empty());
    auto st = env->WaitExited(extra);
    ASSERT_TRUE(st.ok()) << st.error().message();
    EXPECT_EQ(st->exit_code(), 0);
  }
  ASSERT_TRUE(env->StopPod(*pod).ok());
  // The adopted VM is not chrysd's child any more; it must still be gone (allow it a moment to exit).
  EXPECT_TRUE(WaitGone(vm, std::chrono::seconds(10))) << "adopted VMM " << vm << " survived StopPodSandbox";
  ASSERT_TRUE(env->RemovePod(*pod).ok());
  EXPECT_EQ(NewTraces(clean, env->Traces()), "");
}

// SIGTERM while an RPC runs: chrysd stops taking new RPCs but lets that one finish and answer before it exits (and
// closes the idle connections, this test's own among them, only after that answer went out).
TEST(ChrysdRestart, SigtermLetsAnRpcInFlightFinish) {
  auto env = MakeEnv();
  ASSERT_TRUE(env);
  HostTraces clean = env->Traces();
  PodWithSharedDir run = RunPodWithSharedDir(*env, "in-flight", "exec sleep 3600");
  ASSERT_FALSE(run.container.empty());
  const std::string& container = run.container;

  // An ExecSync that says on the host when it runs, then takes a while; on a channel of its own, since the restart
  // below drops the environment's.
  auto exec_stub = env->chrysd().RuntimeStub();
  auto exec = std::async(std::launch::async, [&] {
    v1::ExecSyncRequest req;
    req.set_container_id(container);
    for (const char* arg : {"/bin/sh", "-c", "touch /shared/started; sleep 2; echo finished"}) {
      req.add_cmd(arg);
    }
    req.set_timeout(60);
    v1::ExecSyncResponse resp;
    grpc::Status status = exec_stub->ExecSync(Ctx().get(), req, &resp);
    return std::make_pair(status, resp);
  });
  ASSERT_TRUE(WaitForFile(run.shared + "/started")) << "the exec did not start\n" << env->chrysd().Output();
  ASSERT_TRUE(env->Restart(/*crash=*/false).ok()) << env->chrysd().Output();
  ASSERT_EQ(exec.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  auto [status, resp] = exec.get();
  ASSERT_TRUE(status.ok()) << status.error_message() << "\n" << env->chrysd().Output();
  EXPECT_EQ(resp.exit_code(), 0);
  EXPECT_EQ(resp.stdout(), "finished\n");
  EXPECT_NE(env->chrysd().Output().find("in flight: /runtime.v1.RuntimeService/ExecSync"), std::string::npos)
      << env->chrysd().Output();

  ASSERT_TRUE(env->StopPod(run.pod).ok());
  ASSERT_TRUE(env->RemovePod(run.pod).ok());
  EXPECT_EQ(NewTraces(clean, env->Traces()), "");
}

// chrysd's warm pool as Status reports it (verbose info "config" → "warm_pool").
nlohmann::json WarmPool(PodEnv& env) {
  v1::StatusRequest req;
  req.set_verbose(true);
  v1::StatusResponse resp;
  if (!env.runtime().Status(Ctx().get(), req, &resp).ok() || !resp.info().contains("config")) {
    return nlohmann::json::object();
  }
  auto config = nlohmann::json::parse(resp.info().at("config"), nullptr, false);
  return config.is_object() && config.contains("warm_pool") ? config["warm_pool"] : nlohmann::json::object();
}

// Waits (bounded: a warm VM boots in ~5 s under TCG) until every warm VM is booted; the last pool state.
nlohmann::json WaitPoolFull(PodEnv& env, std::chrono::seconds timeout = std::chrono::seconds(180)) {
  auto deadline = Clock::now() + timeout;
  nlohmann::json pool = WarmPool(env);
  while (Clock::now() < deadline) {
    if (pool.value("size", -1) > 0 && pool.value("ready", 0) == pool.value("size", -1) &&
        pool.value("booting", 1) == 0) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    pool = WarmPool(env);
  }
  return pool;
}

// What a TCP server at ip:port sends before closing, retried (bounded) until something answers.
std::string ReadFromTcp(const std::string& ip, int port, std::chrono::seconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (::inet_pton(AF_INET, ip.c_str(), &addr.sin_addr) != 1) {
      return "(bad address " + ip + ")";
    }
    base::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd.valid() && ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      std::string got;
      char buf[512];
      pollfd p{fd.get(), POLLIN, 0};
      while (::poll(&p, 1, 5000) > 0) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n <= 0) {
          break;
        }
        got.append(buf, static_cast<size_t>(n));
      }
      if (!got.empty()) {
        return got;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  return "";
}

// The VMM processes of chrysd whose command line names a warm VM (warm VMs keep their boot-time name).
std::set<pid_t> WarmVmPids(PodEnv& env, const std::set<pid_t>& except = {}) {
  std::set<pid_t> out;
  for (pid_t pid : env.Traces().vmm_pids) {
    auto cmdline = base::ReadFile("/proc/" + std::to_string(pid) + "/cmdline", 1 << 20);
    if (cmdline.ok() && cmdline->find("chrys-warm-") != std::string::npos && except.count(pid) == 0) {
      out.insert(pid);
    }
  }
  return out;
}

// chrysd with a warm pool of one, its VM booted: the env and that VM's pid.
void StartWithOneWarmVm(std::unique_ptr<PodEnv>& env, pid_t& warm_vm) {
  auto created = PodEnv::Create({"--set", "vmm.warm_pool_size=1"});
  ASSERT_TRUE(created.ok()) << created.error().message();
  env = std::move(created).value();
  nlohmann::json pool = WaitPoolFull(*env);
  ASSERT_EQ(pool.value("ready", 0), 1) << pool.dump() << "\n" << env->chrysd().Output();
  std::set<pid_t> warm = WarmVmPids(*env);
  ASSERT_EQ(warm.size(), 1u);
  warm_vm = *warm.begin();
}

// The "vm" part of a pod's verbose PodSandboxStatus info (empty when the call fails).
nlohmann::json PodVmInfo(PodEnv& env, const std::string& pod) {
  v1::PodSandboxStatusRequest req;
  req.set_pod_sandbox_id(pod);
  req.set_verbose(true);
  v1::PodSandboxStatusResponse resp;
  if (!env.runtime().PodSandboxStatus(Ctx().get(), req, &resp).ok() || !resp.info().contains("info")) {
    return nlohmann::json::object();
  }
  auto info = nlohmann::json::parse(resp.info().at("info"), nullptr, false);
  return info.is_object() && info.contains("vm") ? info["vm"] : nlohmann::json::object();
}

// A pod of the default shape takes the booted warm VM: its NIC is hot-plugged (the host reaches a server in the
// pod at the pod's CNI address), the pod's shared directory works (a volume's file reaches that server), the
// hostname is set, and the pool boots a replacement. A crash of chrysd leaves the pod running and the warm VM is
// not adopted; stopping chrysd ends the warm VM.
TEST(WarmPool, APodTakesAWarmVmThatWorksLikeABootedOne) {
  std::unique_ptr<PodEnv> env;
  pid_t warm_vm = 0;
  ASSERT_NO_FATAL_FAILURE(StartWithOneWarmVm(env, warm_vm));

  v1::PodSandboxConfig pod_config = env->PodConfig("warm-claimed");
  auto pod = env->RunPod(pod_config);
  ASSERT_TRUE(pod.ok()) << pod.error().message() << "\n" << env->chrysd().Output();
  EXPECT_EQ(VmPid(*env, *pod), warm_vm) << "the pod did not take the warm VM";
  auto status = env->PodStatus(*pod);
  ASSERT_TRUE(status.ok()) << status.error().message();
  ASSERT_FALSE(status->network().ip().empty());
  nlohmann::json vm = PodVmInfo(*env, *pod);
  EXPECT_EQ(vm["fromWarmPool"], true) << vm.dump();

  std::string volume = env->root() + "/warm-volume";
  ASSERT_TRUE(base::MakeDirs(volume).ok());
  ASSERT_TRUE(base::WriteFileAtomic(volume + "/message", "through-the-warm-pods-share\n").ok());
  auto server_config =
      env->ContainerConfig("server", {"/bin/sh", "-c", "cat /data/message | nc -l -p 8080; exec sleep 3600"});
  auto* mount = server_config.add_mounts();
  mount->set_container_path("/data");
  mount->set_host_path(volume);
  mount->set_readonly(true);
  std::string server = RunContainer(*env, *pod, pod_config, server_config);
  ASSERT_FALSE(server.empty());
  EXPECT_EQ(ReadFromTcp(status->network().ip(), 8080, std::chrono::seconds(90)), "through-the-warm-pods-share\n")
      << "the host could not reach the pod through its hot-plugged NIC\n"
      << LogText(env->LogPath(pod_config, server_config));
  auto hostname_config = env->ContainerConfig("hostname", {"hostname"});
  std::string hostname = RunContainer(*env, *pod, pod_config, hostname_config);
  ASSERT_FALSE(hostname.empty());
  ASSERT_TRUE(env->WaitExited(hostname).ok());
  EXPECT_TRUE(WaitForLogLine(env->LogPath(pod_config, hostname_config), "stdout", "warm-claimed"))
      << LogText(env->LogPath(pod_config, hostname_config));

  // A replacement boots beside the pod.
  nlohmann::json pool = WaitPoolFull(*env);
  EXPECT_EQ(pool.value("ready", 0), 1) << pool.dump();
  EXPECT_EQ(pool.value("claimed", 0), 1) << pool.dump();
  std::set<pid_t> replacement = WarmVmPids(*env, {warm_vm});
  ASSERT_EQ(replacement.size(), 1u);

  // A crash: the pod is adopted, the warm VM is not (the restarted chrysd boots its own).
  ASSERT_TRUE(env->Restart(/*crash=*/true).ok()) << env->chrysd().Output();
  EXPECT_TRUE(WaitGone(*replacement.begin(), std::chrono::seconds(10))) << "a warm VM survived recovery";
  EXPECT_EQ(VmPid(*env, *pod), warm_vm);
  v1::ExecSyncResponse resp;
  auto exec = ExecSync(*env, server, {"cat", "/data/message"}, 30, &resp);
  ASSERT_TRUE(exec.ok()) << exec.error_message();
  EXPECT_EQ(resp.stdout(), "through-the-warm-pods-share\n");
  pool = WaitPoolFull(*env);
  ASSERT_EQ(pool.value("ready", 0), 1) << pool.dump();
  std::set<pid_t> after_crash = WarmVmPids(*env, {warm_vm});
  ASSERT_EQ(after_crash.size(), 1u);

  ASSERT_TRUE(env->StopPod(*pod).ok());
  EXPECT_TRUE(WaitGone(warm_vm, std::chrono::seconds(10))) << "the claimed VM survived StopPodSandbox";
  ASSERT_TRUE(env->RemovePod(*pod).ok());
  HostTraces left = env->Traces();
  EXPECT_TRUE(left.netns.empty());
  EXPECT_EQ(left.vmm_pids, after_crash) << "only the warm VM may run";
  for (const auto& m : left.mounts) {
    EXPECT_NE(m.find("/pods/warm-"), std::string::npos) << "a mount outlived its pod: " << m;
  }
  // Stopping chrysd ends the warm VM and releases its share.
  EXPECT_EQ(env->chrysd().Stop(), 0);
  EXPECT_TRUE(WaitGone(*after_crash.begin(), std::chrono::seconds(10))) << "a warm VM outlived chrysd";
  EXPECT_TRUE(env->Traces().mounts.empty());
}

// A pod with limits above the pool's shape (2 CPUs, 1 GiB) takes the warm VM grown to its size: the guest sees the
// hot-plugged vCPU and memory online, and the pod reports the VM's new shape.
TEST(WarmPool, APodWithLimitsGetsTheWarmVmGrownToItsSize) {
  std::unique_ptr<PodEnv> env;
  pid_t warm_vm = 0;
  ASSERT_NO_FATAL_FAILURE(StartWithOneWarmVm(env, warm_vm));

  v1::PodSandboxConfig pod_config = env->PodConfig("warm-grown");
  auto* resources = pod_config.mutable_linux()->mutable_resources();
  resources->set_cpu_period(100000);
  resources->set_cpu_quota(200000);
  resources->set_memory_limit_in_bytes(1LL << 30);
  auto pod = env->RunPod(pod_config);
  ASSERT_TRUE(pod.ok()) << pod.error().message() << "\n" << env->chrysd().Output();
  EXPECT_EQ(VmPid(*env, *pod), warm_vm) << "the pod did not take the warm VM: " << WarmPool(*env).dump();
  nlohmann::json vm = PodVmInfo(*env, *pod);
  EXPECT_EQ(vm["fromWarmPool"], true) << vm.dump();
  EXPECT_EQ(vm["vcpus"], 2) << vm.dump();
  EXPECT_EQ(vm["memoryMib"], 1024 + 128) << vm.dump();

  auto probe_config = env->ContainerConfig("shape", {"/bin/sh", "-c", "nproc; grep MemTotal /proc/meminfo"});
  std::string probe = RunContainer(*env, *pod, pod_config, probe_config);
  ASSERT_FALSE(probe.empty());
  ASSERT_TRUE(env->WaitExited(probe).ok());
  std::string log = LogText(env->LogPath(pod_config, probe_config));
  EXPECT_NE(log.find(" stdout F 2\n"), std::string::npos) << "two vCPUs online in the guest:\n" << log;
  // The warm VM booted with 256 MiB; grown to 1152 MiB its MemTotal is ~1038 MiB.
  size_t at = log.find("MemTotal:");
  ASSERT_NE(at, std::string::npos) << log;
  long long mem_kib = std::atoll(log.c_str() + at + std::strlen("MemTotal:"));
  EXPECT_GT(mem_kib, 900LL * 1024) << log;
  EXPECT_LT(mem_kib, 1152LL * 1024) << log;

  ASSERT_TRUE(env->StopPod(*pod).ok());
  EXPECT_TRUE(WaitGone(warm_vm, std::chrono::seconds(10))) << "the claimed VM survived StopPodSandbox";
  ASSERT_TRUE(env->RemovePod(*pod).ok());
  EXPECT_EQ(env->chrysd().Stop(), 0);
  EXPECT_TRUE(env->Traces().mounts.empty());
  // The pool's parent cgroup goes with the pool (in the v2 tree and in each v1 controller).
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/sys/fs/cgroup", ec)) {
    EXPECT_FALSE(std::filesystem::exists(entry.path() / "chrysalis-warm", ec)) << entry.path();
  }
  EXPECT_FALSE(std::filesystem::exists("/sys/fs/cgroup/chrysalis-warm", ec));
}

// With the VM template (the default), the warm VM and a VM restored on the spot for a second pod are clones of one
// saved VM: each must run on the host's clock and draw its own random stream (a clone that skipped Resume would print
// the template's bytes, the same in both pods).
TEST(WarmPool, TemplateClonesHaveTheHostsClockAndTheirOwnRandomness) {
  std::unique_ptr<PodEnv> env;
  pid_t warm_vm = 0;
  ASSERT_NO_FATAL_FAILURE(StartWithOneWarmVm(env, warm_vm));
  nlohmann::json pool = WarmPool(*env);
  ASSERT_EQ(pool.value("template", ""), "ready") << pool.dump() << "\n" << env->chrysd().Output();
  // The template's RAM, its zero pages dropped: something, and less than the 256 MiB it booted with.
  EXPECT_GT(pool.value("template_memory_bytes", uint64_t{0}), 0u) << pool.dump();
  EXPECT_LT(pool.value("template_memory_bytes", uint64_t{0}), uint64_t{256} << 20) << pool.dump();

  std::vector<std::string> pods;
  std::vector<std::string> lines;  // "<guest unix time> <16 random bytes in hex>" per pod
  for (const char* name : {"clone-a", "clone-b"}) {
    v1::PodSandboxConfig pod_config = env->PodConfig(name);
    auto started = Clock::now();
    auto pod = env->RunPod(pod_config);
    ASSERT_TRUE(pod.ok()) << pod.error().message() << "\n" << env->chrysd().Output();
    pods.push_back(*pod);
    EXPECT_EQ(PodVmInfo(*env, *pod)["fromWarmPool"], true);
    auto probe_config = env->ContainerConfig(
        "probe", {"/bin/sh", "-c", "echo \"$(date +%s) $(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n')\""});
    std::string probe = RunContainer(*env, *pod, pod_config, probe_config);
    ASSERT_FALSE(probe.empty());
    ASSERT_TRUE(env->WaitExited(probe).ok());
    std::string log = LogText(env->LogPath(pod_config, probe_config));
    size_t at = log.find(" stdout F ");
    ASSERT_NE(at, std::string::npos) << log;
    std::string line = log.substr(at + 10, log.find('\n', at) - at - 10);
    long long guest_time = std::atoll(line.c_str());
    long long host_before = std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::system_clock::now().time_since_epoch() - (Clock::now() - started))
                                .count();
    long long host_after =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    EXPECT_GE(guest_time, host_before - 1) << "the clone kept the template's clock: " << line;
    EXPECT_LE(guest_time, host_after + 1) << line;
    lines.push_back(line.substr(line.find(' ') + 1));
    EXPECT_EQ(lines.back().size(), 32u) << line;
  }
  EXPECT_NE(lines[0], lines[1]) << "two clones drew the same random bytes";
  pool = WarmPool(*env);
  EXPECT_EQ(pool.value("claimed", 0), 2) << pool.dump();
  EXPECT_EQ(pool.value("last_error", "?"), "") << pool.dump();

  for (const auto& pod : pods) {
    ASSERT_TRUE(env->StopPod(pod).ok());
    ASSERT_TRUE(env->RemovePod(pod).ok());
  }
  EXPECT_EQ(env->chrysd().Stop(), 0);
  EXPECT_TRUE(env->Traces().mounts.empty());
  EXPECT_TRUE(env->Traces().vmm_pids.empty()) << "a VM outlived chrysd";
}

// Ten pods started at once, each running a container: all ready with distinct addresses, all logs right, all gone
// after a concurrent stop and remove.
TEST(PodScale, TenPodsAtOnce) {
  constexpr int kPods = 10;
  auto env = MakeEnv();
  ASSERT_TRUE(env);
  HostTraces clean = env->Traces();
  std::vector<v1::PodSandboxConfig> configs;
  for (int i = 0; i < kPods; ++i) {
    configs.push_back(env->PodConfig("many-" + std::to_string(i)));
    ASSERT_TRUE(base::MakeDirs(configs.back().log_directory()).ok());
  }
  // RunPod touches the env's id set; each thread calls the stub directly and the ids are recorded afterwards.
  std::vector<std::future<base::Result<std::string>>> runs;
  for (int i = 0; i < kPods; ++i) {
    runs.push_back(std::async(std::launch::async, [&env, &configs, i]() -> base::Result<std::string> {
      v1::RunPodSandboxRequest req;
      *req.mutable_config() = configs[i];
      v1::RunPodSandboxResponse resp;
      auto status = env->runtime().RunPodSandbox(Ctx(std::chrono::seconds(600)).get(), req, &resp);
      if (!status.ok()) {
        return cri::CriClient::CallError("RunPodSandbox " + configs[i].metadata().name(), status);
      }
      return resp.pod_sandbox_id();
    }));
  }
  std::vector<std::string> ids;
  for (auto& run : runs) {
    auto id = run.get();
    EXPECT_TRUE(id.ok()) << id.error().message();
    if (id.ok()) {
      ids.push_back(*id);
    }
  }
  ASSERT_EQ(static_cast<int>(ids.size()), kPods) << env->chrysd().Output().substr(0, 20000);

  std::set<std::string> ips;
  for (const auto& id : ids) {
    auto st = env->PodStatus(id);
    ASSERT_TRUE(st.ok()) << st.error().message();
    EXPECT_EQ(st->state(), v1::SANDBOX_READY);
    ips.insert(st->network().ip());
  }
  EXPECT_EQ(static_cast<int>(ips.size()), kPods) << "pods share addresses";

  std::vector<std::string> containers(kPods);
  std::vector<v1::ContainerConfig> container_configs;
  for (int i = 0; i < kPods; ++i) {
    container_configs.push_back(env->ContainerConfig("echo", {"echo", "pod " + std::to_string(i)}));
    containers[i] = RunContainer(*env, ids[i], configs[i], container_configs[i]);
  }
  for (int i = 0; i < kPods; ++i) {
    if (containers[i].empty()) {
      continue;
    }
    auto st = env->WaitExited(containers[i], std::chrono::seconds(120));
    ASSERT_TRUE(st.ok()) << st.error().message();
    EXPECT_EQ(st->exit_code(), 0);
    auto lines = ReadCriLog(env->LogPath(configs[i], container_configs[i]));
    ASSERT_TRUE(lines.ok()) << lines.error().message();
    EXPECT_EQ(JoinedLines(*lines, "stdout"), std::vector<std::string>{"pod " + std::to_string(i)});
  }

  std::vector<std::future<std::string>> removals;
  for (const auto& id : ids) {
    removals.push_back(std::async(std::launch::async, [&env, id]() -> std::string {
      v1::StopPodSandboxRequest stop;
      stop.set_pod_sandbox_id(id);
      v1::StopPodSandboxResponse stopped;
      auto status = env->runtime().StopPodSandbox(Ctx().get(), stop, &stopped);
      if (!status.ok()) {
        return "stop " + id + ": " + status.error_message();
      }
      v1::RemovePodSandboxRequest remove;
      remove.set_pod_sandbox_id(id);
      v1::RemovePodSandboxResponse removed;
      status = env->runtime().RemovePodSandbox(Ctx().get(), remove, &removed);
      return status.ok() ? "" : "remove " + id + ": " + status.error_message();
    }));
  }
  for (auto& removal : removals) {
    EXPECT_EQ(removal.get(), "");
  }
  EXPECT_EQ(ListPods(*env, v1::PodSandboxFilter()).items_size(), 0);
  EXPECT_EQ(NewTraces(clean, env->Traces()), "");
}

}  // namespace
}  // namespace chrys::e2e
