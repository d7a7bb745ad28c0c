#include "guest/hal/hal_layout.h"

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <sstream>

namespace chrys::guest::hal {

namespace {

uint64_t RoundUpMiB(uint64_t bytes) {
  return (bytes + kMiB - 1) / kMiB * kMiB;
}

std::string NormalizeModuleName(std::string name) {
  size_t slash = name.rfind('/');
  if (slash != std::string::npos) {
    name = name.substr(slash + 1);
  }
  for (const char* suffix : {".ko.xz", ".ko.zst", ".ko.gz", ".ko"}) {
    std::string s(suffix);
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
      name.resize(name.size() - s.size());
      break;
    }
  }
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

std::string Trim(const std::string& text) {
  size_t start = text.find_first_not_of(" \t\r\n");
  if (start == std::string::npos) {
    return "";
  }
  size_t end = text.find_last_not_of(" \t\r\n");
  return text.substr(start, end - start + 1);
}

}  // namespace

base::Result<DiskLayout> ComputeDiskLayout(uint64_t esp_bytes, uint64_t root_bytes, uint64_t verity_bytes,
                                           uint64_t cocos_bytes, const DiskIds& ids) {
  if (esp_bytes == 0 || root_bytes == 0 || verity_bytes == 0 || cocos_bytes == 0) {
    return base::InvalidArgument("every HAL partition needs a non-zero size");
  }
  if (cocos_bytes < 32 * kMiB) {
    return base::InvalidArgument("the cocos partition must be at least 32 MiB (LUKS2 header plus an ext4 volume)");
  }
  struct Part {
    const char* label;
    const char* type;
    const std::string* guid;
    uint64_t bytes;
  };
  const Part parts[] = {{kEspLabel, kEspType, &ids.esp_guid, esp_bytes},
                        {kRootLabel, kRootType, &ids.root_guid, root_bytes},
                        {kVerityLabel, kVerityType, &ids.verity_guid, verity_bytes},
                        {kCocosLabel, kLinuxDataType, &ids.cocos_guid, cocos_bytes}};
  DiskLayout layout;
  uint64_t offset = kMiB;
  int number = 1;
  for (const Part& part : parts) {
    uint64_t size = RoundUpMiB(part.bytes);
    PartitionSpec spec;
    spec.number = number++;
    spec.label = part.label;
    spec.type_guid = part.type;
    spec.unique_guid = *part.guid;
    spec.first_lba = offset / kSectorBytes;
    spec.last_lba = (offset + size) / kSectorBytes - 1;
    layout.partitions.push_back(spec);
    offset += size;
  }
  layout.total_bytes = offset + kMiB;
  return layout;
}

std::vector<std::string> SgdiskArgs(const std::string& image, const DiskLayout& layout, const DiskIds& ids) {
  std::vector<std::string> args = {"--clear", "--disk-guid=" + ids.disk_guid};
  for (const PartitionSpec& p : layout.partitions) {
    std::string n = std::to_string(p.number);
    args.push_back("--new=" + n + ":" + std::to_string(p.first_lba) + ":" + std::to_string(p.last_lba));
    args.push_back("--typecode=" + n + ":" + p.type_guid);
    args.push_back("--change-name=" + n + ":" + p.label);
    args.push_back("--partition-guid=" + n + ":" + p.unique_guid);
  }
  args.push_back(image);
  return args;
}

std::string HalKernelCommandLine(const std::string& roothash, const std::string& extra) {
  std::string line = "console=ttyS0,115200 quiet panic=-1 roothash=" + roothash;
  if (!extra.empty()) {
    line += " " + extra;
  }
  return line;
}

std::string RenderGrubConfig(const std::string& cmdline, const std::string& kernel_path,
                             const std::string& initrd_path) {
  std::ostringstream out;
  out << "# Chrysalis HAL: boots at once; roothash= pins the dm-verity root the initramfs will accept.\n"
      << "set timeout=0\n"
      << "set default=0\n"
      << "echo \"CHRYS-HAL-MARK grub\"\n"
      << "menuentry \"Chrysalis HAL\" {\n"
      << "  linux " << kernel_path << " " << cmdline << "\n"
      << "  initrd " << initrd_path << "\n"
      << "}\n";
  return out.str();
}

std::string RenderRootFstab() {
  return "# Chrysalis HAL. Mounted by the initramfs before switch_root; the root itself is read-only.\n"
         "/dev/mapper/root_verity  /                ext4   ro,nodev                          0 0\n"
         "/dev/mapper/cocos_crypt  /cocos           ext4   rw,nodev,nosuid                   0 0\n"
         "tmpfs                    /tmp             tmpfs  rw,nosuid,nodev,mode=1777         0 0\n"
         "tmpfs                    /var             tmpfs  rw,nosuid,nodev,mode=0755         0 0\n"
         "/cocos/containers        /var/lib/chrys   none   bind                              0 0\n"
         "/cocos/cocos_init        /cocos_init      none   bind                              0 0\n"
         "certs_share              /etc/certs       9p     trans=virtio,version=9p2000.L,nofail  0 0\n"
         "env_share                /etc/cocos       9p     trans=virtio,version=9p2000.L,nofail  0 0\n";
}

base::Result<std::string> FilterModulesDep(const std::string& modules_dep, const std::vector<std::string>& included) {
  std::map<std::string, std::string> line_of;  // path -> its modules.dep line
  std::istringstream in(modules_dep);
  std::string line;
  while (std::getline(in, line)) {
    size_t colon = line.find(':');
    if (colon != std::string::npos) {
      line_of[Trim(line.substr(0, colon))] = line;
    }
  }
  std::set<std::string> wanted(included.begin(), included.end());
  std::string out;
  for (const std::string& path : included) {
    auto it = line_of.find(path);
    if (it == line_of.end()) {
      return base::NotFound("kernel module " + path + " is not in modules.dep");
    }
    std::istringstream deps(it->second.substr(it->second.find(':') + 1));
    std::string dep;
    while (deps >> dep) {
      if (wanted.count(dep) == 0) {
        return base::InvalidArgument("kernel module " + path + " needs " + dep + ", which is not included");
      }
    }
    out += it->second + "\n";
  }
  return out;
}

base::Result<std::vector<std::string>> ModuleLoadOrder(const std::string& modules_dep,
                                                       const std::vector<std::string>& wanted,
                                                       const std::string& modules_builtin) {
  std::map<std::string, std::pair<std::string, std::vector<std::string>>> by_name;  // name -> (path, deps)
  std::istringstream in(modules_dep);
  std::string line;
  while (std::getline(in, line)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) {
      continue;
    }
    std::string path = Trim(line.substr(0, colon));
    std::vector<std::string> deps;
    std::istringstream rest(line.substr(colon + 1));
    std::string dep;
    while (rest >> dep) {
      deps.push_back(dep);
    }
    by_name[NormalizeModuleName(path)] = {path, deps};
  }
  std::set<std::string> builtin;
  std::istringstream bin(modules_builtin);
  while (std::getline(bin, line)) {
    if (!Trim(line).empty()) {
      builtin.insert(NormalizeModuleName(Trim(line)));
    }
  }

