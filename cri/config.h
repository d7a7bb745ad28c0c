// Config is chrysd's effective configuration: embedded defaults, then /etc/chrysalis/config.yaml, then flags.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/result.h"

namespace chrys::cri {

enum class CgroupDriver { kCgroupfs, kSystemd };

struct LogConfig {
  std::string level = "info";  // trace, debug, info, warn, error, critical, off
  std::string file;            // empty: standard error
  int max_size_mib = 50;       // rotate when the file reaches this size
  int max_files = 5;           // rotated files kept
};

struct CniConfig {
  std::string conf_dir = "/etc/cni/net.d";
  std::vector<std::string> bin_dirs = {"/opt/cni/bin", "/usr/lib/cni"};
  std::string network_name;  // empty: the first network config list by file name
  int plugin_timeout_seconds = 60;
};

// vmm.warm_pool_size "auto": one warm VM when QEMU runs the default handler's pods, none when Cloud Hypervisor does
// (its VMs are not pooled, so a warm VM would wait for chrysalis-qemu pods only).
inline constexpr int kWarmPoolAuto = -1;

struct VmmConfig {
  std::string qemu_binary = "qemu-system-x86_64";
  std::string cloud_hypervisor_binary = "cloud-hypervisor";
  std::string accel = "auto";  // auto, kvm, tcg
  std::string guest_dir = "/var/lib/chrysalis/guest";
  int boot_timeout_seconds = 60;
  // VMs kept booted ahead of demand, grown at the claim to the pod's size (QEMU, not confidential); 0 turns the pool
  // off, kWarmPoolAuto (the default) sizes it by the default handler's VMM (WarmPoolSizeFor). A pod that takes one
  // starts in a third of a boot; each stays resident (253 MiB under TCG, 124 MiB of it guest memory) and costs a
  // boot's CPU, at the lowest CPU weight, when it is replaced.
  int warm_pool_size = kWarmPoolAuto;
  // With a warm pool: warm VMs are restored from a template VM saved once (RAM copied, devices loaded: ~0.1 s)
  // instead of each booting, and a pod that finds none ready gets one restored on the spot. Each clone has its
  // clock set and its random generator reseeded from the host; they share the template's kernel layout (KASLR).
  bool vm_template = true;
  // Firmware for QEMU's direct kernel boot of microVM pods: qboot only loads the kernel, where the default
  // SeaBIOS also probes every PCI device (hundreds of ms under TCG); empty or missing → QEMU's default.
  std::string microvm_firmware = "/usr/share/qemu/qboot.rom";
};

// How to reach one registry, keyed in ImagesConfig by the host used in references ("10.0.0.5:5000").
struct RegistryHostConfig {
  std::vector<std::string> mirrors;  // "https://host[:port]" or "http://host[:port]", tried first
  bool insecure = false;             // plain HTTP or unverified TLS, for this registry only
  std::string ca_file;               // extra PEM CA bundle for this registry
};

struct ImagesConfig {
  int max_concurrent_downloads = 3;
  int pull_timeout_seconds = 1800;
  std::map<std::string, RegistryHostConfig> registries;
};

// The exec/attach/port-forward streaming server.
struct StreamingConfig {
  std::string address = "127.0.0.1";
  int port = 0;               // 0: an ephemeral port
  std::string tls_cert_file;  // both set: HTTPS
  std::string tls_key_file;
  int idle_timeout_seconds = 14400;
  int stream_creation_timeout_seconds = 30;
};

// Confidential pods (handlers chrysalis-cvm, chrysalis-snp, chrysalis-tdx): the HAL disk image and firmware.
struct ConfidentialConfig {
  std::string hal_dir = "/var/lib/chrysalis/hal";  // chrys-hal-build output: disk.img, build-info.json
  std::string ovmf_code = "/usr/share/OVMF/OVMF_CODE_4M.fd";
  std::string ovmf_vars = "/usr/share/OVMF/OVMF_VARS_4M.fd";
  std::string snp_firmware;  // SNP-capable OVMF for -bios (empty: none configured)
  std::string tdx_firmware;  // TDVF for -bios
  std::string igvm_file;     // SEV-SNP IGVM (optional)
  int min_memory_mib = 1024;
  int boot_timeout_seconds = 300;
};

struct Config {
  std::string socket = "/run/chrysalis/chrysalis.sock";
  std::string state_dir = "/var/lib/chrysalis";
  std::string run_dir = "/run/chrysalis";
  CgroupDriver cgroup_driver = CgroupDriver::kCgroupfs;
  int shutdown_grace_seconds = 10;
  LogConfig log;
  CniConfig cni;
  VmmConfig vmm;
  ImagesConfig images;
  StreamingConfig streaming;
  ConfidentialConfig confidential;

  nlohmann::json ToJson() const;
  std::string ToYaml() const;
};

const char* CgroupDriverName(CgroupDriver driver);

// Applies a YAML document over `config`. Unknown keys and values of the wrong type or range are errors whose
// message names the key's path (e.g. "log.max_files") and what was expected; `source` names the file.
base::Status ApplyYaml(Config& config, const std::string& yaml_text, const std::string& source);

// Applies one "dotted.key=value" override (the value is parsed as YAML), as the --set flag does.
base::Status ApplyOverride(Config& config, const std::string& assignment);

// Checks cross-field rules (absolute paths, known log level...). Called after all layers are applied.
base::Status Validate(const Config& config);

// The warm pool's size: vmm.warm_pool_size as set, or for "auto" 1 when QEMU runs the default handler's pods and 0
// when Cloud Hypervisor does.
int WarmPoolSizeFor(const VmmConfig& vmm, bool cloud_hypervisor_runs_default_handler);

}  // namespace chrys::cri
