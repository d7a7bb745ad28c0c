#include "guest/image/image_builder.h"

#include <dirent.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "guest/agent/guest_init.h"
#include "guest/image/cpio_writer.h"
#include "guest/image/systemd_stub/systemd_stub.h"
#include "guest/kmod/module_signature.h"

namespace chrys::guest {
namespace {

// The tools image's filesystem UUID (fixed: reproducible builds).
constexpr const char* kToolsUuid = "63687279-732d-746f-6f6c-732d76310001";

using base::Result;
using base::Status;

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  size_t e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

Result<std::string> Run(const std::vector<std::string>& argv, size_t max_output = 4 << 20) {
  base::CommandSpec spec;
  spec.argv = argv;
  spec.timeout = std::chrono::minutes(5);
  spec.max_output_bytes = max_output;
  CHRYS_ASSIGN_OR_RETURN(auto result, base::RunCommand(spec));
  if (!result.success()) {
    return base::Internal(argv[0] + " " + (argv.size() > 1 ? argv[1] : "") + " " + result.DescribeExit() + ": " +
                          base::Tail(result.stderr_data, 1024));
  }
  return result.stdout_data;
}

// The shared libraries `program` loads (transitively, as ldd resolves them); none for a static executable
// such as chrys-agent, for which ldd exits non-zero saying so.
// `library_dir`, when set, is searched first (LD_LIBRARY_PATH), so that a stand-in there replaces a system library
// together with the libraries only that one needed.
Result<std::vector<std::string>> SharedLibraryClosure(const std::string& program, const std::string& library_dir = "") {
  base::CommandSpec spec;
  spec.argv = {"ldd", program};
  if (!library_dir.empty()) {
    spec.extra_env.push_back("LD_LIBRARY_PATH=" + library_dir);
  }
  spec.timeout = std::chrono::minutes(1);
  CHRYS_ASSIGN_OR_RETURN(auto result, base::RunCommand(spec));
  if (!result.success()) {
    if ((result.stdout_data + result.stderr_data).find("not a dynamic executable") != std::string::npos) {
      return std::vector<std::string>{};
    }
    return base::Internal("ldd " + program + " " + result.DescribeExit() + ": " + base::Tail(result.stderr_data, 1024));
  }
  return ParseLddOutput(result.stdout_data);
}

// The version of the Debian package owning `path`, for the manifest ("unknown" off Debian).
std::string PackageVersionOf(const std::string& path) {
  auto owner = Run({"dpkg-query", "-S", path});
  if (!owner.ok()) {
    return "unknown";
  }
  std::string pkg = Trim(owner->substr(0, owner->find(':')));
  auto version = Run({"dpkg-query", "-W", "-f=${Version}", pkg});
  return version.ok() ? pkg + " " + Trim(*version) : pkg;
}

Result<std::string> PickKernelRelease(const ImageOptions& options) {
  if (!options.kernel_release.empty()) {
    return options.kernel_release;
  }
  DIR* dir = ::opendir(options.boot_dir.c_str());
  if (dir == nullptr) {
    return base::SystemError("opendir " + options.boot_dir);
  }
  std::vector<std::string> cloud;
  std::vector<std::string> generic;
  while (dirent* e = ::readdir(dir)) {
    std::string name = e->d_name;
    if (name.rfind("vmlinuz-", 0) != 0) {
      continue;
    }
    std::string release = name.substr(8);
    if (release.find("-cloud-amd64") != std::string::npos) {
      cloud.push_back(release);
    } else if (release.find("-amd64") != std::string::npos) {
      generic.push_back(release);
    }
  }
  ::closedir(dir);
  auto& pool = cloud.empty() ? generic : cloud;
  if (pool.empty()) {
    return base::NotFound("no Debian amd64 kernel in " + options.boot_dir +
                          " (install linux-image-cloud-amd64 or linux-image-amd64)");
  }
  std::sort(pool.begin(), pool.end(), [](const std::string& a, const std::string& b) {
    return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
  });
  return pool.back();
}

// Reads a program and strips it into memory (debug info is useless in the guest and large).
Result<std::string> StrippedBinary(const std::string& path, const std::string& scratch_dir) {
  std::string tmp = scratch_dir + "/strip.tmp";
  CHRYS_RETURN_IF_ERROR(Run({"strip", "--strip-all", "-o", tmp, path}).ok()
                            ? Status::Ok()
                            : Status(base::Internal("strip " + path + " failed")));
  auto data = base::ReadFile(tmp, 512 << 20);
  ::unlink(tmp.c_str());
  return data;
}

// Adds `path` (a file) at the same absolute path inside the archive, following symlinks for the content.
Status AddHostFile(CpioArchive& archive, const std::string& host_path, const std::string& archive_path, uint32_t mode,
                   const std::string& scratch_dir, bool strip) {
  std::string data;
  if (strip) {
    CHRYS_ASSIGN_OR_RETURN(data, StrippedBinary(host_path, scratch_dir));
  } else {
    CHRYS_ASSIGN_OR_RETURN(data, base::ReadFile(host_path, 512 << 20));
  }
  CpioEntry e;
  e.mode = mode;
  e.data = std::move(data);
  return archive.Add(archive_path.front() == '/' ? archive_path.substr(1) : archive_path, std::move(e));
}

// Copies a host program or library (stripped) to `dest` in a staging tree, creating its directories.
Status CopyToTree(const std::string& host_path, const std::string& dest, const std::string& scratch_dir) {
  CHRYS_ASSIGN_OR_RETURN(std::string data, StrippedBinary(host_path, scratch_dir));
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(dest.substr(0, dest.rfind('/'))));
  return base::WriteFileAtomic(dest, data, 0755);
}

Status AddDir(CpioArchive& archive, const std::string& path, uint32_t mode = 0755) {
  CpioEntry e;
  e.type = CpioEntry::Type::kDirectory;
  e.mode = mode;
  return archive.Add(path, e);
}

Status AddSymlink(CpioArchive& archive, const std::string& path, const std::string& target) {
  CpioEntry e;
  e.type = CpioEntry::Type::kSymlink;
  e.mode = 0777;
  e.data = target;
  return archive.Add(path, e);
}

Result<std::string> Compress(const std::string& compression, const std::string& in_path, const std::string& out_path) {
  if (compression == "lz4") {
    // The kernel unpacks only lz4's legacy frame format (-l). Fixed level: deterministic output.
    CHRYS_RETURN_IF_ERROR(Run({"lz4", "-l", "-9", "-q", "-f", in_path, out_path}).ok()
                              ? Status::Ok()
                              : Status(base::Internal("lz4 failed")));
  } else if (compression == "zstd") {
    // Single-threaded, fixed level: deterministic output.
    CHRYS_RETURN_IF_ERROR(Run({"zstd", "-q", "-f", "-19", "-T1", "--no-progress", in_path, "-o", out_path}).ok()
                              ? Status::Ok()
                              : Status(base::Internal("zstd failed")));
  } else if (compression == "xz") {
    // The kernel's xz decoder wants CRC32 checks.
    auto out = Run({"xz", "--check=crc32", "-9", "-T1", "-c", in_path}, 256 << 20);
    if (!out.ok()) {
      return out.error();
    }
    CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(out_path, *out));
  } else if (compression == "gzip") {
    auto out = Run({"gzip", "-n", "-9", "-c", in_path}, 256 << 20);
    if (!out.ok()) {
      return out.error();
    }
    CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(out_path, *out));
  } else {
    return base::InvalidArgument("compression must be lz4, zstd, xz or gzip, not '" + compression + "'");
  }
  return base::ReadFile(out_path, 512 << 20);
}

}  // namespace

