// chrysctl doctor: pre-flight checks of the node, PASS/WARN/FAIL per line, works without chrysd.
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "cri/ctl/commands.h"
#include "cri/ctl/doctor.h"
#include "imagestore/digest.h"
#include "runtime/confidential/host_probe.h"
#include "runtime/qemu.h"

namespace chrys::cri::ctl {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kOvmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd";
constexpr const char* kOvmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd";

bool Exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool IsCharDevice(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISCHR(st.st_mode);
}

// Finds an executable (a name on options.path_env, or a path) inside the root; empty when missing.
std::string FindBinary(const DoctorOptions& options, const std::string& name) {
  if (name.empty()) {
    return "";
  }
  if (name.find('/') != std::string::npos) {
    std::string path = InRoot(options.root, name);
    return ::access(path.c_str(), X_OK) == 0 ? path : "";
  }
  std::stringstream dirs(options.path_env);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    std::string candidate = InRoot(options.root, dir + "/" + name);
    if (!dir.empty() && ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return "";
}

// The first line a binary prints for `flag` (its version), or why it could not be run.
std::string FirstLineOf(const std::string& binary, const std::string& flag, bool* ok) {
  base::CommandSpec spec;
  spec.argv = {binary, flag};
  spec.timeout = std::chrono::seconds(10);
  spec.max_output_bytes = 64 << 10;
  auto run = base::RunCommand(spec);
  if (!run.ok()) {
    *ok = false;
    return run.error().message();
  }
  std::string text = run->stdout_data.empty() ? run->stderr_data : run->stdout_data;
  std::string line = text.substr(0, text.find('\n'));
  // Some tools (mkfs.erofs 1.5) print their version and then exit 1: a line naming the tool is an answer too.
  std::string name = binary.substr(binary.rfind('/') + 1);
  bool named = line.rfind(name + " ", 0) == 0 && run->term_signal == 0;
  *ok = (run->success() || named) && !line.empty();
  return *ok ? line : binary + " " + flag + " " + run->DescribeExit() + ": " + base::Tail(text, 200);
}

// The guest manifest's kernel path (what chrysd boots and probes KVM with); empty when there is none.
std::string GuestKernel(const DoctorOptions& options) {
  auto text = base::ReadFile(InRoot(options.root, options.config.vmm.guest_dir + "/manifest.json"), 1 << 20);
  if (!text.ok()) {
    return "";
  }
  json manifest = json::parse(*text, nullptr, false);
  if (!manifest.is_object() || !manifest.contains("kernel") || !manifest["kernel"].is_object()) {
    return "";
  }
  return InRoot(options.root, options.config.vmm.guest_dir + "/" + manifest["kernel"].value("file", "vmlinuz"));
}

// Which KVM flavour modules are loaded: "kvm_intel", "kvm_amd", "kvm_pvm".
std::vector<std::string> KvmModules(const DoctorOptions& options) {
  std::vector<std::string> out;
  for (const char* name : {"kvm_intel", "kvm_amd", "kvm_pvm"}) {
    if (Exists(InRoot(options.root, std::string("/sys/module/") + name))) {
      out.push_back(name);
    }
  }
  return out;
}

std::string JoinWords(const std::vector<std::string>& words, const std::string& sep) {
  std::string out;
  for (const auto& w : words) {
    out += (out.empty() ? "" : sep) + w;
  }
  return out;
}

}  // namespace

const char* CheckLevelName(CheckLevel level) {
  switch (level) {
    case CheckLevel::kPass:
      return "PASS";
    case CheckLevel::kWarn:
      return "WARN";
    case CheckLevel::kFail:
      return "FAIL";
  }
  return "FAIL";
}

std::string InRoot(const std::string& root, const std::string& path) {
  if (root.empty() || root == "/" || path.empty() || path[0] != '/') {
    return path;
  }
  std::string r = root;
  while (!r.empty() && r.back() == '/') {
    r.pop_back();
  }
  return r + path;
}

std::vector<CheckResult> CheckKvm(const DoctorOptions& options) {
  std::vector<CheckResult> out;
  const std::string& accel = options.config.vmm.accel;
  std::string device = InRoot(options.root, "/dev/kvm");
  std::vector<std::string> modules = KvmModules(options);
  std::string module_note =
      modules.empty() ? "no kvm_intel/kvm_amd module loaded" : "loaded: " + JoinWords(modules, ", ");
  bool pvm = std::find(modules.begin(), modules.end(), "kvm_pvm") != modules.end();
  // Without usable KVM, QEMU pods still run (TCG); only vmm.accel=kvm makes that a failure.
  CheckLevel unusable = accel == "kvm" ? CheckLevel::kFail : CheckLevel::kWarn;
  std::string fallback = accel == "kvm" ? "; vmm.accel is kvm, so pods cannot start: set vmm.accel to auto or tcg"
                                        : "; QEMU falls back to TCG (pods work, slower) and Cloud Hypervisor "
                                          "(handler chrysalis) is unavailable";
  if (accel == "tcg") {
    out.push_back({"kvm", "accel", CheckLevel::kPass, "vmm.accel is tcg: KVM is not used (" + module_note + ")"});
    return out;
  }
  if (!Exists(device)) {
    out.push_back({"kvm", "/dev/kvm", unusable,
                   "KVM is not usable: /dev/kvm does not exist (" + module_note +
                       (pvm ? "; a PVM host cannot run ordinary guests" : "; enable virtualization / modprobe kvm") +
                       ")" + fallback});
    return out;
  }
  base::UniqueFd fd(::open(device.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd) {
    out.push_back({"kvm", "/dev/kvm", unusable,
                   "KVM is not usable: cannot open /dev/kvm: " + std::string(std::strerror(errno)) +
                       " (run as root or join the kvm group)" + fallback});
    return out;
  }
  if (IsCharDevice(device)) {
    int version = ::ioctl(fd.get(), KVM_GET_API_VERSION, 0);
    if (version != KVM_API_VERSION) {
      out.push_back({"kvm", "/dev/kvm", unusable,
                     "KVM is not usable: KVM_GET_API_VERSION gave " + std::to_string(version) + ", expected " +
                         std::to_string(KVM_API_VERSION) + fallback});
      return out;
    }
  }
  out.push_back({"kvm", "/dev/kvm", CheckLevel::kPass, "present and opens (" + module_note + ")"});
  // The device can exist on hosts where a guest still crashes (nested PVM): the runtime's probe guest decides.
  std::string qemu = FindBinary(options, options.config.vmm.qemu_binary);
  std::string kernel = GuestKernel(options);
  if (qemu.empty() || kernel.empty() || !Exists(kernel)) {
    out.push_back({"kvm", "guest probe", CheckLevel::kWarn,
                   "cannot run the KVM probe guest (needs " + options.config.vmm.qemu_binary +
                       " and the guest kernel); whether KVM boots a guest is unknown"});
    return out;
  }
  runtime::QemuConfig probe;
  probe.qemu_binary = qemu;
  probe.accel = "auto";
  probe.kvm_device = device;
  // chrysd caches the probe's answer in its run dir; reuse it (and fill it) when that directory exists.
  std::string run_dir = InRoot(options.root, options.config.run_dir);
  probe.accel_cache_path = fs::is_directory(run_dir) ? run_dir + "/kvm-probe.json" : "";
  bool cached = !probe.accel_cache_path.empty() && Exists(probe.accel_cache_path);
  if (!cached && !options.run_binaries) {
    out.push_back({"kvm", "guest probe", CheckLevel::kWarn, "not run (no cached probe result)"});
    return out;
  }
  auto resolved = runtime::ResolveQemuAccel(probe, kernel);
  std::string source = cached ? "chrysd's cached probe " + probe.accel_cache_path : "a probe guest just booted";
  if (!resolved.ok()) {
    out.push_back({"kvm", "guest probe", unusable, "probe failed: " + resolved.error().message() + fallback});
  } else if (*resolved == "kvm") {
    out.push_back({"kvm", "guest probe", CheckLevel::kPass, "KVM runs ordinary guests (" + source + ")"});
  } else {
    out.push_back({"kvm", "guest probe", unusable,
                   "KVM is not usable for ordinary guests: the probe guest did not boot under KVM (" + source +
                       (pvm ? "; kvm_pvm is loaded: a PVM host" : "") + ")" + fallback});
  }
  return out;
}

std::vector<CheckResult> CheckVmmBinaries(const DoctorOptions& options) {
  std::vector<CheckResult> out;
  struct Wanted {
    std::string name;
    std::vector<std::string> candidates;
    std::string flag;
    std::string missing;
  };
  std::string qemu = FindBinary(options, options.config.vmm.qemu_binary);
  std::string ch = FindBinary(options, options.config.vmm.cloud_hypervisor_binary);
  std::vector<Wanted> wanted = {
      {options.config.vmm.qemu_binary,
       {options.config.vmm.qemu_binary},
       "-version",
       ch.empty() ? "no VMM at all: pods cannot start; install qemu-system-x86"
                  : "handlers chrysalis-qemu/-cvm/-snp/-tdx unavailable; install qemu-system-x86"},
      {options.config.vmm.cloud_hypervisor_binary,
       {options.config.vmm.cloud_hypervisor_binary},
       "--version",
       "handler chrysalis falls back to QEMU"},
      {"virtiofsd",
       {"/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd", "virtiofsd"},
       "--version",
       "virtio-fs shares are unavailable; install qemu-system-common or virtiofsd"},
      {"mkfs.erofs", {"mkfs.erofs"}, "--version", "layer images cannot be built: install erofs-utils"},
  };
  for (const auto& w : wanted) {
    std::string found;
    for (const auto& c : w.candidates) {
      found = FindBinary(options, c);
      if (!found.empty()) {
        break;
      }
    }
    if (found.empty()) {
      bool fatal = (w.name == options.config.vmm.qemu_binary && ch.empty()) || w.name == "mkfs.erofs";
      out.push_back({"vmm", w.name, fatal ? CheckLevel::kFail : CheckLevel::kWarn, "not found: " + w.missing});
      continue;
    }
    if (!options.run_binaries) {
      out.push_back({"vmm", w.name, CheckLevel::kPass, found});
      continue;
    }
    bool ok = false;
    std::string version = FirstLineOf(found, w.flag, &ok);
    out.push_back({"vmm", w.name, ok ? CheckLevel::kPass : CheckLevel::kFail,
                   ok ? found + ": " + version : found + " does not run: " + version});
  }
  return out;
}

std::vector<CheckResult> CheckCni(const DoctorOptions& options) {
  std::vector<CheckResult> out;
  const CniConfig& cni = options.config.cni;
  std::string dir = InRoot(options.root, cni.conf_dir);
  if (!fs::is_directory(dir)) {
    out.push_back({"cni", "conf_dir", CheckLevel::kFail,
                   cni.conf_dir + " does not exist: pods with a network cannot start; install a conflist there "
                                  "(deploy/cni/ has an example)"});
    return out;
  }
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string ext = entry.path().extension().string();
    if (entry.is_regular_file() && (ext == ".conflist" || ext == ".conf" || ext == ".json")) {
      files.push_back(entry.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    out.push_back({"cni", "conf_dir", CheckLevel::kFail,
                   "no *.conflist/*.conf in " + cni.conf_dir + " (deploy/cni/ has an example)"});
    return out;
  }
  std::string chosen;
  json list;
  for (const auto& file : files) {
    auto text = base::ReadFile(file, 1 << 20);
    json parsed = text.ok() ? json::parse(*text, nullptr, false) : json();
    if (!parsed.is_object()) {
      out.push_back({"cni", fs::path(file).filename().string(), CheckLevel::kWarn, "not valid JSON: ignored"});
      continue;
    }
    std::string name = parsed.value("name", "");
    if (cni.network_name.empty() || name == cni.network_name) {
      chosen = file;
      list = parsed;
      break;
    }
  }
  if (chosen.empty()) {
    out.push_back({"cni", "network", CheckLevel::kFail,
                   cni.network_name.empty() ? "no valid network config in " + cni.conf_dir
                                            : "no network named '" + cni.network_name + "' in " + cni.conf_dir});
    return out;
  }
  json plugins = list.contains("plugins") ? list["plugins"] : json::array({list});
  if (!plugins.is_array() || plugins.empty()) {
    out.push_back({"cni", fs::path(chosen).filename().string(), CheckLevel::kFail, "has no plugins"});
    return out;
  }
  out.push_back({"cni", "network", CheckLevel::kPass,
                 "'" + list.value("name", std::string("?")) + "' from " +
                     chosen.substr(InRoot(options.root, "").size()) + " (" + std::to_string(plugins.size()) +
                     " plugins)"});
  for (const auto& plugin : plugins) {
    std::string type = plugin.is_object() ? plugin.value("type", "") : "";
    if (type.empty()) {
      out.push_back({"cni", "plugin", CheckLevel::kFail, "a plugin entry without \"type\" in " + chosen});
      continue;
    }
    std::string found;
    for (const auto& bin : cni.bin_dirs) {
      std::string path = InRoot(options.root, bin + "/" + type);
      if (::access(path.c_str(), X_OK) == 0) {
        found = bin + "/" + type;
        break;
      }
    }
    out.push_back({"cni", "plugin " + type, found.empty() ? CheckLevel::kFail : CheckLevel::kPass,
                   found.empty()
                       ? "not found in " + JoinWords(cni.bin_dirs, ", ") + " (install containernetworking-plugins)"
                       : found});
  }
  return out;
}

std::vector<CheckResult> CheckKernel(const DoctorOptions& options) {
  std::vector<CheckResult> out;
  auto module_loaded = [&](const std::string& name) { return Exists(InRoot(options.root, "/sys/module/" + name)); };
  bool tun = IsCharDevice(InRoot(options.root, "/dev/net/tun"));
  out.push_back({"kernel", "/dev/net/tun", tun ? CheckLevel::kPass : CheckLevel::kFail,
                 tun ? "present" : "missing: pod networking needs taps (modprobe tun)"});
  out.push_back({"kernel", "module tun", module_loaded("tun") || tun ? CheckLevel::kPass : CheckLevel::kFail,
                 module_loaded("tun") ? "loaded"
                 : tun                ? "built in"
                                      : "not loaded: modprobe tun"});
  bool vhost_net = IsCharDevice(InRoot(options.root, "/dev/vhost-net"));
  out.push_back({"kernel", "/dev/vhost-net", vhost_net ? CheckLevel::kPass : CheckLevel::kWarn,
                 vhost_net ? "present" : "missing: virtio-net runs in the VMM without vhost (modprobe vhost_net)"});
  out.push_back({"kernel", "module vhost_net", module_loaded("vhost_net") ? CheckLevel::kPass : CheckLevel::kWarn,
                 module_loaded("vhost_net") ? "loaded" : "not loaded (modprobe vhost_net)"});
  bool vsock = IsCharDevice(InRoot(options.root, "/dev/vhost-vsock"));
  out.push_back(
      {"kernel", "/dev/vhost-vsock", vsock ? CheckLevel::kPass : CheckLevel::kWarn,
       vsock ? "present" : "missing: QEMU pods talk to the agent over virtio-serial instead (modprobe vhost_vsock)"});
  auto filesystems = base::ReadFile(InRoot(options.root, "/proc/filesystems"), 1 << 16);
  bool erofs = filesystems.ok() && filesystems->find("\terofs\n") != std::string::npos;
  std::string erofs_detail = "in /proc/filesystems";
  if (!erofs && options.run_binaries && (options.root.empty() || options.root == "/")) {
    base::CommandSpec spec;
    spec.argv = {"modinfo", "-F", "filename", "erofs"};
    spec.timeout = std::chrono::seconds(5);
    auto run = base::RunCommand(spec);
    erofs = run.ok() && run->success();
    erofs_detail = "module available (loads on first mount)";
  }
  out.push_back({"kernel", "erofs", erofs ? CheckLevel::kPass : CheckLevel::kWarn,
                 erofs ? erofs_detail
                       : "the host kernel cannot mount EROFS (guests mount the layer images, the host only builds "
                         "them; needed for inspecting them by hand)"});
  return out;
}

std::vector<CheckResult> CheckFirmware(const DoctorOptions& options) {
  std::vector<CheckResult> out;
  for (const auto& [what, path] : {std::pair<std::string, std::string>{"OVMF code", kOvmfCode},
                                   std::pair<std::string, std::string>{"OVMF vars", kOvmfVars}}) {
    bool present = Exists(InRoot(options.root, path));
    out.push_back({"firmware", what, present ? CheckLevel::kPass : CheckLevel::kWarn,
                   present ? path
                           : path + " missing: disk-booted pods (chrysalis-cvm, -snp, -tdx) cannot start; "
                                    "install ovmf"});
  }
  return out;
}

std::vector<CheckResult> CheckGuestArtifacts(const DoctorOptions& options) {
  std::vector<CheckResult> out;
  std::string dir = options.config.vmm.guest_dir;
  std::string manifest_path = InRoot(options.root, dir + "/manifest.json");
  auto text = base::ReadFile(manifest_path, 4 << 20);
  if (!text.ok()) {
    out.push_back({"guest", "manifest", CheckLevel::kFail,
                   dir + "/manifest.json: " + text.error().message() +
                       ": pods cannot start; build the guest image and install it (deploy/install.sh)"});
    return out;
  }
  json manifest = json::parse(*text, nullptr, false);
  if (!manifest.is_object()) {
    out.push_back({"guest", "manifest", CheckLevel::kFail, dir + "/manifest.json is not a JSON object"});
    return out;
  }
  out.push_back({"guest", "manifest", CheckLevel::kPass, dir + "/manifest.json"});
  int artifacts = 0;
  for (const auto& [key, entry] : manifest.items()) {
    if (!entry.is_object() || !entry.contains("file") || !entry["file"].is_string()) {
      continue;
    }
    ++artifacts;
    std::string file = entry["file"].get<std::string>();
    if (file.empty() || file.find('/') != std::string::npos) {
      out.push_back({"guest", key, CheckLevel::kFail, "manifest names file '" + file + "': not a plain file name"});
      continue;
    }
    std::string path = InRoot(options.root, dir + "/" + file);
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      out.push_back({"guest", key, CheckLevel::kFail, dir + "/" + file + " is missing"});
      continue;
    }
    imagestore::Sha256Hasher hasher;
    std::vector<char> buffer(1 << 20);
    uint64_t size = 0;
    while (in) {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      hasher.Update(buffer.data(), static_cast<size_t>(in.gcount()));
      size += static_cast<uint64_t>(in.gcount());
    }
    std::string hex = hasher.Finish().hex();
    if (entry.contains("bytes") && entry["bytes"].is_number_unsigned() && entry["bytes"].get<uint64_t>() != size) {
      out.push_back({"guest", key, CheckLevel::kFail,
                     dir + "/" + file + " has " + std::to_string(size) + " bytes, the manifest says " +
                         std::to_string(entry["bytes"].get<uint64_t>()) + ": reinstall the guest artifacts"});
      continue;
    }
    if (!entry.contains("sha256") || !entry["sha256"].is_string()) {
      out.push_back({"guest", key, CheckLevel::kWarn, dir + "/" + file + ": the manifest has no sha256 to check"});
      continue;
    }
    if (entry["sha256"].get<std::string>() != hex) {
      out.push_back({"guest", key, CheckLevel::kFail,
                     dir + "/" + file + " sha256 " + hex.substr(0, 12) + "… differs from the manifest's " +
                         entry["sha256"].get<std::string>().substr(0, 12) + "…: reinstall the guest artifacts"});
      continue;
    }
    out.push_back({"guest", key, CheckLevel::kPass, dir + "/" + file + " (" + HumanSize(size) + ", sha256 ok)"});
  }
  if (artifacts == 0) {
    out.push_back({"guest", "artifacts", CheckLevel::kFail, "the manifest lists no artifact files"});
  }
  return out;
}

std::vector<CheckResult> CheckTee(const DoctorOptions& options) {
  std::vector<CheckResult> out;
  runtime::confidential::ProbeOptions probe;
  probe.root = options.root;
  std::string qemu = FindBinary(options, options.config.vmm.qemu_binary);
  probe.qemu_binary = qemu.empty() ? options.config.vmm.qemu_binary : qemu;
  probe.run_qemu = options.run_binaries && !qemu.empty();
  probe.ovmf_code = kOvmfCode;
  probe.ovmf_vars = kOvmfVars;
  auto report = runtime::confidential::ProbeConfidentialHost(probe);
  auto problem_about = [&](const std::string& prefix) {
    std::string text;
    for (const auto& p : report.Problems()) {
      if (p.rfind(prefix, 0) == 0) {
        text += (text.empty() ? "" : "; ") + p.substr(prefix.size());
      }
    }
    return text;
  };
  bool snp_host = report.sev_snp_kvm && report.sev_device;
  out.push_back({"tee", "SEV-SNP host", snp_host ? CheckLevel::kPass : CheckLevel::kWarn,
                 snp_host ? "kvm_amd sev_snp=Y and /dev/sev present"
                          : "unavailable:" + problem_about("SEV-SNP:") + " (handler chrysalis-snp cannot run)"});
  out.push_back({"tee", "TDX host", report.tdx_kvm ? CheckLevel::kPass : CheckLevel::kWarn,
                 report.tdx_kvm ? "kvm_intel tdx=Y"
                                : "unavailable: kvm_intel does not report tdx=Y (handler chrysalis-tdx cannot run)"});
  std::string qemu_name = report.qemu_version ? "QEMU " + report.qemu_version->ToString() : std::string("QEMU");
  std::string how = report.qemu_objects_listed ? "from -object help" : "inferred from the version";
  if (!report.qemu_found) {
    out.push_back({"tee", "QEMU TEE objects", CheckLevel::kWarn,
                   options.run_binaries ? "QEMU not found or not runnable" : "not checked (QEMU not run)"});
  } else {
    out.push_back({"tee", "QEMU sev-snp-guest", report.qemu_sev_snp_guest ? CheckLevel::kPass : CheckLevel::kWarn,
                   qemu_name + (report.qemu_sev_snp_guest ? " has it" : " lacks it (needs >= 9.1)") + ", " + how});
    out.push_back({"tee", "QEMU tdx-guest", report.qemu_tdx_guest ? CheckLevel::kPass : CheckLevel::kWarn,
                   qemu_name + (report.qemu_tdx_guest ? " has it" : " lacks it (needs >= 10.1)") + ", " + how});
  }
  // Firmware built for the TEEs: the distro's names for them (none ships in Debian bookworm).
  for (const auto& [what, paths] :
       {std::pair<std::string, std::vector<std::string>>{
            "SEV-SNP firmware/IGVM",
            {"/usr/share/OVMF/OVMF.amdsev.fd", "/usr/share/ovmf/OVMF.amdsev.fd", "/usr/share/igvm/ovmf-snp.igvm"}},
        std::pair<std::string, std::vector<std::string>>{
            "TDX firmware", {"/usr/share/OVMF/OVMF.inteltdx.fd", "/usr/share/ovmf/OVMF.inteltdx.fd"}}}) {
    std::string found;
    for (const auto& p : paths) {
      if (Exists(InRoot(options.root, p))) {
        found = p;
        break;
      }
    }
    out.push_back({"tee", what, found.empty() ? CheckLevel::kWarn : CheckLevel::kPass,
                   found.empty() ? "none of " + JoinWords(paths, ", ") : found});
  }
  return out;
}

std::vector<CheckResult> CheckDisk(const DoctorOptions& options) {
  std::vector<CheckResult> out;
  auto check = [&](const std::string& key, const std::string& dir, uint64_t fail, uint64_t warn) {
    // The directory may not exist before the first start: measure the filesystem it will be created on.
    fs::path at = InRoot(options.root, dir);
    while (!at.empty() && !fs::exists(at) && at != at.root_path()) {
      at = at.parent_path();
    }
    struct statvfs st {};
    if (::statvfs(at.c_str(), &st) != 0) {
      out.push_back({"disk", key, CheckLevel::kFail, "statvfs " + at.string() + ": " + std::strerror(errno)});
      return;
    }
    uint64_t free_bytes = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
    CheckLevel level = free_bytes < fail   ? CheckLevel::kFail
                       : free_bytes < warn ? CheckLevel::kWarn
                                           : CheckLevel::kPass;
    std::string detail = dir + ": " + HumanSize(free_bytes) + " free";
    if (level != CheckLevel::kPass) {
      detail += " (want at least " + HumanSize(level == CheckLevel::kFail ? fail : warn) + ")";
    }
    out.push_back({"disk", key, level, detail});
  };
  check("state_dir", options.config.state_dir, options.state_fail_bytes, options.state_warn_bytes);
  check("run_dir", options.config.run_dir, options.run_fail_bytes, options.run_warn_bytes);
  return out;
}

std::vector<CheckResult> CheckDaemon(const DoctorOptions& options) {
  std::string socket = InRoot(options.root, options.config.socket);
  if (!Exists(socket)) {
    return {{"chrysd", "socket", CheckLevel::kWarn, "chrysd is not running: no socket at " + socket}};
  }
  auto client = CriClient::Connect(socket, options.socket_timeout);
  if (!client.ok()) {
    return {{"chrysd", "socket", CheckLevel::kWarn, client.error().message()}};
  }
  ::runtime::v1::VersionResponse resp;
  auto status = client->runtime().Version(CriClient::Context(options.socket_timeout).get(),
                                          ::runtime::v1::VersionRequest(), &resp);
  if (!status.ok()) {
    return {{"chrysd", "socket", CheckLevel::kFail,
             socket + " accepts connections but Version fails: " + status.error_message()}};
  }
  return {{"chrysd", "socket", CheckLevel::kPass,
           socket + " answers: " + resp.runtime_name() + " " + resp.runtime_version()}};
}

std::vector<CheckResult> RunDoctor(const DoctorOptions& options) {
  std::vector<CheckResult> out;
  if (!options.config_note.empty()) {
    out.push_back({"config", "config", CheckLevel::kPass, options.config_note});
  }
  for (auto* group : {CheckKvm, CheckVmmBinaries, CheckCni, CheckKernel, CheckFirmware, CheckGuestArtifacts, CheckTee,
                      CheckDisk, CheckDaemon}) {
    auto checks = group(options);
    out.insert(out.end(), checks.begin(), checks.end());
  }
  return out;
}

std::string FormatChecks(const std::vector<CheckResult>& checks) {
  std::ostringstream out;
  int counts[3] = {0, 0, 0};
  for (const auto& c : checks) {
    counts[static_cast<int>(c.level)]++;
    out << CheckLevelName(c.level) << "  " << std::left << std::setw(9) << c.group << std::setw(22) << c.name
        << c.detail << "\n";
  }
  out << "\n" << counts[0] << " passed, " << counts[1] << " warnings, " << counts[2] << " failed\n";
  return out.str();
}

json ChecksToJson(const std::vector<CheckResult>& checks) {
  json out = {{"checks", json::array()}};
  int counts[3] = {0, 0, 0};
  for (const auto& c : checks) {
    counts[static_cast<int>(c.level)]++;
    out["checks"].push_back(
        {{"group", c.group}, {"name", c.name}, {"status", CheckLevelName(c.level)}, {"detail", c.detail}});
  }
  out["summary"] = {{"pass", counts[0]}, {"warn", counts[1]}, {"fail", counts[2]}};
  out["ok"] = counts[2] == 0;
  return out;
}

bool AnyFailed(const std::vector<CheckResult>& checks) {
  return std::any_of(checks.begin(), checks.end(), [](const CheckResult& c) { return c.level == CheckLevel::kFail; });
}

namespace {

int Doctor(const GlobalOptions& global, const std::vector<std::string>& args) {
  auto parsed = ParseArgs(args, {"--root"}, {"--json", "--no-probe"});
  if (!parsed.ok()) {
    return Fail(parsed.error());
  }
  if (!parsed->positional.empty()) {
    return Fail("doctor takes no arguments (see chrysctl doctor --help)");
  }
  DoctorOptions options;
  if (auto it = parsed->options.find("--root"); it != parsed->options.end()) {
    options.root = it->second;
  }
  options.run_binaries = parsed->options.count("--no-probe") == 0;
  std::vector<CheckResult> config_failure;
  GlobalOptions with_root = global;
  with_root.config_path = InRoot(options.root, global.config_path);
  auto loaded = LoadDaemonConfig(with_root);
  if (loaded.ok()) {
    options.config = loaded->config;
    options.config_note =
        loaded->from_file ? global.config_path + " loaded" : global.config_path + " absent: chrysd's embedded defaults";
  } else {
    // Keep checking with the defaults: the rest of the report is still useful.
    config_failure.push_back({"config", "config", CheckLevel::kFail,
                              loaded.error().message() + " (checks below use chrysd's embedded defaults)"});
    if (global.socket_explicit) {
      options.config.socket = global.socket;
    }
  }
  auto checks = RunDoctor(options);
  checks.insert(checks.begin(), config_failure.begin(), config_failure.end());
  if (parsed->options.count("--json") != 0) {
    std::cout << ChecksToJson(checks).dump(2) << "\n";
  } else {
    std::cout << FormatChecks(checks);
  }
  return AnyFailed(checks) ? 1 : 0;
}

}  // namespace

void AddDoctorCommands(CommandTable& table) {
  table["doctor"] = {"pre-flight checks of this node (KVM, VMMs, CNI, kernel, firmware, guest, TEE, disk)",
                     "Usage: chrysctl [--config PATH] doctor [--json] [--no-probe] [--root DIR]\n\n"
                     "Checks what chrysd needs on this node and prints one PASS, WARN or FAIL line per check:\n"
                     "KVM (and whether it boots an ordinary guest: chrysd's cached probe, else a probe guest),\n"
                     "VMM binaries and versions, the CNI network config and its plugins, kernel devices and\n"
                     "modules, OVMF firmware, the guest artifacts (sha256 against their manifest), SEV-SNP/TDX\n"
                     "support of the host and of QEMU, free disk in state_dir and run_dir, and whether chrysd\n"
                     "answers on its socket. Reads chrysd's config (--config, default /etc/chrysalis/config.yaml;\n"
                     "embedded defaults when absent). Does not need chrysd to be running.\n\n"
                     "  --json       the checks as JSON\n"
                     "  --no-probe   do not run any binary (versions, KVM probe guest, QEMU object list)\n"
                     "  --root DIR   check the node whose root filesystem is mounted at DIR\n\n"
                     "Exits 1 when a check FAILs (WARN does not).\n",
                     nullptr, Doctor};
}

}  // namespace chrys::cri::ctl
