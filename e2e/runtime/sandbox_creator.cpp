// chrys_sandbox_creator: plays chrysd for the adoption e2e test — creates one sandbox, prints READY, then waits
// to be killed. Usage: state_dir run_dir kernel initramfs id netns_path cgroup_parent
#include <unistd.h>

#include <iostream>

#include "e2e/runtime/test_guest.h"
#include "runtime/qemu.h"
#include "runtime/sandbox.h"

int main(int argc, char** argv) {
  using namespace chrys::runtime;
  if (argc != 8) {
    std::cerr << "usage: " << argv[0] << " state_dir run_dir kernel initramfs id netns cgroup_parent\n";
    return 2;
  }
  SandboxManagerOptions o;
  o.state_dir = argv[1];
  o.run_dir = argv[2];
  o.kernel_path = argv[3];
  o.initramfs_path = argv[4];
  o.kernel_cmdline = "console=ttyS0 panic=-1 quiet";
  o.sizing.default_memory_mib = 256;
  o.sizing.overhead_memory_mib = 0;
  o.boot_timeout = std::chrono::seconds(90);
  o.agent = std::make_shared<testing::LineAgentConnector>();
  o.vmm_factory = [](VmmKind) -> chrys::base::Result<std::unique_ptr<Vmm>> {
    QemuConfig c;
    c.accel_cache_path = "";
    c.hotplug_ports = 4;
    return std::unique_ptr<Vmm>(std::make_unique<QemuVmm>(c));
  };
  SandboxManager manager(o);
  auto recovered = manager.Recover();
  if (!recovered.ok()) {
    std::cout << "ERROR " << recovered.error().message() << std::endl;
    return 1;
  }
  auto taps = testing::OpenTapQueues(argv[6], "tap1", 1);
  if (!taps.ok()) {
    std::cout << "ERROR " << taps.error().message() << std::endl;
    return 1;
  }
  SandboxRequest req;
  req.id = argv[5];
  req.handler = "chrysalis-qemu";
  req.netns_path = argv[6];
  req.cgroup_parent = argv[7];
  req.interfaces.push_back({{(*taps)[0].get()}, "02:00:00:aa:bb:02", 1500});
  auto created = manager.Create(req);
  if (!created.ok()) {
    std::cout << "ERROR " << created.error().message() << std::endl;
    return 1;
  }
  std::cout << "READY " << created->vmm_pid << std::endl;
  while (true) {
    ::pause();
  }
}
