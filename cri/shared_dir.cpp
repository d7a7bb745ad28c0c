#include "cri/shared_dir.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include "base/file_util.h"
#include "base/unique_fd.h"

namespace chrys::cri {

base::Status PrepareSharedDir(const std::string& dir) {
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(dir, 0700));
  if (!base::MountPointsAtOrBelow(dir).empty()) {
    return base::Status::Ok();  // prepared by an earlier run
  }
  if (::mount(dir.c_str(), dir.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    return base::SystemError("bind-mount " + dir + " onto itself");
  }
  if (::mount(nullptr, dir.c_str(), nullptr, MS_SHARED, nullptr) != 0) {
    base::Error error = base::SystemError("make " + dir + " a shared mount");
    ::umount2(dir.c_str(), MNT_DETACH);
    return error;
  }
  return base::Status::Ok();
}

base::Status ReleaseSharedDir(const std::string& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    return errno == ENOENT ? base::Status::Ok() : base::SystemError("stat " + dir);
  }
  for (const auto& mount_point : base::MountPointsAtOrBelow(dir)) {
    if (::umount2(mount_point.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
      return base::SystemError("unmount " + mount_point);
    }
  }
  return base::RemoveTree(dir);
}

base::Status BindIntoSharedDir(const std::string& source, const std::string& target, bool read_only) {
  struct stat st {};
  if (::stat(source.c_str(), &st) != 0) {
    return base::SystemError("mount source " + source);
  }
  std::string parent = target.substr(0, target.rfind('/'));
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(parent, 0700));
  if (S_ISDIR(st.st_mode)) {
    if (::mkdir(target.c_str(), 0755) != 0 && errno != EEXIST) {
      return base::SystemError("mkdir " + target);
    }
  } else {
    base::UniqueFd fd(::open(target.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    if (!fd) {
      return base::SystemError("create " + target);
    }
  }
  if (::mount(source.c_str(), target.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
    return base::SystemError("bind-mount " + source + " at " + target);
  }
  if (read_only && ::mount(nullptr, target.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, nullptr) != 0) {
    base::Error error = base::SystemError("make " + target + " read-only");
    ::umount2(target.c_str(), MNT_DETACH);
    return error;
  }
  return base::Status::Ok();
}

base::Status UnbindFromSharedDir(const std::string& target) {
  for (const auto& mount_point : base::MountPointsAtOrBelow(target)) {
    if (::umount2(mount_point.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
      return base::SystemError("unmount " + mount_point);
    }
  }
  struct stat st {};
  if (::lstat(target.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode) ? ::rmdir(target.c_str()) != 0 : ::unlink(target.c_str()) != 0) {
      return base::SystemError("remove " + target);
    }
  }
  return base::Status::Ok();
}

}  // namespace chrys::cri
