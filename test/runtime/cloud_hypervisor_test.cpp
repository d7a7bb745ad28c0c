// Cloud Hypervisor driver against a fake API server process; every request body is validated against the
// Cloud Hypervisor v53 OpenAPI document.
#include "runtime/cloud_hypervisor.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "base/file_util.h"
#include "runtime/process.h"
#include "test/runtime/openapi_validator.h"

#ifndef CHRYS_CH_API_YAML
#error "CHRYS_CH_API_YAML must name the Cloud Hypervisor OpenAPI document"
#endif
#ifndef CHRYS_FAKE_CH
#error "CHRYS_FAKE_CH must name the fake_cloud_hypervisor binary"
#endif

namespace chrys::runtime {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
using testing::OpenApiValidator;

std::string Joined(const std::vector<std::string>& errors) {
  std::string out;
  for (const auto& e : errors) {
    out += e + "\n";
  }
  return out;
}

const OpenApiValidator& Validator() {
  static OpenApiValidator* v = [] {
    auto loaded = OpenApiValidator::Load(CHRYS_CH_API_YAML);
    EXPECT_TRUE(loaded.ok()) << loaded.error().message();
    return new OpenApiValidator(std::move(loaded).value());
  }();
  return *v;
}

struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    r = fds[0];
    w = fds[1];
  }
  ~Pipe() {
    ::close(r);
    ::close(w);
  }
};

class CloudHypervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = "/tmp/chtest-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++);
    ASSERT_TRUE(base::MakeDirs(dir_).ok());
    ASSERT_TRUE(base::WriteFileAtomic(dir_ + "/vmlinuz", "kernel").ok());
    ASSERT_TRUE(base::WriteFileAtomic(dir_ + "/initrd", "initrd").ok());
    ASSERT_TRUE(base::WriteFileAtomic(dir_ + "/layer.erofs", std::string(4096, '\0')).ok());
    record_ = dir_ + "/requests.jsonl";
  }
  void TearDown() override { (void)base::RemoveTree(dir_); }

  CloudHypervisorConfig Config(const std::string& mode) {
    CloudHypervisorConfig c;
    c.binary = CHRYS_FAKE_CH;
    c.place_in_cgroup = false;
    c.api_timeout = 5s;
    c.ping_timeout = 5s;
    c.extra_args = {"--fake-record", record_};
    if (!mode.empty()) {
      c.extra_args.push_back("--fake-mode");
      c.extra_args.push_back(mode);
    }
    return c;
  }

  VmLaunchSpec Spec() {
    VmLaunchSpec s;
    s.sandbox_id = "pod-ch-1";
    s.kernel_path = dir_ + "/vmlinuz";
    s.initramfs_path = dir_ + "/initrd";
    s.kernel_cmdline = "console=ttyS0 quiet";
    s.vcpus = 2;
    s.memory_mib = 640;
    s.run_dir = dir_ + "/run";
    s.console_log_path = dir_ + "/console.log";
    s.interfaces.push_back({{nic0a_.w, nic0b_.w}, "02:00:00:00:00:01", 1450});
    s.interfaces.push_back({{nic1_.w}, "02:00:00:00:00:02", 9000});
    return s;
  }

  std::vector<json> Requests() {
    std::vector<json> out;
    std::ifstream in(record_);
    std::string line;
    while (std::getline(in, line)) {
      out.push_back(json::parse(line));
    }
    return out;
  }

  // Every recorded request must be an operation of the API with a body that matches its schema.
  void ExpectAllBodiesValid() {
    auto requests = Requests();
    ASSERT_FALSE(requests.empty());
    for (const auto& r : requests) {
      std::string path = r["path"].get<std::string>().substr(std::string("/api/v1").size());
      std::string method = r["method"].get<std::string>();
      for (auto& c : method) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      }
      ASSERT_TRUE(Validator().HasOperation(path, method)) << method << " " << path << " is not in the API";
      auto schema = Validator().RequestSchema(path, method);
      std::string body = r["body"].get<std::string>();
      if (!schema.ok()) {
        EXPECT_TRUE(body.empty()) << path << " takes no body but got " << body;
        continue;
      }
      json parsed = json::parse(body, nullptr, false);
      ASSERT_FALSE(parsed.is_discarded()) << path << " body is not JSON: " << body;
      auto errors = Validator().Validate(*schema, parsed);
      EXPECT_TRUE(errors.empty()) << path << " body " << body << " violates the schema:\n" << Joined(errors);
    }
  }

  static int counter_;
  std::string dir_;
  std::string record_;
  Pipe nic0a_, nic0b_, nic1_;
};
int CloudHypervisorTest::counter_ = 0;