const std::vector<std::string>& GuestModules() {
  static const std::vector<std::string> modules = {"virtio_pci", "virtio_mmio",    "virtio_blk",
                                                   "virtio_net", "virtio_console", "vmw_vsock_virtio_transport",
                                                   "erofs",      "overlay",        "virtiofs"};
  return modules;
}

Result<std::vector<std::string>> ParseLddOutput(const std::string& text) {
  std::vector<std::string> libs;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    line = Trim(line);
    if (line.empty() || line.rfind("linux-vdso", 0) == 0 || line.find("statically linked") != std::string::npos) {
      continue;
    }
    if (line.find("not found") != std::string::npos) {
      return base::NotFound("ldd: " + line);
    }
    std::string path;
    auto arrow = line.find("=> ");
    if (arrow != std::string::npos) {
      path = line.substr(arrow + 3);
    } else {
      path = line;  // the interpreter: "/lib64/ld-linux-x86-64.so.2 (0x...)"
    }
    path = Trim(path.substr(0, path.find(" (")));
    if (!path.empty() && path.front() == '/' && std::find(libs.begin(), libs.end(), path) == libs.end()) {
      libs.push_back(path);
    }
  }
  return libs;
}

std::vector<std::pair<std::string, std::vector<std::string>>> ParseModulesDep(const std::string& text) {
  std::vector<std::pair<std::string, std::vector<std::string>>> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) {
      continue;
    }
    std::vector<std::string> deps;
    std::istringstream rest(line.substr(colon + 1));
    std::string d;
    while (rest >> d) {
      deps.push_back(d);
    }
    out.emplace_back(line.substr(0, colon), std::move(deps));
  }
  return out;
}

