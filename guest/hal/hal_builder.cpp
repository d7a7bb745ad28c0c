#include "guest/hal/hal_builder.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "guest/hal/hal_scripts.h"
#include "guest/kmod/module_signature.h"

namespace chrys::guest::hal {

namespace fs = std::filesystem;
using base::Result;
using base::Status;

namespace {

constexpr const char* kHostCaBundle = "/etc/ssl/certs/ca-certificates.crt";

constexpr const char* kKernelOnEsp = "/chrys/vmlinuz";
constexpr const char* kInitrdOnEsp = "/chrys/initrd.img";

// Runs a build tool; a non-zero exit becomes an error quoting its stderr.
Result<base::CommandResult> Run(std::vector<std::string> argv, std::vector<std::string> extra_env = {},
                                std::chrono::seconds timeout = std::chrono::seconds(120)) {
  base::CommandSpec spec;
  spec.argv = std::move(argv);
  spec.extra_env = std::move(extra_env);
  spec.timeout = timeout;
  CHRYS_ASSIGN_OR_RETURN(base::CommandResult result, base::RunCommand(spec));
  if (!result.success()) {
    return base::Internal(spec.argv[0] + " " + result.DescribeExit() + ": " +
                          base::Tail(result.stderr_data + result.stdout_data, 1500));
  }
  return result;
}

// Runs a build step; failures keep the tool's own message behind `context`.
Status RunStep(const std::string& context, std::vector<std::string> argv, std::vector<std::string> env) {
  auto result = Run(std::move(argv), std::move(env));
  if (!result.ok()) {
    return result.error().Wrap(context);
  }
  return Status::Ok();
}

// mkfs.ext4 -d copies each source file's ctime and atime, which no one can set on the host; rewrite them
// (for the root inode and every allocated inode from lost+found on) so the image depends on content only.
Status ClampExt4InodeTimes(const std::string& image, int64_t epoch, const std::vector<std::string>& env) {
  CHRYS_ASSIGN_OR_RETURN(base::CommandResult header, Run({"dumpe2fs", "-h", image}, env));
  uint64_t inode_count = 0;
  uint64_t free_inodes = 0;
  std::istringstream in(header.stdout_data);
  std::string line;
  while (std::getline(in, line)) {
    auto value = [&](const char* key, uint64_t* out) {
      if (line.rfind(key, 0) == 0) {
        *out = std::strtoull(line.c_str() + std::strlen(key), nullptr, 10);
      }
    };
    value("Inode count:", &inode_count);
    value("Free inodes:", &free_inodes);
  }
  if (inode_count == 0 || free_inodes >= inode_count) {
    return base::Internal("cannot read the inode counts of " + image + " from dumpe2fs");
  }
  // mke2fs -d allocates inodes in sequence, so the used ones are 1..used (1-10 reserved).
  uint64_t used = inode_count - free_inodes;
  std::string when = "@" + std::to_string(epoch);
  std::string script;
  auto clamp = [&](uint64_t ino) {
    for (const char* field : {"ctime", "atime", "mtime", "crtime"}) {
      script += "sif <" + std::to_string(ino) + "> " + field + " " + when + "\n";
    }
  };
  clamp(2);
  for (uint64_t ino = 11; ino <= used; ++ino) {
    clamp(ino);
  }
  std::string script_path = image + ".debugfs";
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(script_path, script));
  auto ran = Run({"debugfs", "-w", "-f", script_path, image}, env);
  (void)base::RemoveFileIfExists(script_path);
  if (!ran.ok()) {
    return ran.error().Wrap("debugfs (clamping inode times)");
  }
  if (ran->stderr_data.find("Couldn't") != std::string::npos || ran->stderr_data.find("rror") != std::string::npos) {
    return base::Internal("debugfs could not clamp inode times: " + base::Tail(ran->stderr_data, 500));
  }
  return Status::Ok();
}

Status FsError(const std::string& what, const std::error_code& ec) {
  return base::Internal(what + ": " + ec.message());
}

// Removes the scratch directory on every exit path.
class ScratchDir {
 public:
  explicit ScratchDir(std::string path) : path_(std::move(path)) {}
  ~ScratchDir() { (void)base::RemoveTree(path_); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A directory tree being assembled into an image.
class Staging {
 public:
  explicit Staging(std::string root) : root_(std::move(root)) {}

  const std::string& root() const { return root_; }
  std::string Path(const std::string& rel) const { return root_ + "/" + (rel[0] == '/' ? rel.substr(1) : rel); }

  Status MakeDir(const std::string& rel, mode_t mode = 0755) {
    CHRYS_RETURN_IF_ERROR(base::MakeDirs(Path(rel), 0755));
    if (::chmod(Path(rel).c_str(), mode) != 0) {
      return base::SystemError("chmod " + Path(rel));
    }
    return Status::Ok();
  }

  Status WriteText(const std::string& rel, const std::string& text, mode_t mode = 0644) {
    CHRYS_RETURN_IF_ERROR(base::MakeDirs(fs::path(Path(rel)).parent_path().string()));
    return base::WriteFileAtomic(Path(rel), text, mode);
  }

  // Copies the content of `src` (symlinks followed) to `rel`, replacing whatever is there.
  Status CopyFile(const std::string& src, const std::string& rel, mode_t mode) {
    std::string dst = Path(rel);
    CHRYS_RETURN_IF_ERROR(base::MakeDirs(fs::path(dst).parent_path().string()));
    std::error_code ec;
    fs::remove(dst, ec);
    if (!fs::copy_file(src, dst, fs::copy_options::overwrite_existing, ec)) {
      return FsError("copy " + src + " to " + dst, ec);
    }
    if (::chmod(dst.c_str(), mode) != 0) {
      return base::SystemError("chmod " + dst);
    }
    return Status::Ok();
  }

  Status Symlink(const std::string& target, const std::string& rel) {
    std::string dst = Path(rel);
    CHRYS_RETURN_IF_ERROR(base::MakeDirs(fs::path(dst).parent_path().string()));
    ::unlink(dst.c_str());
    if (::symlink(target.c_str(), dst.c_str()) != 0) {
      return base::SystemError("symlink " + dst);
    }
    return Status::Ok();
  }

  // A dynamically linked program at the same path as on the host, with every library `ldd` names.
  Status AddProgram(const std::string& src, const std::string& rel) {
    CHRYS_RETURN_IF_ERROR(CopyFile(src, rel, 0755));
    base::CommandSpec spec;
    spec.argv = {"ldd", src};
    spec.timeout = std::chrono::seconds(30);
    CHRYS_ASSIGN_OR_RETURN(base::CommandResult ldd, base::RunCommand(spec));
    if (!ldd.success()) {
      // A static program (the agent is linked statically) needs no libraries; anything else is an error.
      if ((ldd.stdout_data + ldd.stderr_data).find("not a dynamic executable") != std::string::npos) {
        return Status::Ok();
      }
      return base::Internal("ldd " + src + " " + ldd.DescribeExit() + ": " + base::Tail(ldd.stderr_data, 500));
    }
    for (const std::string& lib : ParseLddOutput(ldd.stdout_data)) {
      CHRYS_RETURN_IF_ERROR(CopyFile(lib, lib, 0755));
    }
    return Status::Ok();
  }

  // busybox at /bin/busybox and a link per applet at its usual place (bin/sh, sbin/switch_root, ...).
  Status AddBusybox(const std::string& busybox) {
    CHRYS_RETURN_IF_ERROR(CopyFile(busybox, "bin/busybox", 0755));
    CHRYS_ASSIGN_OR_RETURN(base::CommandResult list, Run({busybox, "--list-full"}));
    std::istringstream in(list.stdout_data);
    std::string applet;
    while (std::getline(in, applet)) {
      if (applet.empty() || applet == "bin/busybox" || applet == "linuxrc") {
        continue;
      }
      CHRYS_RETURN_IF_ERROR(Symlink("/bin/busybox", applet));
    }
    return Status::Ok();
  }

  // Sets every timestamp in the tree to `epoch` (symlinks themselves included) for reproducible images.
  Status ClampTimes(int64_t epoch) {
    std::vector<std::string> paths;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(root_, fs::directory_options::none, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      paths.push_back(it->path().string());
    }
    if (ec) {
      return FsError("walk " + root_, ec);
    }
    paths.push_back(root_);
    timespec times[2] = {{static_cast<time_t>(epoch), 0}, {static_cast<time_t>(epoch), 0}};
    for (const std::string& p : paths) {
      if (::utimensat(AT_FDCWD, p.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
        return base::SystemError("utimensat " + p);
      }
    }
    return Status::Ok();
  }

  // Total bytes of regular files and the number of entries.
  std::pair<uint64_t, uint64_t> Measure() const {
    uint64_t bytes = 0;
    uint64_t entries = 0;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(root_, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      ++entries;
      if (it->is_regular_file(ec) && !it->is_symlink(ec)) {
        bytes += (it->file_size(ec) + 4095) / 4096 * 4096;
      }
    }
    return {bytes, entries};
  }

 private:
  std::string root_;
};

// Copies `src` into `disk` at `offset`, leaving all-zero blocks as holes.
Status WriteAt(const std::string& disk, uint64_t offset, const std::string& src, uint64_t max_bytes) {
  base::UniqueFd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) {
    return base::SystemError("open " + src);
  }
  base::UniqueFd out(::open(disk.c_str(), O_WRONLY | O_CLOEXEC));
  if (!out) {
    return base::SystemError("open " + disk);
  }
  std::vector<char> buf(1 << 20);
  uint64_t done = 0;
  while (true) {
    ssize_t n = ::read(in.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return base::SystemError("read " + src);
    }
    if (n == 0) {
      break;
    }
    if (done + static_cast<uint64_t>(n) > max_bytes) {
      return base::Internal(src + " does not fit its partition (" + std::to_string(max_bytes) + " bytes)");
    }
    bool zero = std::all_of(buf.begin(), buf.begin() + n, [](char c) { return c == 0; });
    if (!zero) {
      ssize_t off = 0;
      while (off < n) {
        ssize_t w = ::pwrite(out.get(), buf.data() + off, n - off, static_cast<off_t>(offset + done + off));
        if (w < 0) {
          if (errno == EINTR) {
            continue;
          }
          return base::SystemError("write " + disk);
        }
        off += w;
      }
    }
    done += n;
  }
  if (::fsync(out.get()) != 0) {
    return base::SystemError("fsync " + disk);
  }
  return Status::Ok();
}

Result<uint64_t> FileSize(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return base::SystemError("stat " + path);
  }
  return static_cast<uint64_t>(st.st_size);
}

Status CreateSizedFile(const std::string& path, uint64_t bytes) {
  (void)base::RemoveFileIfExists(path);
  base::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) {
    return base::SystemError("create " + path);
  }
  if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) {
    return base::SystemError("truncate " + path);
  }
  return Status::Ok();
}

