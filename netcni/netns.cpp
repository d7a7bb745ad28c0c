#include "netcni/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mutex>
#include <set>
#include <thread>

#include "base/file_util.h"

namespace chrys::netcni {
namespace {

using base::Status;

// Like iproute2, make the netns directory a shared mount point so that namespaces created here are also
// visible to processes in other mount namespaces (e.g. a chrysd running with a private /tmp).
void MakeDirShared(const std::string& dir) {
  // Once per directory and process: concurrent creators must not stack bind mounts of it on itself.
  static std::mutex mu;
  static std::set<std::string> done;
  std::lock_guard<std::mutex> lock(mu);
  if (!done.insert(dir).second) {
    return;
  }
  if (::mount("", dir.c_str(), "none", MS_SHARED | MS_REC, nullptr) == 0) {
    return;
  }
  if (errno != EINVAL) {
    return;  // best effort: the bind mounts below work without propagation
  }
  if (::mount(dir.c_str(), dir.c_str(), "none", MS_BIND | MS_REC, nullptr) == 0) {
    (void)::mount("", dir.c_str(), "none", MS_SHARED | MS_REC, nullptr);
  }
}

}  // namespace

NetnsHandle::NetnsHandle(std::string name, std::string dir, base::UniqueFd fd, bool owned)
    : name_(std::move(name)), dir_(std::move(dir)), path_(dir_ + "/" + name_), fd_(std::move(fd)), owned_(owned) {}

NetnsHandle::~NetnsHandle() {
  if (owned_) {
    (void)Remove();
  }
}

NetnsHandle& NetnsHandle::operator=(NetnsHandle&& other) noexcept {
  if (this != &other) {
    if (owned_) {
      (void)Remove();
    }
    name_ = std::move(other.name_);
    dir_ = std::move(other.dir_);
    path_ = std::move(other.path_);
    fd_ = std::move(other.fd_);
    owned_ = std::exchange(other.owned_, false);
  }
  return *this;
}

Status NetnsHandle::ValidateName(const std::string& name) {
  if (name.empty() || name.size() > 200) {
    return base::InvalidArgument("network namespace name must be 1..200 characters, got " +
                                 std::to_string(name.size()));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-'))) {
      return base::InvalidArgument("network namespace name \"" + name +
                                   "\" must start with a letter or digit and contain only letters, digits, "
                                   "'_', '.' and '-'");
    }
  }
  return Status::Ok();
}

base::Result<NetnsHandle> NetnsHandle::Create(const std::string& name, const std::string& dir) {
  CHRYS_RETURN_IF_ERROR(ValidateName(name));
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(dir));
  MakeDirShared(dir);
  const std::string path = dir + "/" + name;
  {
    base::UniqueFd mount_point(::open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444));
    if (!mount_point) {
      if (errno == EEXIST) {
        return base::MakeError(base::ErrorCode::kAlreadyExists, "network namespace " + path + " already exists");
      }
      return base::SystemError("create netns mount point " + path);
    }
  }
  // unshare() only moves the calling thread, so a throw-away thread makes the namespace and pins it.
  int thread_errno = 0;
  const char* failed_step = nullptr;
  std::thread worker([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      thread_errno = errno;
      failed_step = "unshare(CLONE_NEWNET)";
      return;
    }
    if (::mount("/proc/thread-self/ns/net", path.c_str(), "none", MS_BIND, nullptr) != 0) {
      thread_errno = errno;
      failed_step = "bind mount of the new namespace";
    }
  });
  worker.join();
  if (failed_step != nullptr) {
    ::unlink(path.c_str());
    return base::SystemError(std::string(failed_step) + " for " + path, thread_errno);
  }
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    base::Error e = base::SystemError("open " + path);
    (void)RemoveByName(name, dir);
    return e;
  }
  return NetnsHandle(name, dir, std::move(fd), /*owned=*/true);
}

base::Result<NetnsHandle> NetnsHandle::Open(const std::string& name, const std::string& dir) {
  CHRYS_RETURN_IF_ERROR(ValidateName(name));
  const std::string path = dir + "/" + name;
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    return base::SystemError("open network namespace " + path);
  }
  // A plain file left behind by a crash between create and bind mount is not a namespace.
  struct stat ns_stat {};
  struct stat proc_stat {};
  if (::fstat(fd.get(), &ns_stat) != 0 || ::stat("/proc/self/ns/net", &proc_stat) != 0 ||
      ns_stat.st_dev != proc_stat.st_dev) {
    return base::NotFound(path + " is not a mounted network namespace");
  }
  return NetnsHandle(name, dir, std::move(fd), /*owned=*/false);
}

Status NetnsHandle::RemoveByName(const std::string& name, const std::string& dir) {
  CHRYS_RETURN_IF_ERROR(ValidateName(name));
  const std::string path = dir + "/" + name;
  if (::umount2(path.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
    return base::SystemError("unmount network namespace " + path);
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return base::SystemError("remove network namespace " + path);
  }
  return Status::Ok();
}

bool NetnsHandle::Exists(const std::string& name, const std::string& dir) {
  if (!ValidateName(name).ok()) {
    return false;
  }
  return ::access((dir + "/" + name).c_str(), F_OK) == 0;
}

Status NetnsHandle::Remove() {
  owned_ = false;
  if (name_.empty()) {
    return Status::Ok();
  }
  fd_.Reset();
  return RemoveByName(name_, dir_);
}

Status RunInNetns(int netns_fd, const std::function<Status()>& fn) {
  Status result;
  std::thread worker([&] {
    if (::setns(netns_fd, CLONE_NEWNET) != 0) {
      result = base::SystemError("setns into the pod network namespace");
      return;
    }
    result = fn();
  });
  worker.join();
  return result;
}

}  // namespace chrys::netcni