TEST_F(CloudHypervisorTest, LaunchCommandLine) {
  CloudHypervisorVmm vmm(Config(""));
  auto argv = vmm.CommandLine(Spec());
  ASSERT_TRUE(argv.ok()) << argv.error().message();
  std::vector<std::string> expected = {CHRYS_FAKE_CH, "--api-socket",        "path=" + dir_ + "/run/ch-api.sock",
                                       "--log-file",  dir_ + "/run/vmm.log", "--fake-record",
                                       record_};
  EXPECT_EQ(*argv, expected);
}

TEST_F(CloudHypervisorTest, FullLifecycleSendsSchemaValidBodies) {
  CloudHypervisorVmm vmm(Config(""));
  VmLaunchSpec spec = Spec();
  ASSERT_TRUE(vmm.Start(spec).ok());
  ASSERT_TRUE(vmm.Alive());
  // The process is ours and runs what CommandLine says.
  auto cmdline = ProcessCmdline(vmm.process_state().pid);
  ASSERT_TRUE(cmdline.ok());
  EXPECT_EQ(*cmdline, *vmm.CommandLine(spec));
  EXPECT_EQ(vmm.agent_endpoint().kind, AgentChannelKind::kHybridVsock);
  EXPECT_EQ(vmm.agent_endpoint().socket_path, dir_ + "/run/agent.vsock");

  ASSERT_TRUE(vmm.WaitReady([] { return base::Result<bool>(true); }, 5s).ok());
  auto info = vmm.Info();
  ASSERT_TRUE(info.ok()) << info.error().message();
  EXPECT_EQ(info->state, VmRunState::kRunning);
  ASSERT_TRUE(vmm.HotplugDisk({"layer1", dir_ + "/layer.erofs", true}, 5s).ok());
  EXPECT_EQ(vmm.HotplugDisk({"layer1", dir_ + "/layer.erofs", true}, 5s).error().code(),
            base::ErrorCode::kAlreadyExists);
  ASSERT_TRUE(vmm.UnplugDisk("layer1", 5s).ok());
  ASSERT_TRUE(vmm.Shutdown(true, 5s).ok());
  EXPECT_FALSE(vmm.Alive());
  EXPECT_NE(::access((dir_ + "/run/ch-api.sock").c_str(), F_OK), 0);

  ExpectAllBodiesValid();
  auto requests = Requests();
  std::vector<std::string> order;
  order.reserve(requests.size());
  for (const auto& r : requests) {
    order.push_back(r["method"].get<std::string>() + " " + r["path"].get<std::string>());
  }
  std::vector<std::string> expected_prefix = {"GET /api/v1/vmm.ping", "PUT /api/v1/vm.create", "PUT /api/v1/vm.add-net",
                                              "PUT /api/v1/vm.add-net", "PUT /api/v1/vm.boot"};
  ASSERT_GE(order.size(), expected_prefix.size());
  EXPECT_EQ(std::vector<std::string>(order.begin(), order.begin() + 5), expected_prefix);
  EXPECT_EQ(order.back(), "PUT /api/v1/vm.power-button");
  // The tap fds travelled with vm.add-net: two queues for the first NIC, one for the second.
  EXPECT_EQ(requests[2]["fds"].size(), 2u);
  EXPECT_EQ(requests[3]["fds"].size(), 1u);
  EXPECT_EQ(requests[2]["fds"][0].get<std::string>().rfind("pipe:", 0), 0u);
  json net0 = json::parse(requests[2]["body"].get<std::string>());
  EXPECT_EQ(net0["num_queues"], 4);
  EXPECT_EQ(net0["mac"], "02:00:00:00:00:01");
  EXPECT_EQ(net0["mtu"], 1450);
  json create = json::parse(requests[1]["body"].get<std::string>());
  EXPECT_EQ(create["memory"]["size"], int64_t{640} << 20);
  EXPECT_EQ(create["cpus"]["boot_vcpus"], 2);
  EXPECT_EQ(create["serial"]["file"], dir_ + "/console.log");
  EXPECT_TRUE(create["balloon"]["deflate_on_oom"].get<bool>());
  EXPECT_TRUE(create["balloon"]["free_page_reporting"].get<bool>());
}