int64_t ResolveEpoch(int64_t configured) {
  if (configured >= 0) {
    return configured;
  }
  if (const char* env = std::getenv("SOURCE_DATE_EPOCH")) {
    char* end = nullptr;
    long long value = std::strtoll(env, &end, 10);
    if (end != env && *end == '\0' && value >= 0) {
      return value;
    }
  }
  return kDefaultSourceDateEpoch;
}

// Measures each build step for the benchmark and build-info.json.
class StepTimer {
 public:
  explicit StepTimer(std::vector<BuildStep>* steps) : steps_(steps) {}
  void Done(const std::string& name) {
    auto now = std::chrono::steady_clock::now();
    steps_->push_back({name, std::chrono::duration<double>(now - last_).count()});
    last_ = now;
  }

 private:
  std::vector<BuildStep>* steps_;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

Status BuildRootTree(const HalImageConfig& c, Staging& root, bool* has_agent) {
  for (const char* dir :
       {"bin", "sbin", "usr/bin", "usr/sbin", "lib", "lib64", "etc", "dev", "proc", "sys", "run", "var", "root",
        "cocos", "cocos_init", "etc/certs", "etc/cocos", "var/lib/chrys", ".chrys-root"}) {
    CHRYS_RETURN_IF_ERROR(root.MakeDir(dir));
  }
  CHRYS_RETURN_IF_ERROR(root.MakeDir("tmp", 01777));
  CHRYS_RETURN_IF_ERROR(root.AddBusybox(c.busybox));
  CHRYS_RETURN_IF_ERROR(root.WriteText("sbin/init", kRootInitScript, 0755));
  if (!c.crun_binary.empty()) {
    CHRYS_RETURN_IF_ERROR(root.AddProgram(c.crun_binary, "usr/bin/crun"));
  }
  *has_agent = !c.agent_binary.empty();
  if (*has_agent) {
    CHRYS_RETURN_IF_ERROR(root.AddProgram(c.agent_binary, "usr/bin/chrys-agent"));
  }
  CHRYS_RETURN_IF_ERROR(root.WriteText("etc/fstab", RenderRootFstab()));
  CHRYS_RETURN_IF_ERROR(
      root.WriteText("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"));
  CHRYS_RETURN_IF_ERROR(root.WriteText("etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"));
  CHRYS_RETURN_IF_ERROR(root.WriteText("etc/hostname", "chrys-hal\n"));
  // The public CAs (Debian's ca-certificates) for in-guest pulls from HTTPS registries; a private registry's CA
  // comes with each pull request.
  if (::access(kHostCaBundle, R_OK) == 0) {
    CHRYS_RETURN_IF_ERROR(root.CopyFile(kHostCaBundle, "etc/ssl/certs/ca-certificates.crt", 0644));
  }
  CHRYS_RETURN_IF_ERROR(
      root.WriteText("etc/chrys-hal-release", "CHRYS_HAL=1\nAGENT=" + std::string(*has_agent ? "yes" : "no") + "\n"));
  return Status::Ok();
}

// Copies `wanted` and their dependencies below lib/modules/<release> of `tree`, with a modules.dep of their own
// and the load list `list_rel` (paths relative to the release directory, dependencies first).
Status AddModules(const std::vector<std::string>& wanted, const std::string& release, const std::string& modules_dir,
                  const std::string& list_rel, bool strip_signatures, Staging& tree) {
  CHRYS_ASSIGN_OR_RETURN(std::string dep, base::ReadFile(modules_dir + "/modules.dep"));
  auto builtin = base::ReadFile(modules_dir + "/modules.builtin");
  CHRYS_ASSIGN_OR_RETURN(std::vector<std::string> order,
                         ModuleLoadOrder(dep, wanted, builtin.ok() ? *builtin : std::string()));
  std::string list;
  for (const std::string& rel : order) {
    std::string dst = "lib/modules/";
    dst.append(release).append("/").append(rel);
    std::string src = modules_dir;
    src.append("/").append(rel);
    if (strip_signatures) {
      CHRYS_ASSIGN_OR_RETURN(std::string module, base::ReadFile(src, 256 << 20));
      CHRYS_ASSIGN_OR_RETURN(module, kmod::StripModuleSignature(std::move(module), rel));
      CHRYS_RETURN_IF_ERROR(tree.WriteText(dst, module));
    } else {
      CHRYS_RETURN_IF_ERROR(tree.CopyFile(src, dst, 0644));
    }
    list += rel + "\n";
  }
  // Its own modules.dep lets init load every module with one `modprobe -a` (one process instead of one or
  // more per module: each exec costs tens of milliseconds under TCG).
  CHRYS_ASSIGN_OR_RETURN(std::string own_dep, FilterModulesDep(dep, order));
  CHRYS_RETURN_IF_ERROR(tree.WriteText("lib/modules/" + release + "/modules.dep", own_dep));
  return tree.WriteText(list_rel, list);
}

Status BuildInitramfsTree(const HalImageConfig& c, const std::string& release, const std::string& modules_dir,
                          Staging& initrd) {
  for (const char* dir :
       {"dev", "proc", "sys", "run", "tmp", "root", "etc", "bin", "sbin", "usr/bin", "usr/sbin", "lib", "lib64"}) {
    CHRYS_RETURN_IF_ERROR(initrd.MakeDir(dir));
  }
  CHRYS_RETURN_IF_ERROR(initrd.AddBusybox(c.busybox));
  CHRYS_RETURN_IF_ERROR(initrd.WriteText("init", kInitramfsScript, 0755));
  if (c.dm_helper.empty() || ::access(c.dm_helper.c_str(), X_OK) != 0) {
    return base::NotFound("the initramfs needs chrys-hal-dm (dm-verity and LUKS2 setup), not found at '" + c.dm_helper +
                          "': build it (target chrys-hal-dm) or pass its path");
  }
  CHRYS_RETURN_IF_ERROR(initrd.AddProgram(c.dm_helper, "usr/sbin/chrys-hal-dm"));
  CHRYS_RETURN_IF_ERROR(initrd.AddProgram("/usr/sbin/mke2fs", "/usr/sbin/mke2fs"));
  CHRYS_RETURN_IF_ERROR(initrd.Symlink("mke2fs", "usr/sbin/mkfs.ext4"));
  if (::access("/etc/mke2fs.conf", R_OK) == 0) {
    CHRYS_RETURN_IF_ERROR(initrd.CopyFile("/etc/mke2fs.conf", "etc/mke2fs.conf", 0644));
  }
  return AddModules(c.modules, release, modules_dir, "lib/modules/chrys-modules.load", c.strip_module_signatures,
                    initrd);
}

nlohmann::json BuildInfoJson(const HalArtifacts& a, int64_t epoch) {
  nlohmann::json parts = nlohmann::json::array();
  for (const PartitionSpec& p : a.layout.partitions) {
    parts.push_back({{"number", p.number},
                     {"label", p.label},
                     {"offset_bytes", p.offset_bytes()},
                     {"size_bytes", p.size_bytes()},
                     {"type_guid", p.type_guid},
                     {"guid", p.unique_guid}});
  }
  nlohmann::json steps = nlohmann::json::object();
  for (const BuildStep& s : a.steps) {
    steps[s.name] = s.seconds;
  }
  return {{"roothash", a.roothash},
          {"kernel_release", a.kernel_release},
          {"kernel_cmdline", a.kernel_cmdline},
          {"has_agent", a.has_agent},
          {"source_date_epoch", epoch},
          {"disk_bytes", a.layout.total_bytes},
          {"partitions", parts},
          {"steps_seconds", steps},
          {"total_seconds", a.total_seconds}};
}

}  // namespace

