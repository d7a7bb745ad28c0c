// CvmLaunch: builds the QEMU argument vector that boots the disk-backed HAL image (plain, SEV-SNP or TDX).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"

namespace chrys::runtime::confidential {

// Which trusted execution environment protects the guest. kNone is the same disk boot without a TEE
// (handler chrysalis-cvm), which is what runs on machines without SEV-SNP or TDX and under TCG.
enum class TeeKind { kNone, kSevSnp, kTdx };

// kDisk: firmware -> GRUB on the ESP -> kernel/initramfs (roothash= in grub.cfg, not measured).
// kMeasuredDirect: QEMU loads kernel, initramfs and command line (with roothash=) itself, so that with
// SEV-SNP kernel-hashes=on (or TDX's TDVF measurement) the root hash is part of the launch measurement.
enum class BootMode { kDisk, kMeasuredDirect };

const char* TeeKindName(TeeKind tee);

// One guest NIC. Either a user-mode netdev (the seed's examples; `host_forwards` such as "tcp::7020-:7002")
// or a TAP device created by the pod network (by name, or an inherited fd).
struct CvmNic {
  std::string id;  // netdev id, e.g. "vmnic"
  enum class Kind { kUser, kTap } kind = Kind::kTap;
  std::vector<std::string> host_forwards;
  std::string tap_name;
  int tap_fd = -1;
  // A multi-queue tap: the fds of its queues as QEMU sees them (fds=3:4:...); takes precedence over tap_fd.
  std::vector<int> tap_queue_fds;
  std::string mac;  // empty: QEMU picks one
};

struct CvmLaunchConfig {
  TeeKind tee = TeeKind::kNone;
  BootMode boot = BootMode::kDisk;
  std::string qemu_binary = "qemu-system-x86_64";
  // "kvm" (emitted as -enable-kvm, as in the seed) or "tcg". A TEE needs kvm.
  std::string accel = "kvm";
  // Empty picks the TEE's model: EPYC-v4 for SEV-SNP, host for TDX, host (kvm) / max (tcg) otherwise.
  std::string cpu_model;
  int vcpus = 1;
  uint64_t memory_mib = 1024;
  uint64_t max_memory_mib = 0;  // with memory_slots: memory hot-plug headroom (-m N,slots=S,maxmem=M)
  int memory_slots = 0;

  // The HAL disk image (raw). It is attached as virtio-scsi + scsi-hd so the guest sees /dev/sda.
  std::string disk_image;
  // "raw" for disk.img itself; "qcow2" for a per-VM copy-on-write overlay backed by it.
  std::string disk_format = "raw";

  // Firmware. Plain: OVMF code as a read-only pflash plus this VM's own copy of the vars store.
  // SEV-SNP: `igvm_file` when set (firmware inside the IGVM), otherwise `firmware_bios` (-bios, stateless
  // OVMF). TDX: `firmware_bios` (-bios OVMF/TDVF).
  std::string ovmf_code;
  std::string ovmf_vars;  // per-VM copy: the caller copies OVMF_VARS for each VM, never shares one
  std::string firmware_bios;
  std::string igvm_file;

  // SEV-SNP guest policy knobs of the seed.
  int sev_cbitpos = 51;
  int sev_reduced_phys_bits = 1;
  // TDX quote generation service reached over vsock (the seed: cid 2, port 4050).
  uint32_t tdx_quote_vsock_cid = 2;
  uint32_t tdx_quote_vsock_port = 4050;

  // Measured direct boot: kernel, initramfs, the verity root hash and extra command line words.
  std::string kernel;
  std::string initrd;
  std::string roothash;
  std::string extra_cmdline;

  std::vector<CvmNic> nics;
  uint32_t vsock_guest_cid = 0;  // > 2 adds vhost-vsock-pci (agent channel; TDX seed uses 6)
  // Where /dev/vhost-vsock is missing, the agent channel is a virtio-serial port (named `agent_port_name`)
  // backed by this host unix socket; empty adds none.
  std::string agent_serial_socket;
  std::string agent_port_name = "chrys.agent";

  // The two 9P shares chrysd fills per pod: agent configuration (env_share -> /etc/cocos) and TLS
  // material (certs_share -> /etc/certs). Both are required.
  std::string env_share_dir;
  std::string certs_share_dir;

  // Console and control. `serial` is a QEMU chardev spec ("mon:stdio", "file:/run/.../console.log");
  // empty leaves QEMU's default. `nographic` as in the seed; otherwise -display none.
  std::string serial;
  bool nographic = false;
  bool nodefaults = false;
  bool no_reboot = true;
  std::vector<std::string> monitors;  // e.g. "pty", "unix:monitor,server,nowait"
  std::string qmp_socket;             // adds -qmp unix:PATH,server=on,wait=off
};

// The kernel command line of the HAL initramfs: serial console and the verity root hash. Also the text
// grub.cfg carries for disk boot, so both boot modes hand the initramfs the same parameters.
std::string HalKernelCommandLine(const std::string& roothash, const std::string& extra);

// Checks the configuration (required files per TEE and boot mode, sane sizes, well-formed root hash) and
// returns the full argv, argv[0] being the QEMU binary. Pure: touches no file.
base::Result<std::vector<std::string>> BuildCvmQemuArgs(const CvmLaunchConfig& config);

// "8G" when the size is a whole number of GiB, else "NM": the spelling the seed uses.
std::string QemuMemorySize(uint64_t mib);

}  // namespace chrys::runtime::confidential
