#include "guest/agent/storage.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "base/file_util.h"
#include "base/scratch_disk.h"
#include "base/unique_fd.h"
#include "guest/agent/child_reaper.h"
#include "guest/agent/guest_init.h"
#include "guest/agent/log.h"

namespace chrys::guest {
namespace {

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\0')) {
    s.pop_back();
  }
  return s;
}

uint64_t g_walk_bytes = 0;
int AddSize(const char*, const struct stat* st, int type, FTW*) {
  if (type == FTW_F) {
    g_walk_bytes += static_cast<uint64_t>(st->st_blocks) * 512;
  }
  return 0;
}

}  // namespace

base::Result<std::string> FindDiskBySerial(const std::string& serial, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  do {
    DIR* dir = ::opendir("/sys/block");
    if (dir != nullptr) {
      std::string found;
      while (dirent* e = ::readdir(dir)) {
        std::string name = e->d_name;
        if (name.rfind("vd", 0) != 0) {
          continue;
        }
        auto s = base::ReadFile("/sys/block/" + name + "/serial", 256);
        if (s.ok() && Trim(*s) == serial) {
          found = "/dev/" + name;
          break;
        }
      }
      ::closedir(dir);
      if (!found.empty() && ::access(found.c_str(), F_OK) == 0) {
        return found;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (std::chrono::steady_clock::now() < deadline);
  return base::NotFound("no virtio-blk disk with serial '" + serial + "' is attached to this VM");
}

base::Status WaitUntilReadable(const std::string& device, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last = "not checked";
  while (true) {
    base::UniqueFd fd(::open(device.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (!fd) {
      last = std::string("open: ") + std::strerror(errno);
    } else {
      struct stat st {};
      uint64_t size = 0;
      if (::fstat(fd.get(), &st) == 0 && S_ISBLK(st.st_mode)) {
        if (::ioctl(fd.get(), BLKGETSIZE64, &size) != 0) {
          size = 0;
        }
      } else {
        size = static_cast<uint64_t>(st.st_size);
      }
      if (size > 0) {
        return base::Status::Ok();
      }
      last = "size 0";
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      std::string message = "disk " + device;
      message.append(" did not become readable within ")
          .append(std::to_string(timeout.count()))
          .append(" ms of hot-plug (")
          .append(last)
          .append(")");
      return base::Unavailable(message);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string OverlayOptions(const std::vector<std::string>& layer_dirs_bottom_first, const std::string& upper,
                           const std::string& work) {
  // overlayfs wants the top-most lower layer first.
  std::string lower;
  for (auto it = layer_dirs_bottom_first.rbegin(); it != layer_dirs_bottom_first.rend(); ++it) {
    lower += (lower.empty() ? "" : ":") + *it;
  }
  return "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work + ",index=off,redirect_dir=off";
}

bool HasExt4Superblock(const std::string& header) {
  return header.size() >= 1082 && static_cast<unsigned char>(header[1080]) == 0x53 &&
         static_cast<unsigned char>(header[1081]) == 0xEF;
}

base::Result<std::string> Storage::AcquireLayer(const std::string& serial) {
  std::string mountpoint = std::string(kLayersDir) + "/" + serial;
  if (layer_refs_[serial]++ > 0) {
    return mountpoint;
  }
  auto disk = FindDiskBySerial(serial, std::chrono::seconds(10));
  if (!disk.ok()) {
    layer_refs_.erase(serial);
    return disk.error();
  }
  if (auto readable = WaitUntilReadable(*disk, std::chrono::seconds(10)); !readable.ok()) {
    layer_refs_.erase(serial);
    return readable.error().Wrap("layer " + serial);
  }
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(mountpoint));
  if (::mount(disk->c_str(), mountpoint.c_str(), "erofs", MS_RDONLY | MS_NODEV | MS_NOSUID, nullptr) != 0) {
    int e = errno;
    layer_refs_.erase(serial);
    ::rmdir(mountpoint.c_str());
    return base::SystemError("mounting layer " + serial + " (" + *disk + ") as erofs", e);
  }
  return mountpoint;
}

void Storage::ReleaseLayer(const std::string& serial) {
  auto it = layer_refs_.find(serial);
  if (it == layer_refs_.end() || --it->second > 0) {
    return;
  }
  layer_refs_.erase(it);
  std::string mountpoint = std::string(kLayersDir) + "/" + serial;
  if (::umount2(mountpoint.c_str(), MNT_DETACH) != 0) {
    LogWarn("unmounting layer %s: %s", serial.c_str(), std::strerror(errno));
  }
  ::rmdir(mountpoint.c_str());
}

base::Result<std::string> Storage::EnsureScratch(const std::string& serial) {
  auto it = scratch_mounts_.find(serial);
  if (it != scratch_mounts_.end()) {
    return it->second;
  }
  CHRYS_ASSIGN_OR_RETURN(std::string disk, FindDiskBySerial(serial, std::chrono::seconds(10)));
  CHRYS_RETURN_IF_ERROR(WaitUntilReadable(disk, std::chrono::seconds(10)));
  std::string header;
  {
    base::UniqueFd fd(::open(disk.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
      return base::SystemError("open scratch disk " + disk);
    }
    header.resize(2048);
    ssize_t n = ::pread(fd.get(), header.data(), header.size(), 0);
    header.resize(n > 0 ? static_cast<size_t>(n) : 0);
  }
  if (!HasExt4Superblock(header)) {
    LogInfo("formatting blank scratch disk %s (%s) as ext4", serial.c_str(), disk.c_str());
    CHRYS_RETURN_IF_ERROR(WaitForContainerSupport(kContainerSupportWait));  // mkfs.ext4 is on the tools disk
    CHRYS_ASSIGN_OR_RETURN(auto mkfs, ChildReaper::Instance().Run(base::ScratchMkfsArgv("/sbin/mkfs.ext4", disk),
                                                                  std::chrono::seconds(120)));
    if (!mkfs.ok()) {
      return base::Internal("mkfs.ext4 on scratch disk " + serial + " failed: " + mkfs.output.substr(0, 2048));
    }
  }
  std::string mountpoint = std::string(kScratchDir) + "/" + serial;
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(mountpoint));
  // The disk was a new sparse file (zeros) when formatted (base::ScratchMkfsArgv): its inode tables need no
  // zeroing thread.
  if (::mount(disk.c_str(), mountpoint.c_str(), "ext4", MS_NODEV | MS_NOSUID, "noinit_itable") != 0) {
    return base::SystemError("mounting scratch disk " + serial + " (" + disk + ") as ext4");
  }
  scratch_mounts_[serial] = mountpoint;
  return mountpoint;
}

base::Status Storage::MountRootfs(const std::string& container_id, const v1::RootfsSource& source,
                                  const std::string& rootfs) {
  std::lock_guard lock(mu_);
  std::vector<std::string> acquired;
  std::vector<std::string> layer_dirs;
  auto undo_layers = [&] {
    for (const auto& s : acquired) {
      ReleaseLayer(s);
    }
  };
  for (const auto& serial : source.layer_serials()) {
    auto dir = AcquireLayer(serial);
    if (!dir.ok()) {
      undo_layers();
      return dir.error();
    }
    acquired.push_back(serial);
    layer_dirs.push_back(*dir);
  }
  for (const auto& dir : source.layer_dirs()) {
    // Validated to be <kPulledLayersDir>/<hex>; it must also really be a directory there, not a link.
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      undo_layers();
      return base::NotFound("pulled layer " + dir + " is not a directory in the guest (pull the image first)");
    }
    layer_dirs.push_back(dir);
  }
  std::string upper_root;
  if (!source.layer_dirs().empty() && source.scratch_serial().empty()) {
    upper_root = std::string(kPulledUpperDir) + "/" + container_id;
  } else if (source.scratch_serial().empty()) {
    upper_root = std::string(kUpperTmpfsDir) + "/" + container_id;
  } else {
    auto scratch = EnsureScratch(source.scratch_serial());
    if (!scratch.ok()) {
      undo_layers();
      return scratch.error();
    }
    upper_root = *scratch + "/containers/" + container_id;
  }
  // A leftover from an earlier container of the same id is stale: start clean.
  (void)base::RemoveTree(upper_root);
  std::string upper = upper_root + "/upper";
  std::string work = upper_root + "/work";
  auto made = base::MakeDirs(upper);
  if (made.ok()) {
    made = base::MakeDirs(work);
  }
  if (made.ok()) {
    made = base::MakeDirs(rootfs);
  }
  if (!made.ok()) {
    undo_layers();
    (void)base::RemoveTree(upper_root);
    return made.error();
  }
  std::string options = OverlayOptions(layer_dirs, upper, work);
  if (::mount("overlay", rootfs.c_str(), "overlay", 0, options.c_str()) != 0) {
    int e = errno;
    undo_layers();
    (void)base::RemoveTree(upper_root);
    return base::SystemError("mounting overlay for " + container_id, e);
  }
  container_sources_[container_id] = source;
  container_upper_roots_[container_id] = upper_root;
  return base::Status::Ok();
}

base::Status Storage::UnmountRootfs(const std::string& container_id, const std::string& rootfs) {
  std::lock_guard lock(mu_);
  auto it = container_sources_.find(container_id);
  if (it == container_sources_.end()) {
    return base::Status::Ok();
  }
  if (::umount2(rootfs.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
    return base::SystemError("unmounting rootfs of " + container_id);
  }
  (void)base::RemoveTree(container_upper_roots_[container_id]);
  for (const auto& serial : it->second.layer_serials()) {
    ReleaseLayer(serial);
  }
  container_sources_.erase(it);
  container_upper_roots_.erase(container_id);
  return base::Status::Ok();
}

uint64_t Storage::UpperUsage(const std::string& container_id) {
  std::string root;
  {
    std::lock_guard lock(mu_);
    auto it = container_upper_roots_.find(container_id);
    if (it == container_upper_roots_.end()) {
      return 0;
    }
    root = it->second + "/upper";
  }
  static std::mutex walk_mu;
  std::lock_guard lock(walk_mu);
  g_walk_bytes = 0;
  ::nftw(root.c_str(), AddSize, 16, FTW_PHYS | FTW_MOUNT);
  return g_walk_bytes;
}

base::Result<std::string> Storage::MountShare(const std::string& tag, const std::string& name, bool read_only) {
  std::lock_guard lock(mu_);
  std::string mountpoint = std::string(kSharesDir) + "/" + name;
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(mountpoint));
  unsigned long flags = MS_NODEV | MS_NOSUID | (read_only ? MS_RDONLY : 0);
  // A VM restored from a template gets its shares by hot-plug just before it runs: the device may still be probing
  // when the host asks, and an unknown tag fails with EINVAL until it is. Bounded: a tag that never comes fails.
  constexpr auto kProbeWait = std::chrono::seconds(5);
  auto deadline = std::chrono::steady_clock::now() + kProbeWait;
  while (::mount(tag.c_str(), mountpoint.c_str(), "virtiofs", flags, nullptr) != 0) {
    if (errno == EBUSY) {
      return mountpoint;
    }
    int e = errno;
    if ((e == EINVAL || e == ENOENT) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    ::rmdir(mountpoint.c_str());
    return base::SystemError(
        "mounting virtio-fs share '" + tag + "'" + (e == EINVAL ? " (no virtio-fs device has this tag)" : ""), e);
  }
  return mountpoint;
}

}  // namespace chrys::guest