std::vector<std::string> DefaultInitramfsModules() {
  return {"virtio_pci",     "virtio_scsi",    "sd_mod", "dm-mod",       "dm-verity", "dm-crypt", "ecb",     "xts",
          "algif_skcipher", "crc32c_generic", "ext4",   "9pnet_virtio", "9p",        "overlay",  "configfs"};
}

std::string DefaultDmHelper() {
  return CHRYS_HAL_DM_DEFAULT;
}

std::vector<std::string> DefaultRootModules() {
  return {"virtio_net", "virtio_console", "vmw_vsock_virtio_transport", "sev-guest"};
}

Result<std::string> FindDefaultKernel(const std::string& boot_dir) {
  std::vector<std::string> kernels;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(boot_dir, ec)) {
    std::string name = entry.path().filename().string();
    if (name.rfind("vmlinuz-", 0) == 0 && name.find("-cloud-") == std::string::npos && name.size() > 14 &&
        name.compare(name.size() - 6, 6, "-amd64") == 0) {
      kernels.push_back(entry.path().string());
    }
  }
  if (ec) {
    return base::NotFound("cannot list " + boot_dir + ": " + ec.message());
  }
  if (kernels.empty()) {
    return base::NotFound("no generic kernel /boot/vmlinuz-*-amd64 found: install linux-image-amd64");
  }
  // Debian release strings sort naturally enough with a version-aware comparison via `sort -V` semantics;
  // among same-ABI names plain ordering suffices, so take the lexicographically last.
  std::sort(kernels.begin(), kernels.end());
  return kernels.back();
}

