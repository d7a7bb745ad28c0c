// CloudHypervisorVmm: the Vmm driver for Cloud Hypervisor, driven through its REST API (vm.create, vm.boot,
// vm.add-net with tap fds, vm.add-disk/remove-device, vm.power-button, vm.info, vmm.shutdown).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/cgroup.h"
#include "runtime/ch_api.h"
#include "runtime/process.h"
#include "runtime/vmm.h"

namespace chrys::runtime {

struct CloudHypervisorConfig {
  std::string binary = "/usr/bin/cloud-hypervisor";
  std::string virtiofsd_binary = "/usr/lib/qemu/virtiofsd";
  std::chrono::milliseconds api_timeout{std::chrono::seconds(10)};
  std::chrono::milliseconds ping_timeout{std::chrono::seconds(10)};
  int net_queue_size = 256;
  bool net_offloads = true;
  bool balloon = true;                              // size 0, deflate on OOM, free page reporting
  std::vector<CgroupHierarchy> cgroup_hierarchies;  // empty: discover
  bool place_in_cgroup = true;
  // Extra environment-independent arguments appended to the launch command line (tests use this for fakes).
  std::vector<std::string> extra_args;
};

// True when the binary exists and is executable (the other half of the handler choice is the KVM probe).
bool CloudHypervisorAvailable(const CloudHypervisorConfig& config);

class CloudHypervisorVmm : public Vmm {
 public:
  explicit CloudHypervisorVmm(CloudHypervisorConfig config);
  ~CloudHypervisorVmm() override;

  VmmKind kind() const override { return VmmKind::kCloudHypervisor; }
  base::Status Start(const VmLaunchSpec& spec) override;
  base::Status WaitReady(const ReadinessCheck& check, std::chrono::milliseconds timeout) override;
  base::Status HotplugDisk(const DiskSpec& disk, std::chrono::milliseconds timeout) override;
  base::Status UnplugDisk(const std::string& serial, std::chrono::milliseconds timeout) override;
  base::Status HotplugNic(const NetInterfaceSpec& nic, std::chrono::milliseconds timeout) override;
  base::Status Grow(int vcpus, int memory_mib, std::chrono::milliseconds timeout) override;
  base::Status Rehome(const VmLaunchSpec& target) override;
  base::Status SaveState(const std::string& state_path, std::chrono::milliseconds timeout) override;
  base::Status Shutdown(bool graceful, std::chrono::milliseconds timeout) override;
  base::Status Kill() override;
  base::Result<VmInfo> Info() override;
  base::Status Adopt(const VmmProcessState& state, const VmLaunchSpec& spec) override;
  bool Alive() const override;
  const VmmProcessState& process_state() const override { return state_; }
  AgentEndpoint agent_endpoint() const override { return state_.agent; }
  base::Result<std::vector<std::string>> CommandLine(const VmLaunchSpec& spec) const override;

  // Request bodies, exposed for schema tests.
  nlohmann::json BuildVmConfig(const VmLaunchSpec& spec) const;
  nlohmann::json BuildNetConfig(const VmLaunchSpec& spec, size_t index) const;
  static nlohmann::json BuildDiskConfig(const DiskSpec& disk);
  static nlohmann::json BuildFsConfig(const VmLaunchSpec& spec, size_t index);

  static std::string ApiSocketPath(const VmLaunchSpec& spec) { return spec.run_dir + "/ch-api.sock"; }
  static std::string VsockSocketPath(const VmLaunchSpec& spec) { return spec.run_dir + "/agent.vsock"; }
  static std::string FsSocketPath(const VmLaunchSpec& spec, size_t i) {
    return spec.run_dir + "/fs" + std::to_string(i) + ".sock";
  }
  static std::string VmmLogPath(const VmLaunchSpec& spec) { return spec.run_dir + "/vmm.log"; }

 private:
  std::vector<std::string> BuildCommandLine(const VmLaunchSpec& spec) const;
  base::Status Cleanup();
  base::Error Failure(const std::string& what);

  CloudHypervisorConfig config_;
  VmLaunchSpec spec_;
  VmmProcessState state_;
  DetachedProcess process_;
  std::vector<DetachedProcess> helpers_;
  std::unique_ptr<ChApiClient> api_;
  VmmCgroup cgroup_;
};

}  // namespace chrys::runtime
