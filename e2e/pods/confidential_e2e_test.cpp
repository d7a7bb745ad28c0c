// Confidential pods through chrysd's CRI socket: chrysalis-snp/-tdx refused with what this host lacks, and one
// chrysalis-cvm pod booting the HAL disk image (OVMF -> GRUB -> verified root) on the pod network, whose
// container image is pulled inside the guest from a test registry reachable on the pod network. One VM boot
// under TCG: about a minute.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "e2e/fixtures/child_process.h"
#include "e2e/fixtures/test_image.h"
#include "e2e/fixtures/test_registry.h"
#include "e2e/pods/pod_env.h"
#include "guest/hal/hal_builder.h"

namespace chrys::e2e {
namespace {

using Clock = std::chrono::steady_clock;

class ConfidentialPodTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/var/tmp/chrys-cvm-e2e-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    image_root_ = tmpl;
    guest::hal::HalImageConfig config;
    config.output_dir = image_root_ + "/hal";
    config.agent_binary = CHRYS_HAL_AGENT_BINARY;
    config.cocos_mib = 256;
    auto built = guest::hal::BuildHalImage(config);
    ASSERT_TRUE(built.ok()) << built.error().message();
    hal_dir_ = config.output_dir;
    auto registry = TestRegistry::Start();
    ASSERT_TRUE(registry.ok()) << registry.error().message();
    registry_ = std::move(registry).value().release();
    // The registry's address on the pod network is known once the environment has its subnet: chrysd starts
    // with an empty registries section and restarts once it is filled in.
    std::string chrysd_config = image_root_ + "/chrysd.yaml";
    ASSERT_TRUE(base::WriteFileAtomic(chrysd_config, "images:\n  registries: {}\n").ok());
    auto env = PodEnv::Create({"--config", chrysd_config, "--set", "confidential.hal_dir=" + hal_dir_, "--set",
                               "confidential.boot_timeout_seconds=170", "--set", "confidential.min_memory_mib=768"});
    ASSERT_TRUE(env.ok()) << env.error().message();
    env_ = std::move(env).value().release();
    const std::string& subnet = env_->subnet();  // "10.198.N.0/24"; the bridge is .1
    gateway_ = subnet.substr(0, subnet.rfind('.')) + ".1";
    pod_registry_ = gateway_ + ":" + std::to_string(registry_->port());
    // A private registry: TLS with its own CA (valid for the bridge address the guest dials) and a password.
    TestRegistryOptions private_options;
    private_options.tls = true;
    private_options.extra_ip = gateway_;
    auto private_registry = TestRegistry::Start(private_options);
    ASSERT_TRUE(private_registry.ok()) << private_registry.error().message();
    private_registry_ = std::move(private_registry).value().release();
    private_pod_registry_ = gateway_ + ":" + std::to_string(private_registry_->port());
    ASSERT_TRUE(base::WriteFileAtomic(chrysd_config, "images:\n  registries:\n    \"" + pod_registry_ +
                                                         "\":\n      insecure: true\n    \"" + private_pod_registry_ +
                                                         "\":\n      ca_file: \"" + private_registry_->ca_file() +
                                                         "\"\n")
                    .ok());
    auto restarted = env_->Restart(false);
    ASSERT_TRUE(restarted.ok()) << restarted.error().message();
  }

  static void TearDownTestSuite() {
    delete env_;
    env_ = nullptr;
    delete registry_;
    registry_ = nullptr;
    delete private_registry_;
    private_registry_ = nullptr;
    if (!image_root_.empty()) {
      (void)base::RemoveTree(image_root_);
    }
  }

  void SetUp() override {
    if (env_ == nullptr) {
      GTEST_SKIP() << "no test environment";
    }
  }

  // PodSandboxStatus' verbose info as JSON.
  static nlohmann::json VerboseInfo(const std::string& pod_id) {
    v1::PodSandboxStatusRequest req;
    req.set_pod_sandbox_id(pod_id);
    req.set_verbose(true);
    v1::PodSandboxStatusResponse resp;
    if (!env_->runtime().PodSandboxStatus(Ctx().get(), req, &resp).ok() || !resp.info().contains("info")) {
      return nlohmann::json::object();
    }
    return nlohmann::json::parse(resp.info().at("info"), nullptr, false);
  }