TEST_F(CloudHypervisorTest, BodiesWithSharesHugepagesAndDiskBootAreSchemaValid) {
  CloudHypervisorVmm vmm(Config(""));
  VmLaunchSpec spec = Spec();
  spec.hugepages = true;
  spec.fs_shares.push_back({"vol0", dir_, false});
  spec.disks.push_back({"chrys-tools", dir_ + "/tools.erofs", true});
  json create = vmm.BuildVmConfig(spec);
  EXPECT_TRUE(Validator().ValidateNamed("VmConfig", create).empty())
      << Joined(Validator().ValidateNamed("VmConfig", create));
  EXPECT_TRUE(create["memory"]["shared"].get<bool>());
  EXPECT_TRUE(create["memory"]["hugepages"].get<bool>());
  ASSERT_EQ(create["disks"].size(), 1u);
  EXPECT_EQ(create["disks"][0]["serial"], "chrys-tools");
  EXPECT_EQ(create["disks"][0]["readonly"], true);
  EXPECT_TRUE(Validator().ValidateNamed("FsConfig", CloudHypervisorVmm::BuildFsConfig(spec, 0)).empty());
  EXPECT_TRUE(Validator().ValidateNamed("DiskConfig", CloudHypervisorVmm::BuildDiskConfig({"s", "/x", false})).empty());
  VmLaunchSpec disk_boot = Spec();
  disk_boot.disk_path = dir_ + "/layer.erofs";
  disk_boot.firmware_path = "/usr/share/OVMF/OVMF_CODE.fd";
  disk_boot.disks.push_back({"chrys-tools", dir_ + "/tools.erofs", true});
  json disk_boot_config = vmm.BuildVmConfig(disk_boot);
  auto errors = Validator().ValidateNamed("VmConfig", disk_boot_config);
  EXPECT_TRUE(errors.empty()) << Joined(errors);
  ASSERT_EQ(disk_boot_config["disks"].size(), 2u) << "the boot disk, then the boot-time disks";
  EXPECT_EQ(disk_boot_config["disks"][0]["id"], "bootdisk");
}

TEST(OpenApiValidatorTest, RejectsBodiesThatViolateTheSchema) {
  const auto& v = Validator();
  EXPECT_FALSE(v.ValidateNamed("VmConfig", json::object()).empty()) << "payload is required";
  EXPECT_FALSE(v.ValidateNamed("VmConfig", {{"payload", json::object()}, {"cpus", {{"boot_vcpus", 1}}}}).empty())
      << "max_vcpus is required";
  EXPECT_FALSE(v.ValidateNamed("VmConfig", {{"payload", json::object()}, {"memory", {{"size", "1G"}}}}).empty())
      << "size must be an integer";
  EXPECT_FALSE(v.ValidateNamed("VmConfig", {{"payload", json::object()}, {"bogus", 1}}).empty())
      << "undeclared property";
  EXPECT_FALSE(v.ValidateNamed("VmConfig", {{"payload", json::object()}, {"serial", {{"mode", "Logfile"}}}}).empty())
      << "enum";
  EXPECT_FALSE(v.ValidateNamed("NetConfig", {{"pci_segment", 70000}}).empty()) << "int16 range";
  EXPECT_FALSE(v.ValidateNamed("NetConfig", {{"fds", json::array({3, 4})}}).empty())
      << "fds are not part of NetConfig in v53: they travel as SCM_RIGHTS";
  EXPECT_FALSE(v.ValidateNamed("CpusConfig", {{"boot_vcpus", 0}, {"max_vcpus", 1}}).empty()) << "minimum";
  EXPECT_FALSE(
      v.ValidateNamed("VmConfig", {{"payload", json::object()}, {"disks", json::array({{{"path", 7}}})}}).empty())
      << "array items through $ref";
  EXPECT_FALSE(v.ValidateNamed("VsockConfig", {{"cid", 2}, {"socket", "/x"}}).empty()) << "cid minimum 3";
  EXPECT_TRUE(v.ValidateNamed("VmRemoveDevice", {{"id", "disk-x"}}).empty());
  EXPECT_TRUE(v.ValidateNamed("VmCounters", {{"net0", {{"rx_bytes", 5}}}}).empty());
  EXPECT_FALSE(v.ValidateNamed("VmCounters", {{"net0", {{"rx_bytes", "x"}}}}).empty()) << "additionalProperties";
}