  std::vector<std::string> order;
  std::set<std::string> done;
  std::set<std::string> visiting;
  // Depth-first: a module's dependencies are emitted before it.
  std::function<base::Status(const std::string&)> visit = [&](const std::string& name) -> base::Status {
    if (done.count(name) != 0) {
      return base::Status::Ok();
    }
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      return base::NotFound("kernel module " + name + " is not in modules.dep");
    }
    if (!visiting.insert(name).second) {
      return base::InvalidArgument("dependency cycle in modules.dep at " + name);
    }
    for (const std::string& dep : it->second.second) {
      CHRYS_RETURN_IF_ERROR(visit(NormalizeModuleName(dep)));
    }
    visiting.erase(name);
    done.insert(name);
    order.push_back(it->second.first);
    return base::Status::Ok();
  };
  for (const std::string& w : wanted) {
    std::string name = NormalizeModuleName(w);
    if (by_name.count(name) == 0 && builtin.count(name) != 0) {
      continue;
    }
    CHRYS_RETURN_IF_ERROR(visit(name));
  }
  return order;
}

std::vector<std::string> ParseLddOutput(const std::string& ldd_output) {
  std::vector<std::string> libs;
  std::istringstream in(ldd_output);
  std::string line;
  while (std::getline(in, line)) {
    std::string path;
    size_t arrow = line.find("=>");
    if (arrow != std::string::npos) {
      std::istringstream rest(line.substr(arrow + 2));
      rest >> path;
    } else {
      std::istringstream rest(line);
      rest >> path;
    }
    if (!path.empty() && path[0] == '/' && std::find(libs.begin(), libs.end(), path) == libs.end()) {
      libs.push_back(path);
    }
  }
  return libs;
}

base::Result<std::string> ParseVerityRootHash(const std::string& output) {
  std::istringstream in(output);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Root hash:", 0) == 0) {
      std::string hash = Trim(line.substr(10));
      bool hex = !hash.empty() && std::all_of(hash.begin(), hash.end(),
                                              [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
      if (hash.size() != 64 || !hex) {
        return base::Internal("veritysetup printed a malformed root hash \"" + hash + "\"");
      }
      return hash;
    }
  }
  return base::Internal("veritysetup output has no \"Root hash:\" line");
}

uint64_t EstimateRootImageBytes(uint64_t content_bytes, uint64_t entries) {
  // 256-byte inodes, one 4 KiB block per directory entry worst case, 25 % slack and 16 MiB for metadata.
  uint64_t bytes = content_bytes + entries * 4096 + entries * 256;
  bytes += bytes / 4 + 16 * kMiB;
  return RoundUpMiB(bytes);
}

}  // namespace chrys::guest::hal