  static PodEnv* env_;
  static TestRegistry* registry_;
  static TestRegistry* private_registry_;    // TLS + password
  static std::string private_pod_registry_;  // gateway:port of the private one
  static std::string image_root_;
  static std::string hal_dir_;
  static std::string gateway_;       // the pod network's bridge address on the host
  static std::string pod_registry_;  // gateway:port, forwarded to the registry on 127.0.0.1
};

PodEnv* ConfidentialPodTest::env_ = nullptr;
TestRegistry* ConfidentialPodTest::registry_ = nullptr;
TestRegistry* ConfidentialPodTest::private_registry_ = nullptr;
std::string ConfidentialPodTest::private_pod_registry_;
std::string ConfidentialPodTest::image_root_;
std::string ConfidentialPodTest::hal_dir_;
std::string ConfidentialPodTest::gateway_;
std::string ConfidentialPodTest::pod_registry_;

// True when a file under `dir` has `needle` in its name (blob stores name files by digest).
bool TreeHasName(const std::string& dir, const std::string& needle) {
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->path().filename().string().find(needle) != std::string::npos) {
      return true;
    }
  }
  return false;
}

TEST_F(ConfidentialPodTest, TeeHandlersAreRefusedNamingWhatTheHostLacks) {
  HostTraces before = env_->Traces();
  for (const auto& [handler, needle] :
       std::vector<std::pair<std::string, std::string>>{{"chrysalis-snp", "sev_snp=Y"}, {"chrysalis-tdx", "tdx=Y"}}) {
    v1::RunPodSandboxRequest req;
    *req.mutable_config() = env_->PodConfig("tee-" + handler.substr(10));
    req.set_runtime_handler(handler);
    v1::RunPodSandboxResponse resp;
    auto status = env_->runtime().RunPodSandbox(Ctx().get(), req, &resp);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << handler << ": " << status.error_message();
    EXPECT_NE(status.error_message().find(needle), std::string::npos) << status.error_message();
    EXPECT_NE(status.error_message().find(handler), std::string::npos) << status.error_message();
  }
  EXPECT_EQ(NewTraces(before, env_->Traces()), "");
}

