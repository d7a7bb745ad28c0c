// Container features of a real chrysd through its CRI socket, in one pod to keep VM boots down:
// UpdateContainerResources on a running container (read back from inside through ExecSync), users by name
// (run_as_username, the image's USER) resolved in the container's /etc/passwd and /etc/group, and seccomp
// (RuntimeDefault refuses a new user namespace, Unconfined does not, Localhost profiles from the node),
// capabilities as Kubernetes adds and drops them, and an exec that inherits the container's process.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <thread>

#include "base/capabilities.h"
#include "base/file_util.h"
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

grpc::Status ExecSync(PodEnv& env, const std::string& id, const std::vector<std::string>& cmd,
                      v1::ExecSyncResponse* resp) {
  v1::ExecSyncRequest req;
  req.set_container_id(id);
  for (const auto& c : cmd) {
    req.add_cmd(c);
  }
  req.set_timeout(30);
  return env.runtime().ExecSync(Ctx().get(), req, resp);
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) {
    s.pop_back();
  }
  return s;
}

// The stdout of a command in the container, trimmed; the failure text when it fails.
std::string ExecOut(PodEnv& env, const std::string& id, const std::vector<std::string>& cmd) {
  v1::ExecSyncResponse resp;
  auto status = ExecSync(env, id, cmd, &resp);
  if (!status.ok()) {
    return "(exec failed: " + status.error_message() + ")";
  }
  return Trim(resp.stdout());
}

grpc::Status Update(PodEnv& env, const std::string& id, const v1::LinuxContainerResources& resources) {
  v1::UpdateContainerResourcesRequest req;
  req.set_container_id(id);
  *req.mutable_linux() = resources;
  v1::UpdateContainerResourcesResponse resp;
  return env.runtime().UpdateContainerResources(Ctx().get(), req, &resp);
}

grpc::Status RemoveContainer(PodEnv& env, const std::string& id) {
  v1::RemoveContainerRequest req;
  req.set_container_id(id);
  v1::RemoveContainerResponse resp;
  return env.runtime().RemoveContainer(Ctx().get(), req, &resp);
}

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

// Runs a container to its exit and returns its stdout+stderr lines (empty after a recorded failure).
std::vector<std::string> RunToExit(PodEnv& env, const std::string& pod_id, const v1::PodSandboxConfig& pod_config,
                                   const v1::ContainerConfig& config, int* exit_code = nullptr) {
  std::string id = RunContainer(env, pod_id, pod_config, config);
  if (id.empty()) {
    return {};
  }
  auto st = env.WaitExited(id);
  if (!st.ok()) {
    ADD_FAILURE() << config.metadata().name() << ": " << st.error().message();
    return {};
  }
  if (exit_code != nullptr) {
    *exit_code = st->exit_code();
  }
  auto lines = ReadCriLog(env.LogPath(pod_config, config));
  EXPECT_TRUE(lines.ok());
  std::vector<std::string> out;
  if (lines.ok()) {
    for (const auto& stream : {"stdout", "stderr"}) {
      auto joined = JoinedLines(*lines, stream);
      out.insert(out.end(), joined.begin(), joined.end());
    }
  }
  // Frees its scratch disk slot for the next container of the pod.
  EXPECT_TRUE(RemoveContainer(env, id).ok());
  return out;
}

bool HasLine(const std::vector<std::string>& lines, const std::string& wanted) {
  return std::find(lines.begin(), lines.end(), wanted) != lines.end();
}

std::string Joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) {
    out += l + "\n";
  }
  return out;
}

// /proc/<pid>/status's capability mask (16 hex digits) of a set of names: bit n is capability n, the kernel's
// order, which base::KnownCapabilities follows.
std::string CapMask(const std::vector<std::string>& names) {
  const auto& known = base::KnownCapabilities();
  uint64_t mask = 0;
  for (const auto& name : names) {
    auto it = std::find(known.begin(), known.end(), name);
    EXPECT_NE(it, known.end()) << name;
    mask |= uint64_t{1} << (it - known.begin());
  }
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(mask));
  return text;
}

v1::ListContainersResponse ListContainers(PodEnv& env) {
  v1::ListContainersResponse resp;
  EXPECT_TRUE(env.runtime().ListContainers(Ctx().get(), v1::ListContainersRequest(), &resp).ok());
  return resp;
}

