// chrysctl's pod and container commands against a real chrysd, and the quick-start demo image (reproducible build,
// `chrysctl run` printing what the container printed inside its VM).
#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "e2e/fixtures/temp_dir.h"
#include "e2e/pods/pod_env.h"

namespace chrys::e2e {
namespace {

std::unique_ptr<PodEnv> MakeEnv() {
  auto env = PodEnv::Create();
  if (!env.ok()) {
    ADD_FAILURE() << "pod test environment: " << env.error().message();
    return nullptr;
  }
  return std::move(env).value();
}

base::CommandResult Chrysctl(PodEnv& env, std::vector<std::string> args,
                             std::chrono::seconds timeout = std::chrono::seconds(300)) {
  base::CommandSpec spec;
  spec.argv = {CHRYSCTL_BINARY, "--socket", env.chrysd().socket()};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  spec.timeout = timeout;
  auto result = base::RunCommand(spec);
  if (!result.ok()) {
    ADD_FAILURE() << "chrysctl " << args[0] << ": " << result.error().message();
    return {};
  }
  return *result;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) {
    s.pop_back();
  }
  return s;
}

TEST(Chrysctl, PodAndContainerCommands) {
  auto env = MakeEnv();
  ASSERT_TRUE(env);
  HostTraces clean = env->Traces();
  std::string dir = env->root() + "/ctl";
  ASSERT_TRUE(base::MakeDirs(dir).ok());
  // The pod config in YAML, the container config in JSON: crictl accepts both.
  ASSERT_TRUE(base::WriteFileAtomic(dir + "/pod.yaml",
                                    "metadata:\n  name: ctl-pod\n  namespace: e2e\n  uid: ctl-uid-1\n"
                                    "hostname: ctl-host\nlog_directory: " +
                                        dir + "/logs\nlabels:\n  app: ctl\n")
                  .ok());
  ASSERT_TRUE(base::WriteFileAtomic(dir + "/sleeper.json",
                                    R"({"metadata": {"name": "sleeper"}, "image": {"image": ")" + env->image() +
                                        R"("}, "command": ["/bin/sh", "-c", "echo hello from ctl; exec sleep 3600"],)"
                                        R"( "log_path": "sleeper.log"})")
                  .ok());

  auto runp = Chrysctl(*env, {"runp", dir + "/pod.yaml"});
  ASSERT_EQ(runp.exit_code, 0) << runp.stderr_data;
  std::string pod = Trim(runp.stdout_data);
  ASSERT_EQ(pod.size(), 64U) << runp.stdout_data;
  EXPECT_TRUE(std::filesystem::is_directory(dir + "/logs")) << "runp creates the log directory, as kubelet does";

  auto create = Chrysctl(*env, {"create", "--no-pull", pod, dir + "/sleeper.json", dir + "/pod.yaml"});
  ASSERT_EQ(create.exit_code, 0) << create.stderr_data;
  std::string container = Trim(create.stdout_data);
  ASSERT_EQ(container.size(), 64U) << create.stdout_data;
  auto start = Chrysctl(*env, {"start", container});
  ASSERT_EQ(start.exit_code, 0) << start.stderr_data;
  ASSERT_TRUE(env->WaitRunning(container).ok());

  auto pods = Chrysctl(*env, {"pods", "--label", "app=ctl"});
  ASSERT_EQ(pods.exit_code, 0) << pods.stderr_data;
  EXPECT_NE(pods.stdout_data.find(pod.substr(0, 13)), std::string::npos) << pods.stdout_data;
  EXPECT_NE(pods.stdout_data.find("Ready"), std::string::npos) << pods.stdout_data;
  auto quiet = Chrysctl(*env, {"pods", "-q", "--label", "app=other"});
  EXPECT_EQ(quiet.stdout_data, "");

  auto ps = Chrysctl(*env, {"containers", "--pod", pod});
  ASSERT_EQ(ps.exit_code, 0) << ps.stderr_data;
  EXPECT_NE(ps.stdout_data.find("sleeper"), std::string::npos) << ps.stdout_data;
  EXPECT_NE(ps.stdout_data.find("Running"), std::string::npos) << ps.stdout_data;

  auto exec = Chrysctl(*env, {"exec", container, "/bin/sh", "-c", "echo out; echo err >&2; exit 5"});
  EXPECT_EQ(exec.exit_code, 5);
  EXPECT_EQ(exec.stdout_data, "out\n");
  EXPECT_EQ(exec.stderr_data, "err\n");
  auto hostname = Chrysctl(*env, {"exec", container, "hostname"});
  EXPECT_EQ(hostname.stdout_data, "ctl-host\n");

  auto logs = Chrysctl(*env, {"logs", container});
  ASSERT_EQ(logs.exit_code, 0) << logs.stderr_data;
  EXPECT_EQ(logs.stdout_data, "hello from ctl\n");

  auto inspect = Chrysctl(*env, {"inspect", container});
  ASSERT_EQ(inspect.exit_code, 0) << inspect.stderr_data;
  auto status = nlohmann::json::parse(inspect.stdout_data, nullptr, false);
  ASSERT_TRUE(status.is_object()) << inspect.stdout_data;
  EXPECT_EQ(status["status"]["state"], "CONTAINER_RUNNING");
  auto inspectp = Chrysctl(*env, {"inspectp", pod});
  ASSERT_EQ(inspectp.exit_code, 0) << inspectp.stderr_data;
  auto pod_status = nlohmann::json::parse(inspectp.stdout_data, nullptr, false);
  ASSERT_TRUE(pod_status.is_object()) << inspectp.stdout_data;
  EXPECT_EQ(pod_status["status"]["state"], "SANDBOX_READY");

  // Operator view: the pod with its VM (handler, VMM, pid, vCPUs, memory, uptime).
  auto vms = Chrysctl(*env, {"ps", "--json"});
  ASSERT_EQ(vms.exit_code, 0) << vms.stderr_data;
  auto rows = nlohmann::json::parse(vms.stdout_data, nullptr, false);
  ASSERT_TRUE(rows.is_array() && rows.size() == 1) << vms.stdout_data;
  EXPECT_EQ(rows[0]["id"], pod);
  EXPECT_EQ(rows[0]["handler"], "chrysalis");
  EXPECT_EQ(rows[0]["vmm"], "qemu");
  EXPECT_GT(rows[0]["pid"].get<int>(), 0);
  EXPECT_GE(rows[0]["vcpus"].get<int>(), 1);
  EXPECT_GE(rows[0]["memoryMib"].get<int>(), 64);
  EXPECT_GE(rows[0]["uptimeSeconds"].get<int64_t>(), 0);
  auto table = Chrysctl(*env, {"ps"});
  ASSERT_EQ(table.exit_code, 0) << table.stderr_data;
  EXPECT_NE(table.stdout_data.find(pod.substr(0, 13)), std::string::npos) << table.stdout_data;
  EXPECT_NE(table.stdout_data.find("qemu"), std::string::npos) << table.stdout_data;
  auto inspect_pod = Chrysctl(*env, {"inspect", pod});
  ASSERT_EQ(inspect_pod.exit_code, 0) << inspect_pod.stderr_data;
  EXPECT_NE(inspect_pod.stdout_data.find("consoleSocket"), std::string::npos) << inspect_pod.stdout_data;

  // debug: the running command line, shell-quoted, the tap queue fds explained and replaced.
  auto debug = Chrysctl(*env, {"debug", "ctl-pod"});
  ASSERT_EQ(debug.exit_code, 0) << debug.stderr_data;
  EXPECT_NE(debug.stdout_data.find("qemu-system-x86_64"), std::string::npos) << debug.stdout_data;
  EXPECT_NE(debug.stdout_data.find("-kernel"), std::string::npos) << debug.stdout_data;
  EXPECT_NE(debug.stdout_data.find("a queue of tap"), std::string::npos) << debug.stdout_data;
  EXPECT_NE(debug.stdout_data.find("ifname="), std::string::npos) << debug.stdout_data;

  // console: attached while a second container starts, the agent's log line about it arrives live; the session
  // ends on its own after --timeout seconds of silence.
  auto console = std::async(std::launch::async, [&] {
    return Chrysctl(*env, {"console", "--timeout", "8", pod}, std::chrono::seconds(120));
  });
  std::this_thread::sleep_for(std::chrono::seconds(2));
  ASSERT_TRUE(base::WriteFileAtomic(dir + "/echo.json",
                                    R"({"metadata": {"name": "echoer"}, "image": {"image": ")" + env->image() +
                                        R"("}, "command": ["/bin/sh", "-c", "echo hi"], "log_path": "echo.log"})")
                  .ok());
  auto second = Chrysctl(*env, {"create", "--no-pull", pod, dir + "/echo.json", dir + "/pod.yaml"});
  ASSERT_EQ(second.exit_code, 0) << second.stderr_data;
  std::string second_id = Trim(second.stdout_data);
  auto attached = console.get();
  EXPECT_EQ(attached.exit_code, 0) << attached.stderr_data;
  EXPECT_NE(attached.stdout_data.find("container " + second_id + " created"), std::string::npos)
      << attached.stdout_data;
  EXPECT_NE(attached.stderr_data.find("Escape: Ctrl-] then q"), std::string::npos) << attached.stderr_data;
  EXPECT_EQ(Chrysctl(*env, {"rm", second_id}).exit_code, 0);

  // gc: a VM directory no pod owns is listed by the dry run and stays; --force removes it; the running pod's
  // things are never listed.
  std::string orphan = env->chrysd().state_dir() + "/sandboxes/" + std::string(64, 'a');
  ASSERT_TRUE(base::MakeDirs(orphan).ok());
  ASSERT_TRUE(base::WriteFileAtomic(orphan + "/console.log", "old boot\n").ok());
  auto dry = Chrysctl(*env, {"gc"});
  ASSERT_EQ(dry.exit_code, 0) << dry.stderr_data;
  EXPECT_NE(dry.stdout_data.find("would remove vm-dir      " + orphan), std::string::npos) << dry.stdout_data;
  EXPECT_EQ(dry.stdout_data.find(pod), std::string::npos) << "the live pod is not garbage: " << dry.stdout_data;
  EXPECT_TRUE(std::filesystem::exists(orphan)) << "a dry run removes nothing";
  auto force = Chrysctl(*env, {"gc", "--force", "--json"});
  ASSERT_EQ(force.exit_code, 0) << force.stderr_data;
  auto collected = nlohmann::json::parse(force.stdout_data, nullptr, false);
  ASSERT_TRUE(collected.is_object()) << force.stdout_data;
  bool removed = false;
  for (const auto& item : collected["items"]) {
    removed = removed || (item["name"] == orphan && item["removed"] == true);
  }
  EXPECT_TRUE(removed) << force.stdout_data;
  EXPECT_FALSE(std::filesystem::exists(orphan));

  auto stop = Chrysctl(*env, {"stop", "-t", "2", container});
  ASSERT_EQ(stop.exit_code, 0) << stop.stderr_data;
  auto exited = Chrysctl(*env, {"containers", "-a", "--state", "exited", "-q"});
  EXPECT_EQ(Trim(exited.stdout_data), container);
  EXPECT_EQ(Chrysctl(*env, {"rm", container}).exit_code, 0);
  EXPECT_EQ(Chrysctl(*env, {"stopp", pod}).exit_code, 0);
  EXPECT_EQ(Chrysctl(*env, {"rmp", pod}).exit_code, 0);
  auto none = Chrysctl(*env, {"pods", "-q"});
  EXPECT_EQ(none.stdout_data, "");

  // Errors name what is wrong and exit non-zero.
  auto bad = Chrysctl(*env, {"runp", dir + "/sleeper.json"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.stderr_data.find("PodSandboxConfig"), std::string::npos) << bad.stderr_data;
  auto missing = Chrysctl(*env, {"inspect", std::string(64, 'e')});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.stderr_data.find("ContainerStatus"), std::string::npos) << missing.stderr_data;
  EXPECT_NE(missing.stderr_data.find(std::string(12, 'e')), std::string::npos) << missing.stderr_data;
  EXPECT_EQ(NewTraces(clean, env->Traces()), "");
}