TEST_F(ConfidentialPodTest, CvmPodBootsTheHalDiskOnThePodNetworkAndLeavesTheImageUntouched) {
  struct stat disk_before {};
  ASSERT_EQ(::stat((hal_dir_ + "/disk.img").c_str(), &disk_before), 0);
  auto disk_hash = [&] {
    base::CommandSpec spec;
    spec.argv = {"sha256sum", hal_dir_ + "/disk.img"};
    auto r = base::RunCommand(spec);
    return r.ok() ? r->stdout_data.substr(0, 64) : std::string("?");
  };
  std::string hash_before = disk_hash();
  HostTraces before = env_->Traces();

  v1::PodSandboxConfig config = env_->PodConfig("cvm-pod");
  auto pod = env_->RunPod(config, "chrysalis-cvm");
  ASSERT_TRUE(pod.ok()) << pod.error().message() << "\nchrysd: " << base::Tail(env_->chrysd().Output(), 3000);
  auto status = env_->PodStatus(*pod);
  ASSERT_TRUE(status.ok()) << status.error().message();
  EXPECT_EQ(status->state(), v1::SANDBOX_READY);
  EXPECT_EQ(status->runtime_handler(), "chrysalis-cvm");
  std::string ip = status->network().ip();
  EXPECT_FALSE(ip.empty());

  // The VM boots the pod's own overlay of disk.img, with its own OVMF vars.
  std::string vm_dir = env_->chrysd().state_dir() + "/cvm/" + *pod;
  EXPECT_EQ(::access((vm_dir + "/disk.qcow2").c_str(), F_OK), 0);
  EXPECT_EQ(::access((vm_dir + "/OVMF_VARS.fd").c_str(), F_OK), 0);
  nlohmann::json info = VerboseInfo(*pod);
  ASSERT_TRUE(info.contains("vm")) << info.dump();
  pid_t vmm = info["vm"].value("pid", 0);
  auto cmdline = base::ReadFile("/proc/" + std::to_string(vmm) + "/cmdline", 1 << 16);
  ASSERT_TRUE(cmdline.ok());
  EXPECT_NE(cmdline->find("scsi-hd"), std::string::npos);
  EXPECT_NE(cmdline->find(vm_dir + "/disk.qcow2"), std::string::npos);
  EXPECT_NE(cmdline->find("mount_tag=env_share"), std::string::npos);

  // The console shows the verified, encrypted boot and the agent taking over in HAL mode.
  std::string console_path = info["vm"].value("consoleLog", "");
  auto console = base::ReadFile(console_path, 8 << 20);
  ASSERT_TRUE(console.ok()) << console_path;
  size_t report_at = console->find("CHRYS-HAL-REPORT ");
  ASSERT_NE(report_at, std::string::npos) << base::Tail(*console, 3000);
  auto report = nlohmann::json::parse(console->substr(report_at + 17, console->find('\n', report_at) - report_at - 17),
                                      nullptr, false);
  ASSERT_TRUE(report.is_object()) << console->substr(report_at, 400);
  EXPECT_EQ(report.value("root_device", ""), "/dev/mapper/root_verity");
  EXPECT_TRUE(report.value("root_ro", false));
  EXPECT_EQ(report.value("cocos_dm_uuid", "").rfind("CRYPT-LUKS2-", 0), 0u);
  EXPECT_TRUE(report.value("key_gone", false));
  EXPECT_TRUE(report.value("env_share", false));
  EXPECT_TRUE(report.value("certs_share", false));
  EXPECT_NE(console->find("CHRYS-HAL-MARK agent-exec"), std::string::npos);

  // agent.json gave the guest its address: the pod answers on the pod network.
  base::CommandSpec ping;
  ping.argv = {"/bin/busybox", "ping", "-c", "1", "-W", "5", ip};  // busybox-static: an install dependency
  ping.timeout = std::chrono::seconds(20);
  bool answered = false;
  for (int attempt = 0; attempt < 5 && !answered; ++attempt) {
    auto r = base::RunCommand(ping);
    answered = r.ok() && r->success();
  }
  EXPECT_TRUE(answered) << "no answer from the pod at " << ip << "\n" << base::Tail(*console, 2000);

  // A container image pulled inside the guest, over the pod network, from the registry: a busybox layer and a
  // layer of our own whose digest must never show up on the host.
  auto layout = OciLayoutWriter::Create(image_root_ + "/layout");
  ASSERT_TRUE(layout.ok()) << layout.error().message();
  auto base_layer = layout->AddLayer(BusyboxLayerEntries());
  auto own_layer = layout->AddLayer({TarEntry::File("hello.txt", "hello from inside a confidential pod\n")});
  ASSERT_TRUE(base_layer.ok() && own_layer.ok());
  auto manifest = layout->AddImage({*base_layer, *own_layer}, ImageSpec{});
  ASSERT_TRUE(manifest.ok()) << manifest.error().message();
  ASSERT_TRUE(layout->WriteIndexJson({{*manifest, "hello"}}).ok());
  SkopeoPush push;
  push.layout_dir = layout->dir();
  push.layout_ref = "hello";
  push.destination = registry_->host() + "/cvm/hello:1";
  auto pushed = PushWithSkopeo(push);
  ASSERT_TRUE(pushed.ok()) << pushed.error().message();
  // The registry listens on loopback only; socat makes it reachable at the bridge address for the pod.
  auto forwarder = ChildProcess::Start(
      {"socat", "TCP-LISTEN:" + std::to_string(registry_->port()) + ",bind=" + gateway_ + ",fork,reuseaddr",
       "TCP:" + registry_->host()},
      image_root_ + "/socat.log");
  ASSERT_TRUE(forwarder.ok()) << forwarder.error().message();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::string image = pod_registry_ + "/cvm/hello:1";
  ASSERT_TRUE(base::MakeDirs(config.log_directory()).ok());
  v1::CreateContainerRequest create;
  create.set_pod_sandbox_id(*pod);
  *create.mutable_config() =
      env_->ContainerConfig("hello", {"/bin/sh", "-c", "cat /hello.txt; echo written > /new.txt; exec sleep 3600"});
  create.mutable_config()->mutable_image()->set_image(image);
  *create.mutable_sandbox_config() = config;
  v1::CreateContainerResponse created;
  auto create_status = env_->runtime().CreateContainer(Ctx(std::chrono::seconds(300)).get(), create, &created);
  ASSERT_TRUE(create_status.ok()) << create_status.error_message() << "\n" << base::Tail(*console, 2000);
  const std::string container = created.container_id();
  // It runs from the layers the guest pulled onto its encrypted disk, logs through CRI, and answers ExecSync.
  ASSERT_TRUE(env_->StartContainer(container).ok());
  ASSERT_TRUE(env_->WaitRunning(container).ok());
  std::string log_path = env_->LogPath(config, create.config());
  std::string log;
  for (auto until = Clock::now() + std::chrono::seconds(60);
       log.find("hello from inside a confidential pod") == std::string::npos && Clock::now() < until;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto text = base::ReadFile(log_path, 1 << 20);
    log = text.ok() ? *text : std::string();
  }
  EXPECT_NE(log.find(" stdout F hello from inside a confidential pod"), std::string::npos) << log;
  v1::ExecSyncRequest exec;
  exec.set_container_id(container);
  for (const char* arg : {"/bin/sh", "-c", "cat /new.txt; grep -c ' / overlay ' /proc/mounts"}) {
    exec.add_cmd(arg);
  }
  exec.set_timeout(60);
  v1::ExecSyncResponse exec_out;
  auto exec_status = env_->runtime().ExecSync(Ctx(std::chrono::seconds(90)).get(), exec, &exec_out);
  ASSERT_TRUE(exec_status.ok()) << exec_status.error_message();
  EXPECT_EQ(exec_out.exit_code(), 0) << exec_out.stderr();
  EXPECT_EQ(exec_out.stdout(), "written\n1\n") << "the container's writes land in its overlay upper";
  v1::ContainerStatusRequest status_request;
  status_request.set_container_id(container);
  v1::ContainerStatusResponse container_status;
  ASSERT_TRUE(env_->runtime().ContainerStatus(Ctx().get(), status_request, &container_status).ok());
  EXPECT_EQ(container_status.status().state(), v1::CONTAINER_RUNNING);
  EXPECT_EQ(container_status.status().image_ref().rfind("sha256:", 0), 0U) << container_status.status().image_ref();

  // A private registry, kubelet's way: PullImage with the pod's sandbox_config and the credentials pulls inside
  // the guest (TLS verified with the registry's CA from chrysd's config); CreateContainer then uses that copy.
  SkopeoPush private_push = push;
  private_push.destination = private_registry_->host() + "/cvm/secret:1";
  private_push.creds = private_registry_->username() + ":" + private_registry_->password();
  auto private_pushed = PushWithSkopeo(private_push);
  ASSERT_TRUE(private_pushed.ok()) << private_pushed.error().message();
  auto private_forwarder = ChildProcess::Start(
      {"socat", "TCP-LISTEN:" + std::to_string(private_registry_->port()) + ",bind=" + gateway_ + ",fork,reuseaddr",
       "TCP:" + private_registry_->host()},
      image_root_ + "/socat-private.log");
  ASSERT_TRUE(private_forwarder.ok()) << private_forwarder.error().message();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const std::string secret_image = private_pod_registry_ + "/cvm/secret:1";
  v1::PullImageRequest pull;
  pull.mutable_image()->set_image(secret_image);
  *pull.mutable_sandbox_config() = config;
  pull.mutable_auth()->set_username(private_registry_->username());
  pull.mutable_auth()->set_password("not-the-password");
  v1::PullImageResponse pulled;
  auto denied = env_->images().PullImage(Ctx(std::chrono::seconds(300)).get(), pull, &pulled);
  EXPECT_FALSE(denied.ok()) << "wrong credentials must not pull";
  EXPECT_NE(denied.error_message().find("cvm/secret"), std::string::npos) << denied.error_message();
  EXPECT_EQ(denied.error_message().find("not-the-password"), std::string::npos) << "credentials never in errors";
  pull.mutable_auth()->set_password(private_registry_->password());
  auto allowed = env_->images().PullImage(Ctx(std::chrono::seconds(300)).get(), pull, &pulled);
  ASSERT_TRUE(allowed.ok()) << allowed.error_message();
  EXPECT_EQ(pulled.image_ref().rfind("sha256:", 0), 0U) << pulled.image_ref();
  v1::ImageStatusRequest host_status;
  host_status.mutable_image()->set_image(secret_image);
  v1::ImageStatusResponse host_image;
  ASSERT_TRUE(env_->images().ImageStatus(Ctx().get(), host_status, &host_image).ok());
  EXPECT_FALSE(host_image.has_image()) << "the pull went into the guest, not the host store";
  v1::CreateContainerRequest secret = create;
  secret.mutable_config()->mutable_metadata()->set_name("secret");
  secret.mutable_config()->mutable_image()->set_image(secret_image);
  secret.mutable_config()->set_log_path("secret.log");
  v1::CreateContainerResponse secret_created;
  auto secret_status = env_->runtime().CreateContainer(Ctx(std::chrono::seconds(300)).get(), secret, &secret_created);
  ASSERT_TRUE(secret_status.ok()) << "the guest's copy is used, no credentials needed: "
                                  << secret_status.error_message();
  // Without the pod's sandbox_config a confidential pull has nowhere to go.
  v1::PullImageRequest orphan_pull;
  orphan_pull.mutable_image()->set_image(secret_image);
  orphan_pull.mutable_image()->set_runtime_handler("chrysalis-cvm");
  v1::PullImageResponse orphan_pulled;
  auto orphan = env_->images().PullImage(Ctx().get(), orphan_pull, &orphan_pulled);
  EXPECT_EQ(orphan.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << orphan.error_message();
  EXPECT_NE(orphan.error_message().find("sandbox_config"), std::string::npos) << orphan.error_message();

  // Bad input: an image the registry does not have fails the create with its name, and leaves no container.
  v1::CreateContainerRequest missing = create;
  missing.mutable_config()->mutable_metadata()->set_name("missing");
  missing.mutable_config()->mutable_image()->set_image(pod_registry_ + "/cvm/absent:1");
  v1::CreateContainerResponse not_created;
  auto missing_status = env_->runtime().CreateContainer(Ctx(std::chrono::seconds(300)).get(), missing, &not_created);
  EXPECT_FALSE(missing_status.ok());
  EXPECT_NE(missing_status.error_message().find("cvm/absent"), std::string::npos) << missing_status.error_message();
  v1::ListContainersRequest list;
  v1::ListContainersResponse listed;
  ASSERT_TRUE(env_->runtime().ListContainers(Ctx().get(), list, &listed).ok());
  EXPECT_EQ(listed.containers_size(), 2);

  auto console_now = base::ReadFile(console_path, 8 << 20);
  ASSERT_TRUE(console_now.ok());
  EXPECT_NE(console_now->find("pulled " + image + " (sha256:"), std::string::npos) << base::Tail(*console_now, 2000);
  std::string own_hex = own_layer->digest.substr(own_layer->digest.find(':') + 1);
  EXPECT_FALSE(TreeHasName(env_->chrysd().state_dir(), own_hex)) << "a layer of the pod's image is on the host";

  ASSERT_TRUE(env_->StopPod(*pod).ok());
  EXPECT_NE(::access((vm_dir + "/disk.qcow2").c_str(), F_OK), 0) << "the overlay outlived the VM";
  ASSERT_TRUE(env_->RemovePod(*pod).ok());
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (vmm > 0 && ::kill(vmm, 0) == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_NE(::kill(vmm, 0), 0) << "QEMU " << vmm << " still runs";
  EXPECT_NE(::access(vm_dir.c_str(), F_OK), 0);
  EXPECT_EQ(NewTraces(before, env_->Traces()), "");

  // No pod ever writes the shared image.
  struct stat disk_after {};
  ASSERT_EQ(::stat((hal_dir_ + "/disk.img").c_str(), &disk_after), 0);
  EXPECT_EQ(disk_after.st_mtim.tv_sec, disk_before.st_mtim.tv_sec);
  EXPECT_EQ(disk_hash(), hash_before);
}

}  // namespace
}  // namespace chrys::e2e
