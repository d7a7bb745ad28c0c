// The sandbox with the real guest (chrys-agent image from guest/image) and, when netcni is built, a tap link from
// netcni: agent ready over gRPC, layer + scratch disks hot-plugged, a container run from the layer, stop.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "e2e/runtime/test_guest.h"
#include "runtime/cgroup.h"
#include "runtime/grpc_agent_connector.h"
#include "runtime/guest_manifest.h"
#include "runtime/qemu.h"
#include "runtime/sandbox.h"
#ifdef CHRYS_HAVE_NETCNI
#include "netcni/tap_link.h"
#endif

#ifndef CHRYS_GUEST_IMAGE_DIR
#error "CHRYS_GUEST_IMAGE_DIR must name the build-tree guest image directory"
#endif

namespace chrys::runtime {
namespace {

using namespace std::chrono_literals;
namespace v1 = ::chrys::agent::v1;

bool Exists(const std::string& p) {
  return ::access(p.c_str(), F_OK) == 0;
}

void RunOrFail(const std::vector<std::string>& argv) {
  base::CommandSpec spec;
  spec.argv = argv;
  auto r = base::RunCommand(spec);
  ASSERT_TRUE(r.ok() && r->success()) << argv[0] << " " << argv[1] << ": "
                                      << (r.ok() ? r->stderr_data : r.error().message());
}

TEST(RealGuestE2eTest, AgentReadyHotplugRunContainerStop) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root";
  }
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  auto guest = ReadGuestManifest(CHRYS_GUEST_IMAGE_DIR);
  ASSERT_TRUE(guest.ok()) << "build the guest-image target first: " << guest.error().message();
  std::string tag = "rg" + std::to_string(::getpid());
  std::string root = "/tmp/" + tag;
  ASSERT_TRUE(base::MakeDirs(root).ok());
  const std::string& netns = tag;
  RunOrFail({"ip", "netns", "add", netns});
  struct Cleanup {
    std::string netns, root;
    ~Cleanup() {
      base::CommandSpec del;
      del.argv = {"ip", "netns", "delete", netns};
      (void)base::RunCommand(del);
      (void)base::RemoveTree(root);
    }
  } cleanup{netns, root};

  std::vector<base::UniqueFd> queues;
  std::string mac = "02:00:00:aa:bb:03";
#ifdef CHRYS_HAVE_NETCNI
  // The pod side of a CNI result: a veth named eth0 in the netns; netcni wires the tap to it.
  RunOrFail({"ip", "-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"});
  RunOrFail({"ip", "-n", netns, "link", "set", "eth0", "up"});
  base::UniqueFd ns_fd(::open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(ns_fd.valid());
  auto link = netcni::TapLink::Create(ns_fd.get(), {"eth0", "tap0", 1});
  ASSERT_TRUE(link.ok()) << link.error().message();
  mac = link->guest_mac();
  queues = link->TakeQueueFds();
#else
  auto opened = testing::OpenTapQueues("/run/netns/" + netns, "tap0", 1);
  ASSERT_TRUE(opened.ok()) << opened.error().message();
  queues = std::move(opened).value();
#endif

  auto connector = std::make_shared<GrpcAgentConnector>();
  SandboxManagerOptions o;
  o.state_dir = root + "/state";
  o.run_dir = root + "/run";
  o.kernel_path = guest->kernel;
  o.initramfs_path = guest->initramfs;
  o.kernel_cmdline = guest->cmdline;
  ASSERT_TRUE(guest->tools_disk.has_value()) << "the guest image has no tools disk";
  o.boot_disks = {*guest->tools_disk};
  o.sizing.default_memory_mib = 512;
  o.sizing.overhead_memory_mib = 0;
  o.boot_timeout = 180s;
  o.agent = connector;
  o.vmm_factory = [](VmmKind) -> base::Result<std::unique_ptr<Vmm>> {
    QemuConfig c;
    c.accel_cache_path = "";
    return std::unique_ptr<Vmm>(std::make_unique<QemuVmm>(c));
  };
  SandboxManager manager(o);
  ASSERT_TRUE(manager.Recover().ok());
  SandboxRequest req;
  req.id = tag + "-s";
  req.handler = "chrysalis-qemu";
  req.netns_path = "/run/netns/" + netns;
  req.cgroup_parent = "chrys-e2e-" + tag;
  std::vector<int> fds;
  fds.reserve(queues.size());
  for (auto& q : queues) {
    fds.push_back(q.get());
  }
  req.interfaces.push_back({fds, mac, 1500});
  auto created = manager.Create(req);
  ASSERT_TRUE(created.ok()) << created.error().message();
  auto client = connector->Client(req.id);
  ASSERT_TRUE(client);
  auto pong = client->Ping(5s);
  ASSERT_TRUE(pong.ok()) << pong.error().message();
  EXPECT_TRUE(pong->ready());

  // A layer holding a static busybox, and a scratch disk for the overlay upper.
  auto busybox = base::ReadFile("/bin/busybox", 8 << 20);
  ASSERT_TRUE(busybox.ok());
  auto layer = testing::BuildErofsImage(root, "layer", {{"bin/busybox", *busybox}});
  ASSERT_TRUE(layer.ok()) << layer.error().message();
  ASSERT_TRUE(manager.AttachLayerDisk(req.id, "lyr0", *layer).ok());
  auto scratch = manager.AttachScratchDisk(req.id, "scr0", 64 << 20);
  ASSERT_TRUE(scratch.ok()) << scratch.error().message();

  v1::ContainerConfig config;
  config.set_id("c1");
  config.mutable_rootfs()->add_layer_serials("lyr0");
  config.mutable_rootfs()->set_scratch_serial("scr0");
  for (const char* arg : {"/bin/busybox", "sh", "-c", "echo hello-from-container; /bin/busybox cat /proc/1/comm"}) {
    config.mutable_process()->add_args(arg);
  }
  auto pid = client->CreateContainer(config);
  ASSERT_TRUE(pid.ok()) << pid.error().message() << "\nconsole:\n" << ConsoleTail(created->console_log_path);
  v1::ProcessRef ref;
  ref.set_container_id("c1");
  std::string out;
  ASSERT_TRUE(client->StartContainer("c1").ok());
  auto read = client->ReadOutput(
      ref,
      [&](v1::OutputChunk::Stream, std::string_view data) {
        out.append(data);
        return true;
      },
      60s);
  EXPECT_TRUE(read.ok()) << read.error().message();
  auto exit = client->WaitProcess(ref, 60s);
  ASSERT_TRUE(exit.ok()) << exit.error().message();
  EXPECT_EQ(exit->exit_code(), 0);
  EXPECT_NE(out.find("hello-from-container"), std::string::npos) << out;
  EXPECT_TRUE(client->DeleteContainer("c1", true).ok());

  pid_t vmm = created->vmm_pid;
  auto stopped = manager.Stop(req.id);
  ASSERT_TRUE(stopped.ok()) << stopped.error().message();
  EXPECT_FALSE(ProcessRunning(vmm));
  EXPECT_FALSE(Exists(o.run_dir + "/" + req.id));
  EXPECT_FALSE(Exists(*scratch));
  auto hierarchies = DiscoverCgroupHierarchies();
  ASSERT_TRUE(hierarchies.ok());
  for (const auto& h : *hierarchies) {
    EXPECT_FALSE(Exists(h.mount_point + "/" + req.cgroup_parent));
  }
}

}  // namespace
}  // namespace chrys::runtime
