#include "runtime/confidential/host_probe.h"

#include <sys/stat.h>

#include <cctype>
#include <chrono>
#include <sstream>

#include "base/file_util.h"
#include "base/subprocess.h"

namespace chrys::runtime::confidential {

namespace {

std::string Join(const std::string& root, const std::string& path) {
  if (root.empty() || root == "/") {
    return path;
  }
  std::string r = root;
  while (!r.empty() && r.back() == '/') {
    r.pop_back();
  }
  return r + path;
}

bool Exists(const std::string& path) {
  struct stat st {};
  return !path.empty() && ::stat(path.c_str(), &st) == 0;
}

bool ReadBoolParam(const std::string& path) {
  auto text = base::ReadFile(path, 64);
  return text.ok() && ParseKvmBoolParam(*text);
}

std::optional<std::string> RunQemu(const std::string& binary, std::vector<std::string> args) {
  base::CommandSpec spec;
  spec.argv.push_back(binary);
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  spec.timeout = std::chrono::seconds(10);
  spec.max_output_bytes = 256 << 10;
  auto result = base::RunCommand(spec);
  if (!result.ok() || !result->success()) {
    return std::nullopt;
  }
  return result->stdout_data;
}

}  // namespace

std::string QemuVersion::ToString() const {
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(micro);
}

bool ParseKvmBoolParam(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  return text == "Y" || text == "y" || text == "1";
}

std::optional<QemuVersion> ParseQemuVersion(std::string_view output) {
  constexpr std::string_view kMarker = "QEMU emulator version ";
  size_t pos = output.find(kMarker);
  if (pos == std::string_view::npos) {
    return std::nullopt;
  }
  pos += kMarker.size();
  int parts[3] = {0, 0, 0};
  for (int i = 0; i < 3; ++i) {
    if (pos >= output.size() || !std::isdigit(static_cast<unsigned char>(output[pos]))) {
      if (i < 2) {
        return std::nullopt;  // need at least major.minor
      }
      break;
    }
    int value = 0;
    while (pos < output.size() && std::isdigit(static_cast<unsigned char>(output[pos]))) {
      value = value * 10 + (output[pos] - '0');
      if (value > 100000) {
        return std::nullopt;
      }
      ++pos;
    }
    parts[i] = value;
    if (i < 2) {
      if (pos >= output.size() || output[pos] != '.') {
        if (i == 0) {
          return std::nullopt;
        }
        break;
      }
      ++pos;
    }
  }
  return QemuVersion{parts[0], parts[1], parts[2]};
}

std::set<std::string> ParseObjectHelp(std::string_view output) {
  std::set<std::string> names;
  std::istringstream in{std::string(output)};
  std::string line;
  while (std::getline(in, line)) {
    size_t start = line.find_first_not_of(" \t");
    if (start == std::string::npos || start == 0) {
      continue;  // headers ("List of user creatable objects:") are not indented
    }
    size_t end = line.find_first_of(" \t\r", start);
    names.insert(line.substr(start, end == std::string::npos ? std::string::npos : end - start));
  }
  return names;
}

ConfidentialHostReport AssembleReport(bool sev_snp_kvm, bool sev_device, bool tdx_kvm,
                                      const std::optional<std::string>& version_output,
                                      const std::optional<std::string>& object_help_output,
                                      std::vector<FileCheck> files) {
  ConfidentialHostReport report;
  report.sev_snp_kvm = sev_snp_kvm;
  report.sev_device = sev_device;
  report.tdx_kvm = tdx_kvm;
  report.qemu_found = version_output.has_value();
  if (version_output) {
    report.qemu_version = ParseQemuVersion(*version_output);
  }
  if (object_help_output) {
    std::set<std::string> objects = ParseObjectHelp(*object_help_output);
    report.qemu_objects_listed = !objects.empty();
    report.qemu_sev_snp_guest = objects.count("sev-snp-guest") != 0;
    report.qemu_tdx_guest = objects.count("tdx-guest") != 0;
  }
  if (!report.qemu_objects_listed && report.qemu_version) {
    report.qemu_sev_snp_guest = report.qemu_version->AtLeast(9, 1);
    report.qemu_tdx_guest = report.qemu_version->AtLeast(10, 1);
  }
  report.files = std::move(files);
  return report;
}

bool ConfidentialHostReport::SevSnpUsable() const {
  return sev_snp_kvm && sev_device && qemu_sev_snp_guest;
}

bool ConfidentialHostReport::TdxUsable() const {
  return tdx_kvm && qemu_tdx_guest;
}

std::vector<std::string> ConfidentialHostReport::Problems() const {
  std::vector<std::string> problems;
  std::string qemu = qemu_version ? "QEMU " + qemu_version->ToString() : std::string("QEMU");
  if (!qemu_found) {
    problems.push_back("QEMU not found or not runnable: install qemu-system-x86 (confidential pods need it)");
  }
  if (!sev_snp_kvm) {
    problems.push_back(
        "SEV-SNP: kvm_amd does not report sev_snp=Y (/sys/module/kvm_amd/parameters/sev_snp): needs an AMD EPYC "
        "host with SNP enabled in firmware and kernel");
  }
  if (sev_snp_kvm && !sev_device) {
    problems.push_back("SEV-SNP: /dev/sev is missing (ccp/sev firmware driver not loaded)");
  }
  if (qemu_found && !qemu_sev_snp_guest) {
    problems.push_back("SEV-SNP: " + qemu + " has no sev-snp-guest object (needs QEMU >= 9.1)");
  }
  if (!tdx_kvm) {
    problems.push_back(
        "TDX: kvm_intel does not report tdx=Y (/sys/module/kvm_intel/parameters/tdx): needs a TDX-enabled Intel "
        "host and kernel");
  }
  if (qemu_found && !qemu_tdx_guest) {
    problems.push_back("TDX: " + qemu + " has no tdx-guest object (needs QEMU >= 10.1)");
  }
  for (const FileCheck& file : files) {
    if (!file.present) {
      problems.push_back(file.what + " not found at " + file.path);
    }
  }
  return problems;
}

std::vector<std::string> ConfidentialHostReport::ProblemsFor(TeeKind tee) const {
  std::vector<std::string> out;
  auto file_state = [&](const std::string& what) -> const FileCheck* {
    for (const FileCheck& f : files) {
      if (f.what == what) {
        return &f;
      }
    }
    return nullptr;
  };
  auto need_file = [&](const std::string& what, const std::string& config_key) {
    const FileCheck* f = file_state(what);
    if (f == nullptr) {
      out.push_back(what + " is not configured (" + config_key + ")");
    } else if (!f->present) {
      out.push_back(what + " not found at " + f->path);
    }
  };
  if (!qemu_found) {
    out.push_back("QEMU not found or not runnable: install qemu-system-x86 (confidential pods need it)");
  }
  if (tee == TeeKind::kNone) {
    need_file("OVMF code", "confidential.ovmf_code");
    need_file("OVMF vars template", "confidential.ovmf_vars");
    return out;
  }
  const std::string prefix = tee == TeeKind::kSevSnp ? "SEV-SNP:" : "TDX:";
  for (const std::string& problem : Problems()) {
    if (problem.rfind(prefix, 0) == 0) {
      out.push_back(problem);
    }
  }
  if (tee == TeeKind::kSevSnp) {
    const FileCheck* bios = file_state("SEV-SNP firmware");
    const FileCheck* igvm = file_state("IGVM file");
    bool have = (bios != nullptr && bios->present) || (igvm != nullptr && igvm->present);
    if (!have) {
      out.push_back(
          "SEV-SNP: no SNP firmware: set confidential.snp_firmware (OVMF built for SNP) or "
          "confidential.igvm_file to an existing file");
    }
  } else {
    need_file("TDX firmware", "confidential.tdx_firmware");
  }
  return out;
}

std::string ConfidentialHostReport::Describe() const {
  std::ostringstream out;
  auto yes = [](bool b) { return b ? "yes" : "no"; };
  out << "qemu: "
      << (qemu_found ? (qemu_version ? qemu_version->ToString() : std::string("unknown version"))
                     : std::string("not found"))
      << "\n";
  out << "qemu sev-snp-guest: " << yes(qemu_sev_snp_guest) << (qemu_objects_listed ? "" : " (from version)") << "\n";
  out << "qemu tdx-guest: " << yes(qemu_tdx_guest) << (qemu_objects_listed ? "" : " (from version)") << "\n";
  out << "kvm_amd sev_snp: " << yes(sev_snp_kvm) << ", /dev/sev: " << yes(sev_device) << "\n";
  out << "kvm_intel tdx: " << yes(tdx_kvm) << "\n";
  for (const FileCheck& file : files) {
    out << file.what << ": " << file.path << (file.present ? "" : " (missing)") << "\n";
  }
  out << "SEV-SNP pods: " << (SevSnpUsable() ? "available" : "unavailable") << "\n";
  out << "TDX pods: " << (TdxUsable() ? "available" : "unavailable") << "\n";
  return out.str();
}

ConfidentialHostReport ProbeConfidentialHost(const ProbeOptions& options) {
  bool snp = ReadBoolParam(Join(options.root, "/sys/module/kvm_amd/parameters/sev_snp"));
  bool sev_dev = Exists(Join(options.root, "/dev/sev"));
  bool tdx = ReadBoolParam(Join(options.root, "/sys/module/kvm_intel/parameters/tdx"));
  std::optional<std::string> version;
  std::optional<std::string> objects;
  if (options.run_qemu) {
    version = RunQemu(options.qemu_binary, {"-version"});
    if (version) {
      objects = RunQemu(options.qemu_binary, {"-machine", "none", "-object", "help"});
    }
  }
  std::vector<FileCheck> files;
  auto add = [&](const std::string& what, const std::string& path) {
    if (!path.empty()) {
      files.push_back({what, path, Exists(Join(options.root, path))});
    }
  };
  add("OVMF code", options.ovmf_code);
  add("OVMF vars template", options.ovmf_vars);
  add("SEV-SNP firmware", options.snp_firmware);
  add("TDX firmware", options.tdx_firmware);
  add("IGVM file", options.igvm_file);
  return AssembleReport(snp, sev_dev, tdx, version, objects, std::move(files));
}

}  // namespace chrys::runtime::confidential
