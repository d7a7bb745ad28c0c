// Bad input to the pod and container RPCs of a real chrysd: the right gRPC code, the field named in the message,
// and nothing left behind (no netns, no VMM process, no record).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

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

// Expects `status` to carry `code` and every one of `words` in its message.
void ExpectError(const grpc::Status& status, grpc::StatusCode code, const std::vector<std::string>& words) {
  EXPECT_EQ(status.error_code(), code) << "message: " << status.error_message();
  for (const auto& word : words) {
    EXPECT_NE(status.error_message().find(word), std::string::npos)
        << "'" << word << "' not named in: " << status.error_message();
  }
}

grpc::Status RunPod(PodEnv& env, const v1::PodSandboxConfig& config, const std::string& handler = "") {
  v1::RunPodSandboxRequest req;
  *req.mutable_config() = config;
  req.set_runtime_handler(handler);
  v1::RunPodSandboxResponse resp;
  auto status = env.runtime().RunPodSandbox(Ctx().get(), req, &resp);
  EXPECT_FALSE(status.ok()) << "RunPodSandbox accepted the pod: " << resp.pod_sandbox_id();
  return status;
}

int PodCount(PodEnv& env) {
  v1::ListPodSandboxResponse list;
  EXPECT_TRUE(env.runtime().ListPodSandbox(Ctx().get(), v1::ListPodSandboxRequest(), &list).ok());
  return list.items_size();
}

int ContainerCount(PodEnv& env) {
  v1::ListContainersResponse list;
  EXPECT_TRUE(env.runtime().ListContainers(Ctx().get(), v1::ListContainersRequest(), &list).ok());
  return list.containers_size();
}

TEST(PodBadInput, MissingMetadata) {
  auto env = MakeEnv();
  ASSERT_TRUE(env);
  HostTraces before = env->Traces();
  v1::PodSandboxConfig config = env->PodConfig("no-metadata");
  config.clear_metadata();
  ExpectError(RunPod(*env, config), grpc::StatusCode::INVALID_ARGUMENT, {"metadata"});

  config = env->PodConfig("no-uid");
  config.mutable_metadata()->clear_uid();
  ExpectError(RunPod(*env, config), grpc::StatusCode::INVALID_ARGUMENT, {"metadata.uid"});

  config = env->PodConfig("no-namespace");
  config.mutable_metadata()->clear_namespace_();
  ExpectError(RunPod(*env, config), grpc::StatusCode::INVALID_ARGUMENT, {"metadata.namespace"});

  EXPECT_EQ(PodCount(*env), 0);
  EXPECT_EQ(NewTraces(before, env->Traces()), "");
}