TEST(DemoImage, BuildIsReproducible) {
  TempDir dir("chrys-demo");
  std::string digests[2];
  for (int i = 0; i < 2; ++i) {
    base::CommandSpec spec;
    spec.argv = {DEMO_IMAGE_SCRIPT, dir.path() + "/layout-" + std::to_string(i)};
    auto result = base::RunCommand(spec);
    ASSERT_TRUE(result.ok()) << result.error().message();
    ASSERT_TRUE(result->success()) << result->stderr_data;
    digests[i] = Trim(result->stdout_data);
  }
  EXPECT_EQ(digests[0].rfind("sha256:", 0), 0U) << digests[0];
  EXPECT_EQ(digests[0], digests[1]);
  EXPECT_EQ(DiffSnapshots(SnapshotTree(dir.path() + "/layout-0"), SnapshotTree(dir.path() + "/layout-1")), "");
}

// The quick start's core: `chrysctl run` with the demo image prints the container's output from inside the VM and
// leaves nothing behind.
TEST(Chrysctl, RunDemoImagePrintsOutputAndCleansUp) {
  auto env = MakeEnv();
  ASSERT_TRUE(env);
  HostTraces clean = env->Traces();
  std::string dir = env->root() + "/demo";
  base::CommandSpec build;
  build.argv = {DEMO_IMAGE_SCRIPT, dir + "/layout", "localhost/chrysalis/demo:e2e"};
  auto built = base::RunCommand(build);
  ASSERT_TRUE(built.ok() && built->success()) << (built.ok() ? built->stderr_data : built.error().message());
  auto imported = Chrysctl(*env, {"import", "--name", "localhost/chrysalis/demo:e2e", dir + "/layout"});
  ASSERT_EQ(imported.exit_code, 0) << imported.stderr_data;

  ASSERT_TRUE(base::WriteFileAtomic(dir + "/pod.json",
                                    R"({"metadata": {"name": "demo", "namespace": "e2e", "uid": "demo-uid"},)"
                                    R"( "hostname": "demo-host"})")
                  .ok());
  ASSERT_TRUE(base::WriteFileAtomic(dir + "/container.json", R"({"metadata": {"name": "hello"},)"
                                                             R"( "image": {"image": "localhost/chrysalis/demo:e2e"}})")
                  .ok());
  auto run = Chrysctl(*env, {"run", "--no-pull", "--timeout", "300", dir + "/container.json", dir + "/pod.json"});
  EXPECT_EQ(run.exit_code, 0) << run.stderr_data;
  EXPECT_NE(run.stdout_data.find("hello from a Chrysalis pod VM"), std::string::npos) << run.stdout_data;
  EXPECT_NE(run.stdout_data.find("kernel:   Linux version"), std::string::npos) << run.stdout_data;
  EXPECT_NE(run.stdout_data.find("machine:  QEMU"), std::string::npos) << run.stdout_data;
  EXPECT_NE(run.stdout_data.find("hostname: demo-host"), std::string::npos) << run.stdout_data;
  EXPECT_NE(run.stderr_data.find("exited with code 0"), std::string::npos) << run.stderr_data;
  auto left = Chrysctl(*env, {"pods", "-q"});
  EXPECT_EQ(left.stdout_data, "") << "chrysctl run left its pod";

  // A failing container: its exit code becomes chrysctl's, and the pod is still cleaned up.
  ASSERT_TRUE(base::WriteFileAtomic(dir + "/failing.json",
                                    R"({"metadata": {"name": "failing"},)"
                                    R"( "image": {"image": "localhost/chrysalis/demo:e2e"},)"
                                    R"( "command": ["/bin/sh", "-c", "echo about to fail >&2; exit 9"]})")
                  .ok());
  auto failing = Chrysctl(*env, {"run", "--no-pull", dir + "/failing.json", dir + "/pod.json"});
  EXPECT_EQ(failing.exit_code, 9) << failing.stderr_data;
  EXPECT_NE(failing.stderr_data.find("about to fail"), std::string::npos) << failing.stderr_data;
  EXPECT_EQ(Chrysctl(*env, {"pods", "-q"}).stdout_data, "");
  EXPECT_EQ(NewTraces(clean, env->Traces()), "");
}

}  // namespace
}  // namespace chrys::e2e
