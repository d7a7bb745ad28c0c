#include "runtime/confidential/cvm_launch.h"

#include <algorithm>
#include <set>

#include "runtime/qemu_cpu.h"

namespace chrys::runtime::confidential {

namespace {

using base::InvalidArgument;
using base::Result;
using base::Status;

constexpr const char* kVirtioFlags = "disable-legacy=on,iommu_platform=true";

// QEMU option values use ',' as separator; a literal comma is written twice.
std::string QemuEscape(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    out.push_back(c);
    if (c == ',') {
      out.push_back(',');
    }
  }
  return out;
}

bool IsLowerHex(const std::string& text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool IsSimpleId(const std::string& id) {
  if (id.empty() || id.size() > 32) {
    return false;
  }
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

Status Validate(const CvmLaunchConfig& c) {
  if (c.qemu_binary.empty()) {
    return InvalidArgument("qemu_binary is empty");
  }
  if (c.accel != "kvm" && c.accel != "tcg") {
    return InvalidArgument("accel must be \"kvm\" or \"tcg\", got \"" + c.accel + "\"");
  }
  if (c.tee != TeeKind::kNone && c.accel != "kvm") {
    return InvalidArgument(std::string(TeeKindName(c.tee)) + " guests need KVM (accel=kvm); TCG cannot run a TEE");
  }
  if (c.vcpus < 1 || c.vcpus > 512) {
    return InvalidArgument("vcpus must be between 1 and 512, got " + std::to_string(c.vcpus));
  }
  if (c.memory_mib < 128) {
    return InvalidArgument("memory_mib must be at least 128, got " + std::to_string(c.memory_mib));
  }
  if ((c.max_memory_mib != 0) != (c.memory_slots != 0)) {
    return InvalidArgument("max_memory_mib and memory_slots go together (both set or both 0)");
  }
  if (c.max_memory_mib != 0 && c.max_memory_mib < c.memory_mib) {
    return InvalidArgument("max_memory_mib is smaller than memory_mib");
  }
  if (c.disk_format != "raw" && c.disk_format != "qcow2") {
    return InvalidArgument("disk_format must be raw or qcow2, not \"" + c.disk_format + "\"");
  }
  if (c.disk_image.empty()) {
    return InvalidArgument("disk_image is required: the verified root and the /cocos partition live on it");
  }
  if (c.env_share_dir.empty() || c.certs_share_dir.empty()) {
    return InvalidArgument(
        "env_share_dir and certs_share_dir are required (the agent's configuration and TLS "
        "material reach the guest only through them)");
  }
  switch (c.tee) {
    case TeeKind::kNone:
      if (c.boot == BootMode::kDisk && (c.ovmf_code.empty() || c.ovmf_vars.empty())) {
        return InvalidArgument("disk boot needs ovmf_code and a per-VM ovmf_vars copy");
      }
      if (c.ovmf_code.empty() != c.ovmf_vars.empty()) {
        return InvalidArgument("ovmf_code and ovmf_vars go together");
      }
      break;
    case TeeKind::kSevSnp:
      if (c.igvm_file.empty() && c.firmware_bios.empty()) {
        return InvalidArgument("SEV-SNP needs an IGVM file (igvm_file) or an SNP-capable OVMF (firmware_bios)");
      }
      if (c.sev_cbitpos < 32 || c.sev_cbitpos > 63 || c.sev_reduced_phys_bits < 0 || c.sev_reduced_phys_bits > 63) {
        return InvalidArgument("sev_cbitpos must be 32..63 and sev_reduced_phys_bits 0..63");
      }
      break;
    case TeeKind::kTdx:
      if (c.firmware_bios.empty()) {
        return InvalidArgument("TDX needs a TDVF/OVMF image (firmware_bios)");
      }
      break;
  }
  if (c.boot == BootMode::kMeasuredDirect) {
    if (c.kernel.empty() || c.initrd.empty()) {
      return InvalidArgument("measured direct boot needs kernel and initrd");
    }
    if (c.roothash.size() != 64 || !IsLowerHex(c.roothash)) {
      return InvalidArgument("roothash must be 64 lower-case hex digits (sha256 dm-verity root hash)");
    }
  }
  if (c.extra_cmdline.find("roothash=") != std::string::npos) {
    return InvalidArgument("extra_cmdline must not carry roothash=: it comes from the roothash field only");
  }
  std::set<std::string> ids;
  for (const CvmNic& nic : c.nics) {
    if (!IsSimpleId(nic.id)) {
      return InvalidArgument("nic id \"" + nic.id + "\" must be 1-32 characters of [A-Za-z0-9_-]");
    }
    if (!ids.insert(nic.id).second) {
      return InvalidArgument("duplicate nic id \"" + nic.id + "\"");
    }
    if (nic.kind == CvmNic::Kind::kTap && nic.tap_name.empty() && nic.tap_fd < 0 && nic.tap_queue_fds.empty()) {
      return InvalidArgument("tap nic \"" + nic.id + "\" needs tap_name or tap_fd");
    }
  }
  if (!c.agent_serial_socket.empty() && !IsSimpleId(c.agent_port_name.substr(0, c.agent_port_name.find('.')))) {
    return InvalidArgument("agent_port_name must be a simple name such as chrys.agent");
  }
  if (c.vsock_guest_cid != 0 && c.vsock_guest_cid < 3) {
    return InvalidArgument("vsock_guest_cid must be >= 3 (0, 1 and 2 are reserved)");
  }
  return Status::Ok();
}

// Accumulates the argument vector; each Add* appends one logical group.
class Args {
 public:
  explicit Args(const CvmLaunchConfig& c) : c_(c) { argv_.push_back(c.qemu_binary); }

  void Flag(const std::string& flag) { argv_.push_back(flag); }
  void Opt(const std::string& flag, const std::string& value) {
    argv_.push_back(flag);
    argv_.push_back(value);
  }

  void Accel() {
    if (c_.accel == "kvm") {
      Flag("-enable-kvm");
    } else {
      Opt("-accel", "tcg");
    }
  }

  void Cpu(const std::string& tee_default) {
    std::string model = c_.cpu_model;
    if (model.empty()) {
      model = !tee_default.empty() ? tee_default : (c_.accel == "kvm" ? "host" : kTcgCpuModel);
    }
    Opt("-cpu", model);
  }

  void Memory() {
    std::string value = QemuMemorySize(c_.memory_mib);
    if (c_.memory_slots != 0) {
      value += ",slots=" + std::to_string(c_.memory_slots) + ",maxmem=" + QemuMemorySize(c_.max_memory_mib);
    }
    Opt("-m", value);
  }

  // SEV-SNP / plain spelling "-smp 16,sockets=1,threads=1"; TDX spelling "-smp cores=16,sockets=1,threads=1".
  void Smp(bool cores_form) {
    std::string n = std::to_string(c_.vcpus);
    Opt("-smp", (cores_form ? "cores=" + n : n) + ",sockets=1,threads=1");
  }

  void NicNetdev(const CvmNic& nic) {
    std::string value;
    if (nic.kind == CvmNic::Kind::kUser) {
      value = "user,id=" + nic.id;
      for (const std::string& fwd : nic.host_forwards) {
        value += ",hostfwd=" + QemuEscape(fwd);
      }
    } else if (!nic.tap_queue_fds.empty()) {
      std::string fds;
      for (int fd : nic.tap_queue_fds) {
        fds += (fds.empty() ? "" : ":") + std::to_string(fd);
      }
      value = "tap,id=" + nic.id + ",fds=" + fds + ",vhost=off";
    } else if (nic.tap_fd >= 0) {
      value = "tap,id=" + nic.id + ",fd=" + std::to_string(nic.tap_fd);
    } else {
      value = "tap,id=" + nic.id + ",ifname=" + QemuEscape(nic.tap_name) + ",script=no,downscript=no";
    }
    Opt("-netdev", value);
  }

  void NicDevice(const CvmNic& nic) {
    std::string value = std::string("virtio-net-pci,") + kVirtioFlags + ",netdev=" + nic.id + ",romfile=";
    if (!nic.mac.empty()) {
      value += ",mac=" + nic.mac;
    }
    if (nic.tap_queue_fds.size() > 1) {
      value += ",mq=on,vectors=" + std::to_string(2 * nic.tap_queue_fds.size() + 2);
    }
    Opt("-device", value);
  }

  void Nics(bool device_first) {
    for (const CvmNic& nic : c_.nics) {
      if (device_first) {
        NicDevice(nic);
        NicNetdev(nic);
      } else {
        NicNetdev(nic);
        NicDevice(nic);
      }
    }
  }

  void Disk() {
    Opt("-drive", "file=" + QemuEscape(c_.disk_image) + ",if=none,id=disk0,format=" + c_.disk_format);
    Opt("-device", std::string("virtio-scsi-pci,id=scsi0,") + kVirtioFlags);
    Opt("-device", "scsi-hd,drive=disk0,bus=scsi0.0");
  }

  void Pflash() {
    if (c_.ovmf_code.empty()) {
      return;
    }
    Opt("-drive", "if=pflash,format=raw,unit=0,file=" + QemuEscape(c_.ovmf_code) + ",readonly=on");
    Opt("-drive", "if=pflash,format=raw,unit=1,file=" + QemuEscape(c_.ovmf_vars));
  }

  void DirectBoot() {
    if (c_.boot != BootMode::kMeasuredDirect) {
      return;
    }
    Opt("-kernel", c_.kernel);
    Opt("-initrd", c_.initrd);
    Opt("-append", HalKernelCommandLine(c_.roothash, c_.extra_cmdline));
  }

  void Display() {
    if (c_.nographic) {
      Flag("-nographic");
    } else {
      Opt("-display", "none");
    }
  }
  void NoDefaults() {
    if (c_.nodefaults) {
      Flag("-nodefaults");
    }
  }
  void NoReboot() {
    if (c_.no_reboot) {
      Flag("-no-reboot");
    }
  }
  void Serial() {
    if (!c_.serial.empty()) {
      Opt("-serial", c_.serial);
    }
  }
  void Monitors() {
    for (const std::string& monitor : c_.monitors) {
      Opt("-monitor", monitor);
    }
  }
  void Qmp() {
    if (!c_.qmp_socket.empty()) {
      Opt("-qmp", "unix:" + QemuEscape(c_.qmp_socket) + ",server=on,wait=off");
    }
  }
  void Vsock() {
    if (c_.vsock_guest_cid != 0) {
      Opt("-device", "vhost-vsock-pci,guest-cid=" + std::to_string(c_.vsock_guest_cid));
    }
    if (!c_.agent_serial_socket.empty()) {
      Opt("-device", std::string("virtio-serial-pci,id=vser0,") + kVirtioFlags);
      Opt("-chardev", "socket,id=agent,path=" + QemuEscape(c_.agent_serial_socket) + ",server=on,wait=off");
      Opt("-device", "virtserialport,bus=vser0.0,chardev=agent,name=" + c_.agent_port_name);
    }
  }

  void Shares() {
    Share("env_fs", c_.env_share_dir, "env_share");
    Share("cert_fs", c_.certs_share_dir, "certs_share");
  }

  std::vector<std::string> Take() { return std::move(argv_); }

 private:
  void Share(const std::string& id, const std::string& dir, const std::string& tag) {
    Opt("-fsdev", "local,id=" + id + ",path=" + QemuEscape(dir) + ",security_model=mapped");
    Opt("-device", std::string("virtio-9p-pci,") + kVirtioFlags + ",fsdev=" + id + ",mount_tag=" + tag + ",romfile=");
  }

  const CvmLaunchConfig& c_;
  std::vector<std::string> argv_;
};

// Order follows the seed's SEV-SNP example so the two can be compared argument by argument.
std::vector<std::string> SevSnpArgs(const CvmLaunchConfig& c) {
  Args a(c);
  bool igvm = !c.igvm_file.empty();
  a.Accel();
  a.Cpu("EPYC-v4");
  a.Opt("-machine", "q35");
  a.Smp(false);
  a.Memory();
  a.Nics(false);
  a.Opt("-machine",
        std::string("confidential-guest-support=sev0,memory-backend=ram1") + (igvm ? ",igvm-cfg=igvm0" : ""));
  a.Opt("-object", "memory-backend-memfd,id=ram1,size=" + QemuMemorySize(c.memory_mib) +
                       ",share=true,prealloc=false,reserve=false");
  std::string snp = "sev-snp-guest,id=sev0,cbitpos=" + std::to_string(c.sev_cbitpos) +
                    ",reduced-phys-bits=" + std::to_string(c.sev_reduced_phys_bits);
  if (c.boot == BootMode::kMeasuredDirect) {
    snp += ",kernel-hashes=on";  // kernel, initrd and command line (with roothash=) enter the launch digest
  }
  a.Opt("-object", snp);
  a.Disk();
  if (igvm) {
    a.Opt("-object", "igvm-cfg,id=igvm0,file=" + QemuEscape(c.igvm_file));
  } else {
    a.Opt("-bios", c.firmware_bios);
  }
  a.DirectBoot();
  a.Display();
  a.Monitors();
  a.Shares();
  a.NoDefaults();
  a.NoReboot();
  a.Serial();
  a.Vsock();
  a.Qmp();
  return a.Take();
}

// Order follows the seed's TDX example.
std::vector<std::string> TdxArgs(const CvmLaunchConfig& c) {
  Args a(c);
  a.Accel();
  a.Opt("-m", QemuMemorySize(c.memory_mib) + (c.memory_slots != 0 ? ",slots=" + std::to_string(c.memory_slots) +
                                                                        ",maxmem=" + QemuMemorySize(c.max_memory_mib)
                                                                  : ""));
  a.Smp(true);
  a.Cpu("host");
  a.Opt("-object",
        "{\"qom-type\":\"tdx-guest\",\"id\":\"tdx\",\"quote-generation-socket\":{\"type\":\"vsock\","
        "\"cid\":\"" +
            std::to_string(c.tdx_quote_vsock_cid) + "\",\"port\":\"" + std::to_string(c.tdx_quote_vsock_port) + "\"}}");
  a.Opt("-machine", "q35,kernel_irqchip=split,confidential-guest-support=tdx,memory-backend=mem0,hpet=off");
  a.Opt("-bios", c.firmware_bios);
  a.Display();
  a.NoDefaults();
  a.NoReboot();
  a.Serial();
  a.Nics(true);
  a.Opt("-object", "memory-backend-memfd,id=mem0,size=" + QemuMemorySize(c.memory_mib));
  a.Disk();
  a.Vsock();
  a.Monitors();
  a.Shares();
  a.DirectBoot();
  a.Qmp();
  return a.Take();
}

// The TEE-less disk boot (chrysalis-cvm): OVMF from pflash, same disk, shares and devices.
std::vector<std::string> PlainArgs(const CvmLaunchConfig& c) {
  Args a(c);
  a.Accel();
  a.Cpu("");
  a.Opt("-machine", "q35");
  a.Smp(false);
  a.Memory();
  a.Pflash();
  a.Nics(false);
  a.Disk();
  a.DirectBoot();
  a.Display();
  a.NoDefaults();
  a.NoReboot();
  a.Serial();
  a.Monitors();
  a.Qmp();
  a.Vsock();
  a.Shares();
  return a.Take();
}

}  // namespace

const char* TeeKindName(TeeKind tee) {
  switch (tee) {
    case TeeKind::kNone:
      return "none";
    case TeeKind::kSevSnp:
      return "SEV-SNP";
    case TeeKind::kTdx:
      return "TDX";
  }
  return "unknown";
}

std::string QemuMemorySize(uint64_t mib) {
  if (mib != 0 && mib % 1024 == 0) {
    return std::to_string(mib / 1024) + "G";
  }
  return std::to_string(mib) + "M";
}

std::string HalKernelCommandLine(const std::string& roothash, const std::string& extra) {
  std::string line = "console=ttyS0,115200 quiet panic=-1 roothash=" + roothash;
  if (!extra.empty()) {
    line += " " + extra;
  }
  return line;
}

Result<std::vector<std::string>> BuildCvmQemuArgs(const CvmLaunchConfig& config) {
  CHRYS_RETURN_IF_ERROR(Validate(config));
  switch (config.tee) {
    case TeeKind::kSevSnp:
      return SevSnpArgs(config);
    case TeeKind::kTdx:
      return TdxArgs(config);
    case TeeKind::kNone:
      break;
  }
  return PlainArgs(config);
}

}  // namespace chrys::runtime::confidential