TEST(ContainerFeatures, ResourcesUsersAndSeccomp) {
  auto env = MakeEnv();
  ASSERT_TRUE(env);
  v1::PodSandboxConfig pod_config = env->PodConfig("features");
  auto pod = env->RunPod(pod_config);
  ASSERT_TRUE(pod.ok()) << pod.error().message() << "\n" << env->chrysd().Output();

  {
    SCOPED_TRACE("UpdateContainerResources");
    auto config = env->ContainerConfig("resources", {"sleep", "3600"});
    config.mutable_linux()->mutable_resources()->set_memory_limit_in_bytes(128 << 20);
    std::string id = RunContainer(*env, *pod, pod_config, config);
    ASSERT_FALSE(id.empty());
    ASSERT_TRUE(env->WaitRunning(id).ok());
    EXPECT_EQ(ExecOut(*env, id, {"cat", "/sys/fs/cgroup/memory.max"}), std::to_string(128 << 20));

    v1::LinuxContainerResources update;
    update.set_memory_limit_in_bytes(96 << 20);
    update.set_cpu_quota(50000);
    update.set_cpu_period(100000);
    auto status = Update(*env, id, update);
    ASSERT_TRUE(status.ok()) << status.error_message();
    // Read from inside the container: its own cgroup, through the cgroup namespace.
    EXPECT_EQ(ExecOut(*env, id, {"cat", "/sys/fs/cgroup/memory.max"}), std::to_string(96 << 20));
    EXPECT_EQ(ExecOut(*env, id, {"cat", "/sys/fs/cgroup/cpu.max"}), "50000 100000");
    auto st = env->ContainerStatus(id);
    ASSERT_TRUE(st.ok()) << st.error().message();
    EXPECT_EQ(st->resources().linux().memory_limit_in_bytes(), 96 << 20);
    EXPECT_EQ(st->resources().linux().cpu_quota(), 50000);

    v1::LinuxContainerResources negative;
    negative.set_memory_limit_in_bytes(-1);
    status = Update(*env, id, negative);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_NE(status.error_message().find("memory_limit_in_bytes"), std::string::npos) << status.error_message();
    EXPECT_EQ(ExecOut(*env, id, {"cat", "/sys/fs/cgroup/memory.max"}), std::to_string(96 << 20));

    status = Update(*env, std::string(64, 'f'), update);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << status.error_message();

    v1::StopContainerRequest stop;
    stop.set_container_id(id);
    stop.set_timeout(0);
    v1::StopContainerResponse stopped;
    ASSERT_TRUE(env->runtime().StopContainer(Ctx().get(), stop, &stopped).ok());
    status = Update(*env, id, update);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
    EXPECT_TRUE(RemoveContainer(*env, id).ok());
  }

  const std::vector<std::string> show_ids = {"/bin/sh", "-c", "grep -E '^(Uid|Gid|Groups):' /proc/self/status"};
  {
    SCOPED_TRACE("run_as_username with supplemental groups");
    auto config = env->ContainerConfig("by-name", show_ids);
    auto* sc = config.mutable_linux()->mutable_security_context();
    sc->set_run_as_username("app");
    sc->add_supplemental_groups(4000);
    auto lines = RunToExit(*env, *pod, pod_config, config);
    EXPECT_TRUE(HasLine(lines, "Uid:\t1000\t1000\t1000\t1000")) << Joined(lines);
    EXPECT_TRUE(HasLine(lines, "Gid:\t1000\t1000\t1000\t1000")) << Joined(lines);
    EXPECT_TRUE(HasLine(lines, "Groups:\t50 4000 ")) << Joined(lines);  // staff from /etc/group, then ours
  }
  {
    SCOPED_TRACE("exec runs as the container's user");
    auto config = env->ContainerConfig("exec-user", {"sleep", "3600"});
    config.mutable_linux()->mutable_security_context()->mutable_run_as_user()->set_value(1000);
    config.mutable_linux()->mutable_security_context()->mutable_run_as_group()->set_value(1001);
    auto id = env->CreateContainer(*pod, config, pod_config);
    ASSERT_TRUE(id.ok()) << id.error().message();
    ASSERT_TRUE(env->StartContainer(*id).ok());
    ASSERT_TRUE(env->WaitRunning(*id).ok());
    EXPECT_EQ(ExecOut(*env, *id, {"/bin/sh", "-c", "echo $(id -u):$(id -g)"}), "1000:1001");
    v1::StopContainerRequest stop;
    stop.set_container_id(*id);
    v1::StopContainerResponse stopped;
    EXPECT_TRUE(env->runtime().StopContainer(Ctx().get(), stop, &stopped).ok());
  }
  {
    SCOPED_TRACE("image USER app:staff");
    auto config = env->ContainerConfig("image-user", show_ids);
    config.mutable_image()->set_image(env->app_user_image());
    auto lines = RunToExit(*env, *pod, pod_config, config);
    EXPECT_TRUE(HasLine(lines, "Uid:\t1000\t1000\t1000\t1000")) << Joined(lines);
    EXPECT_TRUE(HasLine(lines, "Gid:\t50\t50\t50\t50")) << Joined(lines);
  }
  {
    SCOPED_TRACE("a user that is not in the image");
    auto config = env->ContainerConfig("ghost", show_ids);
    config.mutable_linux()->mutable_security_context()->set_run_as_username("ghost");
    size_t before = ListContainers(*env).containers_size();
    auto id = env->CreateContainer(*pod, config, pod_config);
    ASSERT_FALSE(id.ok());
    EXPECT_NE(id.error().message().find("'ghost'"), std::string::npos) << id.error().message();
    EXPECT_EQ(ListContainers(*env).containers_size(), before);  // nothing left behind
  }

  const std::vector<std::string> try_userns = {"/bin/sh", "-c", "unshare -U true; echo rc=$?"};
  {
    SCOPED_TRACE("seccomp RuntimeDefault");
    auto config = env->ContainerConfig("seccomp-default", try_userns);
    config.mutable_linux()->mutable_security_context()->mutable_seccomp()->set_profile_type(
        v1::SecurityProfile::RuntimeDefault);
    auto lines = RunToExit(*env, *pod, pod_config, config);
    EXPECT_TRUE(HasLine(lines, "rc=1")) << Joined(lines);
    EXPECT_NE(Joined(lines).find("Operation not permitted"), std::string::npos) << Joined(lines);
  }
  {
    SCOPED_TRACE("seccomp from the pod: Unconfined");
    // The pod says RuntimeDefault, the container Unconfined: the container wins.
    auto config = env->ContainerConfig("seccomp-unconfined", try_userns);
    config.mutable_linux()->mutable_security_context()->mutable_seccomp()->set_profile_type(
        v1::SecurityProfile::Unconfined);
    v1::PodSandboxConfig strict_pod = pod_config;
    strict_pod.mutable_linux()->mutable_security_context()->mutable_seccomp()->set_profile_type(
        v1::SecurityProfile::RuntimeDefault);
    auto lines = RunToExit(*env, *pod, strict_pod, config);
    EXPECT_TRUE(HasLine(lines, "rc=0")) << Joined(lines);

    auto inherits = env->ContainerConfig("seccomp-inherited", try_userns);
    lines = RunToExit(*env, *pod, strict_pod, inherits);
    EXPECT_TRUE(HasLine(lines, "rc=1")) << Joined(lines);
  }
  {
    SCOPED_TRACE("seccomp Localhost");
    std::string profile_path = env->root() + "/deny-mkdir.json";
    ASSERT_TRUE(base::WriteFileAtomic(profile_path, R"({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]})")
                    .ok());
    auto config = env->ContainerConfig("seccomp-localhost", {"/bin/sh", "-c", "mkdir /tmp/d; echo rc=$?"});
    auto* seccomp = config.mutable_linux()->mutable_security_context()->mutable_seccomp();
    seccomp->set_profile_type(v1::SecurityProfile::Localhost);
    seccomp->set_localhost_ref(profile_path);
    auto lines = RunToExit(*env, *pod, pod_config, config);
    EXPECT_TRUE(HasLine(lines, "rc=1")) << Joined(lines);

    auto missing = env->ContainerConfig("seccomp-missing", {"true"});
    auto* bad = missing.mutable_linux()->mutable_security_context()->mutable_seccomp();
    bad->set_profile_type(v1::SecurityProfile::Localhost);
    bad->set_localhost_ref(env->root() + "/no-such-profile.json");
    auto id = env->CreateContainer(*pod, missing, pod_config);
    ASSERT_FALSE(id.ok());
    EXPECT_NE(id.error().message().find("no-such-profile.json"), std::string::npos) << id.error().message();
  }

  const std::vector<std::string> show_caps = {"/bin/sh", "-c", "grep -E '^(CapEff|CapBnd):' /proc/self/status"};
  {
    SCOPED_TRACE("capabilities: drop ALL, then add one back");
    auto config = env->ContainerConfig("caps-none", show_caps);
    config.mutable_linux()->mutable_security_context()->mutable_capabilities()->add_drop_capabilities("ALL");
    auto lines = RunToExit(*env, *pod, pod_config, config);
    EXPECT_TRUE(HasLine(lines, "CapEff:\t" + CapMask({}))) << Joined(lines);
    EXPECT_TRUE(HasLine(lines, "CapBnd:\t" + CapMask({}))) << Joined(lines);

    auto one = env->ContainerConfig("caps-one", show_caps);
    auto* caps = one.mutable_linux()->mutable_security_context()->mutable_capabilities();
    caps->add_drop_capabilities("ALL");
    caps->add_add_capabilities("NET_BIND_SERVICE");
    lines = RunToExit(*env, *pod, pod_config, one);
    EXPECT_TRUE(HasLine(lines, "CapEff:\t" + CapMask({"CAP_NET_BIND_SERVICE"}))) << Joined(lines);
  }
  {
    SCOPED_TRACE("capabilities: an ambient one stays effective for a non-root user");
    auto config = env->ContainerConfig("caps-ambient", {"/bin/sh", "-c", "grep -E '^Cap(Eff|Amb):' /proc/self/status"});
    auto* sc = config.mutable_linux()->mutable_security_context();
    sc->mutable_run_as_user()->set_value(1000);
    sc->mutable_capabilities()->add_drop_capabilities("ALL");
    sc->mutable_capabilities()->add_add_ambient_capabilities("NET_BIND_SERVICE");
    auto lines = RunToExit(*env, *pod, pod_config, config);
    EXPECT_TRUE(HasLine(lines, "CapEff:\t" + CapMask({"CAP_NET_BIND_SERVICE"}))) << Joined(lines);
    EXPECT_TRUE(HasLine(lines, "CapAmb:\t" + CapMask({"CAP_NET_BIND_SERVICE"}))) << Joined(lines);

    // Without it the same user has none.
    auto plain = env->ContainerConfig("caps-not-ambient", {"/bin/sh", "-c", "grep -E '^CapEff:' /proc/self/status"});
    plain.mutable_linux()->mutable_security_context()->mutable_run_as_user()->set_value(1000);
    lines = RunToExit(*env, *pod, pod_config, plain);
    EXPECT_TRUE(HasLine(lines, "CapEff:\t" + CapMask({}))) << Joined(lines);
  }
  {
    SCOPED_TRACE("capabilities: an add keeps the defaults, a drop removes one of them");
    auto config = env->ContainerConfig("caps-add", show_caps);
    auto* caps = config.mutable_linux()->mutable_security_context()->mutable_capabilities();
    caps->add_add_capabilities("NET_ADMIN");
    caps->add_drop_capabilities("CHOWN");
    std::vector<std::string> expected = {"CAP_NET_ADMIN"};
    for (const auto& name : base::DefaultCapabilities()) {
      if (name != "CAP_CHOWN") {
        expected.push_back(name);
      }
    }
    auto lines = RunToExit(*env, *pod, pod_config, config);
    EXPECT_TRUE(HasLine(lines, "CapEff:\t" + CapMask(expected))) << Joined(lines);
  }
  {
    SCOPED_TRACE("exec inherits the container's env, working dir, capabilities, no_new_privs and seccomp");
    auto config = env->ContainerConfig("exec-inherits", {"sleep", "3600"});
    auto* env_var = config.add_envs();
    env_var->set_key("GREETING");
    env_var->set_value("from-the-container");
    config.set_working_dir("/tmp");
    auto* sc = config.mutable_linux()->mutable_security_context();
    sc->mutable_capabilities()->add_drop_capabilities("ALL");
    sc->set_no_new_privs(true);
    sc->mutable_seccomp()->set_profile_type(v1::SecurityProfile::RuntimeDefault);
    std::string id = RunContainer(*env, *pod, pod_config, config);
    ASSERT_FALSE(id.empty());
    ASSERT_TRUE(env->WaitRunning(id).ok());
    EXPECT_EQ(ExecOut(*env, id, {"/bin/sh", "-c", "echo $GREETING; pwd"}), "from-the-container\n/tmp");
    EXPECT_EQ(ExecOut(*env, id, {"/bin/sh", "-c", "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status"}),
              "CapEff:\t" + CapMask({}) + "\nNoNewPrivs:\t1\nSeccomp:\t2");
    v1::StopContainerRequest stop;
    stop.set_container_id(id);
    stop.set_timeout(0);
    v1::StopContainerResponse stopped;
    EXPECT_TRUE(env->runtime().StopContainer(Ctx().get(), stop, &stopped).ok());
    EXPECT_TRUE(RemoveContainer(*env, id).ok());
  }
  {
    SCOPED_TRACE("an unknown capability");
    auto config = env->ContainerConfig("caps-unknown", show_caps);
    config.mutable_linux()->mutable_security_context()->mutable_capabilities()->add_add_capabilities("FLY");
    size_t before = ListContainers(*env).containers_size();
    auto id = env->CreateContainer(*pod, config, pod_config);
    ASSERT_FALSE(id.ok());
    EXPECT_NE(id.error().message().find("unknown capability 'FLY'"), std::string::npos) << id.error().message();
    EXPECT_NE(id.error().message().find("add_capabilities[0]"), std::string::npos) << id.error().message();
    EXPECT_EQ(ListContainers(*env).containers_size(), before);  // nothing left behind
  }
}

}  // namespace
}  // namespace chrys::e2e