TEST(PodBadInput, NamesTooLongOrWithForbiddenCharacters) {
  auto env = MakeEnv();
  ASSERT_TRUE(env);
  HostTraces before = env->Traces();
  struct Case {
    std::string what;
    std::function<void(v1::PodSandboxConfig&)> spoil;
    std::string field;
  };
  const std::vector<Case> cases = {
      {"name of 254 characters", [](auto& c) { c.mutable_metadata()->set_name(std::string(254, 'a')); },
       "metadata.name"},
      {"name with '_' and upper case", [](auto& c) { c.mutable_metadata()->set_name("Bad_Name"); }, "metadata.name"},
      {"name with '/'", [](auto& c) { c.mutable_metadata()->set_name("a/../../b"); }, "metadata.name"},
      {"namespace of 64 characters", [](auto& c) { c.mutable_metadata()->set_namespace_(std::string(64, 'n')); },
       "metadata.namespace"},
      {"namespace with '.'", [](auto& c) { c.mutable_metadata()->set_namespace_("kube.system"); },
       "metadata.namespace"},
      {"uid with '/'", [](auto& c) { c.mutable_metadata()->set_uid("../../etc"); }, "metadata.uid"},
      {"hostname with '_'", [](auto& c) { c.set_hostname("host_name"); }, "hostname"},
      {"relative log directory", [](auto& c) { c.set_log_directory("var/log/pods/x"); }, "log_directory"},
      {"container port 0", [](auto& c) { c.add_port_mappings()->set_container_port(0); }, "port_mappings"},
      {"host port 70000",
       [](auto& c) {
         auto* pm = c.add_port_mappings();
         pm->set_container_port(80);
         pm->set_host_port(70000);
       },
       "port_mappings"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    v1::PodSandboxConfig config = env->PodConfig("bad-name");
    c.spoil(config);
    ExpectError(RunPod(*env, config), grpc::StatusCode::INVALID_ARGUMENT, {c.field});
  }
  EXPECT_EQ(PodCount(*env), 0);
  EXPECT_EQ(NewTraces(before, env->Traces()), "");
}

TEST(PodBadInput, UnknownHandler) {
  auto env = MakeEnv();
  ASSERT_TRUE(env);
  HostTraces before = env->Traces();
  ExpectError(RunPod(*env, env->PodConfig("handler"), "runc"), grpc::StatusCode::INVALID_ARGUMENT,
              {"runtime_handler", "runc", "chrysalis"});
  EXPECT_EQ(PodCount(*env), 0);
  EXPECT_EQ(NewTraces(before, env->Traces()), "");
}

TEST(PodBadInput, UnknownIdsAreNotFound) {
  auto env = MakeEnv();
  ASSERT_TRUE(env);
  HostTraces before = env->Traces();
  const std::string ghost(64, 'f');
  auto& rt = env->runtime();
  {
    SCOPED_TRACE("PodSandboxStatus");
    v1::PodSandboxStatusRequest req;
    req.set_pod_sandbox_id(ghost);
    v1::PodSandboxStatusResponse resp;
    ExpectError(rt.PodSandboxStatus(Ctx().get(), req, &resp), grpc::StatusCode::NOT_FOUND, {ghost.substr(0, 12)});
  }
  {
    SCOPED_TRACE("StopPodSandbox");
    v1::StopPodSandboxRequest req;
    req.set_pod_sandbox_id(ghost);
    v1::StopPodSandboxResponse resp;
    ExpectError(rt.StopPodSandbox(Ctx().get(), req, &resp), grpc::StatusCode::NOT_FOUND, {ghost.substr(0, 12)});
  }
  {
    SCOPED_TRACE("CreateContainer in an unknown pod");
    v1::CreateContainerRequest req;
    req.set_pod_sandbox_id(ghost);
    *req.mutable_config() = env->ContainerConfig("c", {"true"});
    *req.mutable_sandbox_config() = env->PodConfig("ghost");
    v1::CreateContainerResponse resp;
    ExpectError(rt.CreateContainer(Ctx().get(), req, &resp), grpc::StatusCode::NOT_FOUND, {ghost.substr(0, 12)});
  }
  {
    SCOPED_TRACE("ContainerStatus");
    v1::ContainerStatusRequest req;
    req.set_container_id(ghost);
    v1::ContainerStatusResponse resp;
    ExpectError(rt.ContainerStatus(Ctx().get(), req, &resp), grpc::StatusCode::NOT_FOUND, {ghost.substr(0, 12)});
  }
  {
    SCOPED_TRACE("StartContainer");
    v1::StartContainerRequest req;
    req.set_container_id(ghost);
    v1::StartContainerResponse resp;
    ExpectError(rt.StartContainer(Ctx().get(), req, &resp), grpc::StatusCode::NOT_FOUND, {ghost.substr(0, 12)});
  }
  {
    SCOPED_TRACE("StopContainer");
    v1::StopContainerRequest req;
    req.set_container_id(ghost);
    v1::StopContainerResponse resp;
    ExpectError(rt.StopContainer(Ctx().get(), req, &resp), grpc::StatusCode::NOT_FOUND, {ghost.substr(0, 12)});
  }
  {
    SCOPED_TRACE("ExecSync");
    v1::ExecSyncRequest req;
    req.set_container_id(ghost);
    req.add_cmd("true");
    v1::ExecSyncResponse resp;
    ExpectError(rt.ExecSync(Ctx().get(), req, &resp), grpc::StatusCode::NOT_FOUND, {ghost.substr(0, 12)});
  }
  {
    SCOPED_TRACE("ReopenContainerLog");
    v1::ReopenContainerLogRequest req;
    req.set_container_id(ghost);
    v1::ReopenContainerLogResponse resp;
    ExpectError(rt.ReopenContainerLog(Ctx().get(), req, &resp), grpc::StatusCode::NOT_FOUND, {ghost.substr(0, 12)});
  }
  {
    SCOPED_TRACE("ContainerStats");
    v1::ContainerStatsRequest req;
    req.set_container_id(ghost);
    v1::ContainerStatsResponse resp;
    ExpectError(rt.ContainerStats(Ctx().get(), req, &resp), grpc::StatusCode::NOT_FOUND, {ghost.substr(0, 12)});
  }
  // Removing what does not exist succeeds: kubelet retries removals.
  {
    v1::RemovePodSandboxRequest req;
    req.set_pod_sandbox_id(ghost);
    v1::RemovePodSandboxResponse resp;
    auto status = rt.RemovePodSandbox(Ctx().get(), req, &resp);
    EXPECT_TRUE(status.ok()) << status.error_message();
  }
  {
    v1::RemoveContainerRequest req;
    req.set_container_id(ghost);
    v1::RemoveContainerResponse resp;
    auto status = rt.RemoveContainer(Ctx().get(), req, &resp);
    EXPECT_TRUE(status.ok()) << status.error_message();
  }
  EXPECT_EQ(NewTraces(before, env->Traces()), "");
}

// One running pod for every case that needs one: duplicate names, container configs that must be refused, a
// container in a sandbox that is no longer ready.
TEST(PodBadInput, AgainstARunningPod) {
  auto env = MakeEnv();
  ASSERT_TRUE(env);
  HostTraces clean = env->Traces();
  v1::PodSandboxConfig pod_config = env->PodConfig("target");
  auto pod = env->RunPod(pod_config);
  ASSERT_TRUE(pod.ok()) << pod.error().message() << "\n" << env->chrysd().Output();
  HostTraces with_pod = env->Traces();

  {
    SCOPED_TRACE("duplicate pod name");
    ExpectError(RunPod(*env, pod_config), grpc::StatusCode::ALREADY_EXISTS, {"target"});
    EXPECT_EQ(PodCount(*env), 1);
    EXPECT_EQ(NewTraces(with_pod, env->Traces()), "");
  }

  auto create = [&](const v1::ContainerConfig& config) {
    v1::CreateContainerRequest req;
    req.set_pod_sandbox_id(*pod);
    *req.mutable_config() = config;
    *req.mutable_sandbox_config() = pod_config;
    v1::CreateContainerResponse resp;
    auto status = env->runtime().CreateContainer(Ctx().get(), req, &resp);
    return std::make_pair(status, resp.container_id());
  };
  std::string missing_dir = env->root() + "/no-such-dir";
  struct Case {
    std::string what;
    std::function<void(v1::ContainerConfig&)> spoil;
    grpc::StatusCode code;
    std::vector<std::string> words;
  };
  const std::vector<Case> cases = {
      {"missing metadata", [](auto& c) { c.clear_metadata(); }, grpc::StatusCode::INVALID_ARGUMENT, {"metadata"}},
      {"name with '_'",
       [](auto& c) { c.mutable_metadata()->set_name("bad_name"); },
       grpc::StatusCode::INVALID_ARGUMENT,
       {"metadata.name", "bad_name"}},
      {"name of 64 characters",
       [](auto& c) { c.mutable_metadata()->set_name(std::string(64, 'c')); },
       grpc::StatusCode::INVALID_ARGUMENT,
       {"metadata.name"}},
      {"log path escaping the log directory",
       [](auto& c) { c.set_log_path("../../escape.log"); },
       grpc::StatusCode::INVALID_ARGUMENT,
       {"log_path", "escape.log"}},
      {"absolute log path",
       [](auto& c) { c.set_log_path("/etc/evil.log"); },
       grpc::StatusCode::INVALID_ARGUMENT,
       {"log_path", "/etc/evil.log"}},
      {"missing image", [](auto& c) { c.clear_image(); }, grpc::StatusCode::INVALID_ARGUMENT, {"image"}},
      {"image not in the store",
       [](auto& c) { c.mutable_image()->set_image("localhost/not-pulled/nothing:1"); },
       grpc::StatusCode::NOT_FOUND,
       {"localhost/not-pulled/nothing:1"}},
      {"mount source that does not exist",
       [&](auto& c) {
         auto* m = c.add_mounts();
         m->set_container_path("/data");
         m->set_host_path(missing_dir);
       },
       grpc::StatusCode::INVALID_ARGUMENT,
       {"host_path", missing_dir}},
      {"relative mount destination",
       [&](auto& c) {
         auto* m = c.add_mounts();
         m->set_container_path("data");
         m->set_host_path(env->root());
       },
       grpc::StatusCode::INVALID_ARGUMENT,
       {"container_path"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    v1::ContainerConfig config = env->ContainerConfig("refused", {"true"});
    c.spoil(config);
    auto [status, id] = create(config);
    EXPECT_FALSE(status.ok()) << "created " << id;
    ExpectError(status, c.code, c.words);
    EXPECT_EQ(ContainerCount(*env), 0);
  }
  EXPECT_FALSE(std::filesystem::exists(env->root() + "/escape.log"));
  EXPECT_FALSE(std::filesystem::exists("/etc/evil.log"));
  EXPECT_FALSE(std::filesystem::exists(missing_dir)) << "the missing mount source was created";

  {
    SCOPED_TRACE("duplicate container name");
    auto [first, id] = create(env->ContainerConfig("twin", {"sleep", "1"}));
    ASSERT_TRUE(first.ok()) << first.error_message();
    auto [second, id2] = create(env->ContainerConfig("twin", {"sleep", "1"}));
    ExpectError(second, grpc::StatusCode::ALREADY_EXISTS, {"twin"});
    EXPECT_EQ(ContainerCount(*env), 1);
  }

  ASSERT_TRUE(env->StopPod(*pod).ok());
  {
    SCOPED_TRACE("container in a sandbox that is not ready");
    auto [status, id] = create(env->ContainerConfig("late", {"true"}));
    ExpectError(status, grpc::StatusCode::FAILED_PRECONDITION, {pod->substr(0, 12)});
    EXPECT_EQ(ContainerCount(*env), 1);
  }
  ASSERT_TRUE(env->RemovePod(*pod).ok());
  EXPECT_EQ(ContainerCount(*env), 0);
  EXPECT_EQ(NewTraces(clean, env->Traces()), "");
}

}  // namespace
}  // namespace chrys::e2e
