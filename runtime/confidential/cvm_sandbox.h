// CvmVmm: the Vmm of confidential pods — boots the HAL disk image (CvmLaunch argv) and drives it with QemuVmm.
#pragma once

#include <memory>
#include <string>

#include "base/result.h"
#include "runtime/confidential/cvm_launch.h"
#include "runtime/qemu.h"
#include "runtime/vmm.h"

namespace chrys::runtime::confidential {

// What chrysd decided for one confidential pod before its VM starts. Written by the CRI as
// <plans_dir>/<sandbox_id>/plan.json; its presence is what makes a QEMU sandbox boot the HAL disk.
struct CvmPlan {
  TeeKind tee = TeeKind::kNone;
  std::string disk_image;     // the shared, read-only HAL disk.img (raw); never written by a VM
  std::string vm_dir;         // this VM's files: the copy-on-write overlay and the OVMF vars copy
  std::string ovmf_code;      // plain disk boot: read-only pflash
  std::string ovmf_vars;      // template copied to vm_dir for each VM
  std::string firmware_bios;  // SEV-SNP without IGVM / TDX: -bios
  std::string igvm_file;
  std::string env_share_dir;    // 9P env_share -> /etc/cocos (agent.json, init.conf)
  std::string certs_share_dir;  // 9P certs_share -> /etc/certs
  int min_memory_mib = 1024;    // the HAL guest formats /cocos and runs a generic kernel
  int boot_timeout_seconds = 300;
  std::string qemu_img = "qemu-img";
};

base::Result<CvmPlan> LoadCvmPlan(const std::string& path);
base::Status SaveCvmPlan(const CvmPlan& plan, const std::string& path);
TeeKind TeeKindFromName(const std::string& name);  // "none" (anything unknown), "sev-snp", "tdx"

// The plan file of a sandbox under `plans_dir`.
std::string CvmPlanPath(const std::string& plans_dir, const std::string& sandbox_id);

// The launch configuration of `plan` for a sandbox spec (pure): tap queues become fds 3, 4, ... in the
// order of spec.interfaces, the agent channel is the virtio-serial port behind <run_dir>/agent.sock, QMP is
// <run_dir>/qmp.sock (the paths QemuVmm uses, so its control and cleanup code applies unchanged).
CvmLaunchConfig CvmLaunchConfigFor(const CvmPlan& plan, const VmLaunchSpec& spec, const std::string& qemu_binary,
                                   const std::string& accel);

class CvmVmm : public Vmm {
 public:
  CvmVmm(QemuConfig qemu, CvmPlan plan);
  ~CvmVmm() override;

  VmmKind kind() const override { return VmmKind::kQemu; }
  // Creates the overlay (qemu-img create -f qcow2 -b disk.img -F raw) and the vars copy, starts QEMU with the
  // CvmLaunch argv, then attaches a QemuVmm to it (the adoption path: pid, start time, binary, QMP).
  base::Status Start(const VmLaunchSpec& spec) override;
  // Waits at least the plan's boot timeout: a HAL disk boot under TCG takes tens of seconds.
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
  const VmmProcessState& process_state() const override;
  AgentEndpoint agent_endpoint() const override;
  base::Result<std::vector<std::string>> CommandLine(const VmLaunchSpec& spec) const override;

  std::string OverlayPath() const { return plan_.vm_dir + "/disk.qcow2"; }
  std::string VarsPath() const { return plan_.vm_dir + "/OVMF_VARS.fd"; }

 private:
  base::Status PrepareDisk();
  // Removes the overlay and the vars copy (the VM is gone).
  base::Status RemoveVmFiles();

  QemuConfig qemu_;
  CvmPlan plan_;
  VmmProcessState empty_state_;
  std::unique_ptr<QemuVmm> qemu_vmm_;
};

// The Vmm chrysd's factory returns for QEMU sandboxes: a CvmVmm when a plan exists for the sandbox (Start,
// Adopt), otherwise a plain QemuVmm. The factory only knows the VMM kind; the plan file carries the rest.
std::unique_ptr<Vmm> MakeQemuOrCvmVmm(QemuConfig qemu, std::string plans_dir);

}  // namespace chrys::runtime::confidential