TEST_F(CloudHypervisorTest, CreateRejectedLeavesNothing) {
  CloudHypervisorVmm vmm(Config("create-500"));
  auto started = vmm.Start(Spec());
  ASSERT_FALSE(started.ok());
  EXPECT_NE(started.error().message().find("fake failure"), std::string::npos) << started.error().message();
  EXPECT_FALSE(vmm.Alive());
  EXPECT_FALSE(ProcessRunning(vmm.process_state().pid));
  EXPECT_NE(::access((dir_ + "/run/ch-api.sock").c_str(), F_OK), 0);
}

TEST_F(CloudHypervisorTest, VmmDyingDuringBootIsAnError) {
  CloudHypervisorVmm vmm(Config("die-on-boot"));
  auto started = vmm.Start(Spec());
  ASSERT_FALSE(started.ok());
  EXPECT_NE(started.error().message().find("vm.boot"), std::string::npos) << started.error().message();
  EXPECT_FALSE(ProcessRunning(vmm.process_state().pid));
  EXPECT_NE(::access((dir_ + "/run/ch-api.sock").c_str(), F_OK), 0);
}

TEST_F(CloudHypervisorTest, GarbageFromTheApiIsAnError) {
  CloudHypervisorVmm vmm(Config("garbage-info"));
  ASSERT_TRUE(vmm.Start(Spec()).ok());
  auto info = vmm.Info();
  ASSERT_FALSE(info.ok());
  EXPECT_NE(info.error().message().find("vm.info"), std::string::npos) << info.error().message();
  ASSERT_TRUE(vmm.Kill().ok());
  EXPECT_FALSE(ProcessRunning(vmm.process_state().pid));
}

TEST_F(CloudHypervisorTest, HotplugWithUnreadableAnswerIsRolledBack) {
  CloudHypervisorVmm vmm(Config("garbage-add-disk"));
  ASSERT_TRUE(vmm.Start(Spec()).ok());
  auto plugged = vmm.HotplugDisk({"layer9", dir_ + "/layer.erofs", true}, 5s);
  ASSERT_FALSE(plugged.ok());
  EXPECT_TRUE(vmm.process_state().plugged_disks.empty());
  auto requests = Requests();
  ASSERT_FALSE(requests.empty());
  EXPECT_EQ(requests.back()["path"], "/api/v1/vm.remove-device");
  EXPECT_EQ(json::parse(requests.back()["body"].get<std::string>())["id"], "disk-layer9");
  ASSERT_TRUE(vmm.Shutdown(false, 1s).ok());
  ExpectAllBodiesValid();
}

TEST(HttpResponseTest, ParsesAndRejects) {
  bool complete = false;
  auto ok = ParseHttpResponse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", complete);
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(complete);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(ok->body, "{}");
  auto partial = ParseHttpResponse("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nab", complete);
  ASSERT_TRUE(partial.ok());
  EXPECT_FALSE(complete);
  EXPECT_FALSE(ParseHttpResponse("garbage garbage\r\n\r\n", complete).ok());
  EXPECT_FALSE(ParseHttpResponse("HTTP/1.1 2x0 OK\r\n\r\n", complete).ok());
  EXPECT_FALSE(ParseHttpResponse("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", complete).ok());
  EXPECT_FALSE(ParseHttpResponse("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", complete).ok());
}

}  // namespace
}  // namespace chrys::runtime