Result<std::string> FindModulePath(const std::vector<std::pair<std::string, std::vector<std::string>>>& deps,
                                   const std::string& name) {
  for (const auto& [path, unused] : deps) {
    std::string file = path.substr(path.rfind('/') + 1);
    for (const char* ext : {".ko", ".ko.xz", ".ko.zst"}) {
      if (file == name + ext) {
        return path;
      }
    }
  }
  return base::NotFound("kernel module " + name + " is not in modules.dep (built in, or missing from this kernel)");
}

std::string Sha256Hex(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(hex[digest[i] >> 4]);
    out.push_back(hex[digest[i] & 15]);
  }
  return out;
}

Result<ImageResult> BuildGuestImage(const ImageOptions& options) {
  if (options.agent_path.empty()) {
    return base::InvalidArgument("the path of the built chrys-agent is required");
  }
  CHRYS_ASSIGN_OR_RETURN(std::string release, PickKernelRelease(options));
  std::string kernel_src = options.boot_dir + "/vmlinuz-" + release;
  std::string module_dir = options.modules_root + "/" + release;
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(options.output_dir));
  std::string scratch = options.output_dir + "/.build";
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(scratch));

  CpioArchive archive;
  for (const char* d :
       {"dev", "proc", "sys", "run", "tmp", "etc", "var", "root", "mnt", "tools", "usr/bin", "usr/sbin"}) {
    CHRYS_RETURN_IF_ERROR(AddDir(archive, d, std::string(d) == "tmp" ? 01777 : 0755));
  }
  CpioEntry console;
  console.type = CpioEntry::Type::kCharDevice;
  console.mode = 0600;
  console.rdev_major = 5;
  console.rdev_minor = 1;
  CHRYS_RETURN_IF_ERROR(archive.Add("dev/console", console));
  CpioEntry passwd;
  passwd.data = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
  CHRYS_RETURN_IF_ERROR(archive.Add("etc/passwd", passwd));
  CpioEntry group;
  group.data = "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n";
  CHRYS_RETURN_IF_ERROR(archive.Add("etc/group", group));

  // The agent (static) and busybox (static) boot from the initramfs. crun, mkfs.ext4 and their shared libraries go
  // on the tools disk (see kGuestToolsSerial); the initramfs links to them below kGuestToolsDir.
  CHRYS_RETURN_IF_ERROR(AddHostFile(archive, options.agent_path, "init", 0755, scratch, true));
  CHRYS_RETURN_IF_ERROR(AddHostFile(archive, options.busybox_path, "bin/busybox", 0755, scratch, false));
  CHRYS_RETURN_IF_ERROR(AddSymlink(archive, "bin/sh", "busybox"));
  std::string tools_root = scratch + "/tools";
  (void)base::RemoveTree(tools_root);  // a failed earlier build may have left a staging tree
  const std::string tools_dir = kGuestToolsDir;
  // crun gets the libsystemd stand-in (systemd_stub/libsystemd_stub.c): five fewer libraries to map on every
  // crun run. The loader finds it where the real one would be, beside libc.
  std::string stub_dir = scratch + "/systemd-stub";
  std::string stub_path = stub_dir + "/" + kSystemdSoname;
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(stub_dir));
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(
      stub_path, std::string(reinterpret_cast<const char*>(kSystemdStub), kSystemdStubSize), 0755));
  std::vector<std::string> libs;  // where each library goes in the tools tree
  std::map<std::string, std::string> lib_sources;
  for (const auto& [program, at, library_dir] :
       {std::tuple{options.crun_path, std::string("/usr/bin/crun"), stub_dir},
        std::tuple{options.mkfs_ext4_path, std::string("/sbin/mkfs.ext4"), std::string()}}) {
    CHRYS_RETURN_IF_ERROR(CopyToTree(program, tools_root + at, scratch));
    CHRYS_RETURN_IF_ERROR(AddSymlink(archive, at.substr(1), tools_dir + at));
    CHRYS_ASSIGN_OR_RETURN(auto found, SharedLibraryClosure(program, library_dir));
    std::string libc_dir;
    for (const auto& lib : found) {
      if (lib.size() > 10 && lib.compare(lib.size() - 10, 10, "/libc.so.6") == 0) {
        libc_dir = lib.substr(0, lib.size() - 10);
      }
    }
    for (auto& lib : found) {
      std::string dest = lib;
      if (lib == stub_path) {
        if (libc_dir.empty()) {
          return base::Internal("ldd " + program + " names no libc.so.6: nowhere to put the libsystemd stand-in");
        }
        dest = libc_dir + "/" + kSystemdSoname;
      }
      if (lib_sources.emplace(dest, lib).second) {
        libs.push_back(dest);
      }
    }
  }
  std::vector<std::string> lib_dirs;
  for (const auto& lib : libs) {
    CHRYS_RETURN_IF_ERROR(CopyToTree(lib_sources[lib], tools_root + lib, scratch));
    std::string dir = lib.substr(0, lib.rfind('/'));
    if (std::find(lib_dirs.begin(), lib_dirs.end(), dir) == lib_dirs.end()) {
      lib_dirs.push_back(dir);
    }
  }
  // Whole library directories link to the disk (the dynamic loader's own path, /lib64, among them).
  for (const auto& dir : lib_dirs) {
    CHRYS_RETURN_IF_ERROR(AddSymlink(archive, dir.substr(1), tools_dir + dir));
  }
  std::string tools_name = "tools.erofs";
  std::string tools_path = options.output_dir + "/" + tools_name;
  // Fixed timestamps and UUID, every file root's: same inputs, same bytes.
  CHRYS_RETURN_IF_ERROR(Run({"mkfs.erofs", "--quiet", "--all-root", "-T0", "--ignore-mtime",
                             "-U" + std::string(kToolsUuid), tools_path + ".tmp", tools_root})
                                .ok()
                            ? Status::Ok()
                            : Status(base::Internal("mkfs.erofs of the guest tools image failed")));
  if (::rename((tools_path + ".tmp").c_str(), tools_path.c_str()) != 0) {
    return base::SystemError("rename " + tools_path);
  }
  CHRYS_ASSIGN_OR_RETURN(std::string tools_image, base::ReadFile(tools_path, 512 << 20));

  // Kernel modules in load order.
  CHRYS_ASSIGN_OR_RETURN(std::string dep_text, base::ReadFile(module_dir + "/modules.dep", 16 << 20));
  auto deps = ParseModulesDep(dep_text);
  std::vector<std::string> wanted;
  for (const auto& m : GuestModules()) {
    CHRYS_ASSIGN_OR_RETURN(std::string path, FindModulePath(deps, m));
    wanted.push_back(path);
  }
  std::vector<std::string> order = ModuleLoadOrder(wanted, deps);
  std::string load_list;
  for (const auto& rel : order) {
    std::string src = module_dir;
    src.append("/").append(rel);
    std::string data;
    std::string name = rel;
    if (rel.size() > 3 && rel.substr(rel.size() - 3) == ".xz") {
      CHRYS_ASSIGN_OR_RETURN(data, Run({"xz", "-dc", src}, 64 << 20));
      name = rel.substr(0, rel.size() - 3);
    } else if (rel.size() > 4 && rel.substr(rel.size() - 4) == ".zst") {
      CHRYS_ASSIGN_OR_RETURN(data, Run({"zstd", "-dc", src}, 64 << 20));
      name = rel.substr(0, rel.size() - 4);
    } else {
      CHRYS_ASSIGN_OR_RETURN(data, base::ReadFile(src, 64 << 20));
    }
    // Unsigned: the kernel would hash each module to check a signature the image's own integrity already
    // covers (the host hands this initramfs to the VMM itself).
    CHRYS_ASSIGN_OR_RETURN(data, kmod::StripModuleSignature(std::move(data), rel));
    CpioEntry e;
    e.mode = 0644;
    e.data = std::move(data);
    std::string member = "lib/modules/";
    member.append(release).append("/").append(name);
    CHRYS_RETURN_IF_ERROR(archive.Add(member, std::move(e)));
    load_list += name + "\n";
  }
  CpioEntry list;
  list.data = load_list;
  CHRYS_RETURN_IF_ERROR(archive.Add(std::string(kModuleListPath).substr(1), list));

  std::string cpio = archive.Serialize(0);
  std::string cpio_path = scratch + "/initramfs.cpio";
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(cpio_path, cpio));
  std::string initramfs_name = "initramfs.cpio." + options.compression;
  std::string initramfs_path = options.output_dir + "/" + initramfs_name;
  CHRYS_ASSIGN_OR_RETURN(std::string initramfs, Compress(options.compression, cpio_path, initramfs_path + ".tmp"));
  if (::rename((initramfs_path + ".tmp").c_str(), initramfs_path.c_str()) != 0) {
    return base::SystemError("rename " + initramfs_path);
  }
  CHRYS_ASSIGN_OR_RETURN(std::string kernel, base::ReadFile(kernel_src, 256 << 20));
  std::string kernel_path = options.output_dir + "/vmlinuz";
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(kernel_path, kernel, 0644));
  (void)base::RemoveTree(scratch);

  CHRYS_ASSIGN_OR_RETURN(std::string agent, base::ReadFile(options.agent_path, 512 << 20));
  nlohmann::json manifest;
  manifest["format"] = 1;
  manifest["kernel"] = {{"path", kernel_path},         {"file", "vmlinuz"},
                        {"release", release},          {"package", PackageVersionOf(kernel_src)},
                        {"sha256", Sha256Hex(kernel)}, {"bytes", kernel.size()}};
  manifest["initramfs"] = {{"path", initramfs_path},
                           {"file", initramfs_name},
                           {"compression", options.compression},
                           {"sha256", Sha256Hex(initramfs)},
                           {"bytes", initramfs.size()},
                           {"uncompressed_bytes", cpio.size()},
                           {"uncompressed_sha256", Sha256Hex(cpio)}};
  manifest["cmdline"] = kGuestKernelCmdline;
  manifest["agent"] = {{"version", CHRYS_AGENT_VERSION},
                       {"sha256", Sha256Hex(agent)},
                       {"virtio_serial_port", "chrys.agent"},
                       {"vsock_port", 1024}};
  manifest["components"] = {{"crun", PackageVersionOf(options.crun_path)},
                            {"libsystemd", "chrysalis stand-in (crun's systemd integration is unused in the guest)"},
                            {"busybox", PackageVersionOf(options.busybox_path)},
                            {"e2fsprogs", PackageVersionOf(options.mkfs_ext4_path)}};
  manifest["tools_disk"] = {{"file", tools_name},         {"path", tools_path},    {"serial", kGuestToolsSerial},
                            {"mount", kGuestToolsDir},    {"filesystem", "erofs"}, {"sha256", Sha256Hex(tools_image)},
                            {"bytes", tools_image.size()}};
  manifest["modules"] = order;
  manifest["libraries"] = libs;
  std::string manifest_path = options.output_dir + "/manifest.json";
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(manifest_path, manifest.dump(2) + "\n"));
  return ImageResult{kernel_path, initramfs_path, manifest_path, initramfs.size()};
}

}  // namespace chrys::guest