Result<HalArtifacts> BuildHalImage(const HalImageConfig& c) {
  auto started = std::chrono::steady_clock::now();
  if (c.output_dir.empty()) {
    return base::InvalidArgument("output_dir is required");
  }
  if (c.verity_salt.size() != 64 || c.verity_salt.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return base::InvalidArgument("verity_salt must be 64 lower-case hex digits");
  }
  if (c.esp_mib < 32) {
    return base::InvalidArgument("esp_mib must be at least 32 (kernel, initramfs and GRUB live there)");
  }
  int64_t epoch = ResolveEpoch(c.source_date_epoch);
  std::string epoch_text = std::to_string(epoch);
  std::vector<std::string> time_env = {"SOURCE_DATE_EPOCH=" + epoch_text, "E2FSPROGS_FAKE_TIME=" + epoch_text,
                                       "LC_ALL=C", "TZ=UTC"};

  HalArtifacts a;
  std::string kernel = c.kernel;
  if (kernel.empty()) {
    CHRYS_ASSIGN_OR_RETURN(kernel, FindDefaultKernel());
  }
  std::string kernel_name = fs::path(kernel).filename().string();
  if (kernel_name.rfind("vmlinuz-", 0) != 0) {
    return base::InvalidArgument("kernel file name must be vmlinuz-<release> (to find its modules): " + kernel);
  }
  a.kernel_release = kernel_name.substr(8);
  std::string modules_dir = c.modules_root + "/" + a.kernel_release;
  if (::access((modules_dir + "/modules.dep").c_str(), R_OK) != 0) {
    return base::NotFound("no modules.dep under " + modules_dir + " for kernel " + kernel);
  }
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(c.output_dir));
  ScratchDir scratch(c.work_dir.empty() ? c.output_dir + "/.work" : c.work_dir);
  CHRYS_RETURN_IF_ERROR(base::RemoveTree(scratch.path()));
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(scratch.path()));
  StepTimer timer(&a.steps);

  std::string out = c.output_dir;
  a.disk_image = out + "/disk.img";
  a.rootfs_ext4 = out + "/rootfs.ext4";
  a.rootfs_verity = out + "/rootfs.verity";
  a.roothash_file = out + "/rootfs.roothash";
  a.initramfs = out + "/rootfs.cpio.gz";
  a.kernel = out + "/vmlinuz";
  a.build_info = out + "/build-info.json";

  // 1. The root tree and its ext4 image.
  Staging root(scratch.path() + "/root");
  CHRYS_RETURN_IF_ERROR(BuildRootTree(c, root, &a.has_agent));
  if (!c.root_modules.empty()) {
    CHRYS_RETURN_IF_ERROR(AddModules(c.root_modules, a.kernel_release, modules_dir,
                                     "lib/modules/chrys-root-modules.load", c.strip_module_signatures, root));
  }
  CHRYS_RETURN_IF_ERROR(root.ClampTimes(epoch));
  auto [content, entries] = root.Measure();
  uint64_t root_bytes = c.root_mib != 0 ? c.root_mib * kMiB : EstimateRootImageBytes(content, entries);
  timer.Done("root_tree");
  (void)base::RemoveFileIfExists(a.rootfs_ext4);
  CHRYS_RETURN_IF_ERROR(RunStep("mkfs.ext4 -d failed for the root image (root_mib too small?)",
                                {"mkfs.ext4",
                                 "-q",
                                 "-F",
                                 "-b",
                                 "4096",
                                 "-I",
                                 "256",
                                 "-m",
                                 "0",
                                 "-L",
                                 kRootLabel,
                                 "-U",
                                 c.root_fs_uuid,
                                 "-O",
                                 "^has_journal",
                                 "-E",
                                 "hash_seed=" + c.root_fs_uuid + ",root_owner=0:0,nodiscard",
                                 "-d",
                                 root.root(),
                                 a.rootfs_ext4,
                                 std::to_string(root_bytes / 1024) + "k"},
                                time_env));
  CHRYS_RETURN_IF_ERROR(ClampExt4InodeTimes(a.rootfs_ext4, epoch, time_env));
  timer.Done("mkfs_root");

  // 2. dm-verity hash tree and root hash.
  (void)base::RemoveFileIfExists(a.rootfs_verity);
  CHRYS_ASSIGN_OR_RETURN(
      base::CommandResult verity,
      Run({"veritysetup", "format", "--data-block-size=4096", "--hash-block-size=4096", "--hash=sha256",
           "--salt=" + c.verity_salt, "--uuid=" + c.verity_uuid, a.rootfs_ext4, a.rootfs_verity},
          time_env));
  CHRYS_ASSIGN_OR_RETURN(a.roothash, ParseVerityRootHash(verity.stdout_data));
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(a.roothash_file, a.roothash + "\n"));
  timer.Done("verity");

  // 3. The initramfs.
  Staging initrd(scratch.path() + "/initrd");
  CHRYS_RETURN_IF_ERROR(BuildInitramfsTree(c, a.kernel_release, modules_dir, initrd));
  CHRYS_RETURN_IF_ERROR(initrd.ClampTimes(epoch));
  CHRYS_RETURN_IF_ERROR(RunStep("packing the initramfs with cpio/gzip failed",
                                {"/bin/sh", "-c",
                                 // NOLINTNEXTLINE(bugprone-suspicious-missing-comma): one script, split in two lines
                                 "set -e; cd \"$1\"; find . -print0 | LC_ALL=C sort -z | "
                                 "cpio --null --reproducible --quiet -o -H newc -R 0:0 | gzip -n -6 > \"$2\"",
                                 "sh", initrd.root(), a.initramfs},
                                time_env));
  timer.Done("initramfs");

  // 4. The EFI system partition: GRUB, grub.cfg with roothash=, kernel, initramfs.
  a.kernel_cmdline = HalKernelCommandLine(a.roothash, c.extra_cmdline);
  std::string esp = scratch.path() + "/esp.img";
  std::string grub_efi = scratch.path() + "/BOOTX64.EFI";
  std::string grub_cfg = scratch.path() + "/grub.cfg";
  std::string kernel_copy = scratch.path() + "/vmlinuz";
  std::string initrd_copy = scratch.path() + "/initrd.img";
  CHRYS_RETURN_IF_ERROR(
      RunStep("grub-mkimage failed (is grub-efi-amd64-bin installed?)",
              {"grub-mkimage", "-O", "x86_64-efi", "-p", "/EFI/BOOT", "-o", grub_efi, "part_gpt", "fat", "normal",
               "linux", "echo", "configfile", "test", "search", "serial", "terminal"},
              time_env));
  CHRYS_RETURN_IF_ERROR(
      base::WriteFileAtomic(grub_cfg, RenderGrubConfig(a.kernel_cmdline, kKernelOnEsp, kInitrdOnEsp)));
  {
    std::error_code ec;
    fs::copy_file(kernel, kernel_copy, fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return base::Internal("copy " + kernel + ": " + ec.message());
    }
    fs::copy_file(a.initramfs, initrd_copy, fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return base::Internal("copy initramfs: " + ec.message());
    }
  }
  timespec times[2] = {{static_cast<time_t>(epoch), 0}, {static_cast<time_t>(epoch), 0}};
  for (const std::string& f : {grub_efi, grub_cfg, kernel_copy, initrd_copy}) {
    if (::utimensat(AT_FDCWD, f.c_str(), times, 0) != 0) {
      return base::SystemError("utimensat " + f);
    }
  }
  CHRYS_RETURN_IF_ERROR(CreateSizedFile(esp, c.esp_mib * kMiB));
  CHRYS_RETURN_IF_ERROR(RunStep("mkfs.vfat of the ESP failed",
                                {"mkfs.vfat", "--invariant", "-i", c.esp_volume_id, "-n", "CHRYS-ESP", esp}, time_env));
  CHRYS_RETURN_IF_ERROR(
      RunStep("mmd on the ESP failed (mtools)", {"mmd", "-i", esp, "::EFI", "::EFI/BOOT", "::chrys"}, time_env));
  for (const auto& [src, dst] :
       std::vector<std::pair<std::string, std::string>>{{grub_efi, "::EFI/BOOT/BOOTX64.EFI"},
                                                        {grub_cfg, "::EFI/BOOT/grub.cfg"},
                                                        {kernel_copy, std::string("::") + kKernelOnEsp},
                                                        {initrd_copy, std::string("::") + kInitrdOnEsp}}) {
    auto copied = Run({"mcopy", "-m", "-o", "-i", esp, src, dst}, time_env);
    if (!copied.ok()) {
      return copied.error().Wrap("ESP too small? (esp_mib=" + std::to_string(c.esp_mib) + ")");
    }
  }
  timer.Done("esp");

  // 5. The GPT disk: partitions written into a sparse file.
  CHRYS_ASSIGN_OR_RETURN(uint64_t verity_bytes, FileSize(a.rootfs_verity));
  CHRYS_ASSIGN_OR_RETURN(uint64_t root_image_bytes, FileSize(a.rootfs_ext4));
  CHRYS_ASSIGN_OR_RETURN(
      a.layout, ComputeDiskLayout(c.esp_mib * kMiB, root_image_bytes, verity_bytes, c.cocos_mib * kMiB, c.disk_ids));
  std::string disk_tmp = a.disk_image + ".tmp";
  CHRYS_RETURN_IF_ERROR(CreateSizedFile(disk_tmp, a.layout.total_bytes));
  std::vector<std::string> sgdisk = {"sgdisk"};
  for (std::string& arg : SgdiskArgs(disk_tmp, a.layout, c.disk_ids)) {
    sgdisk.push_back(std::move(arg));
  }
  auto partitioned = Run(sgdisk, time_env);
  if (!partitioned.ok()) {
    (void)base::RemoveFileIfExists(disk_tmp);
    return partitioned.error();
  }
  const std::array<std::string, 3> images = {esp, a.rootfs_ext4, a.rootfs_verity};
  for (size_t i = 0; i < images.size(); ++i) {
    const PartitionSpec& p = a.layout.partitions[i];
    Status written = WriteAt(disk_tmp, p.offset_bytes(), images[i], p.size_bytes());
    if (!written.ok()) {
      (void)base::RemoveFileIfExists(disk_tmp);
      return written.error();
    }
  }
  if (::rename(disk_tmp.c_str(), a.disk_image.c_str()) != 0) {
    return base::SystemError("rename " + disk_tmp);
  }
  {
    std::error_code ec;
    fs::copy_file(kernel, a.kernel, fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return base::Internal("copy kernel: " + ec.message());
    }
  }
  timer.Done("disk");
  a.total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(a.build_info, BuildInfoJson(a, epoch).dump(2) + "\n"));
  return a;
}

}  // namespace chrys::guest::hal
