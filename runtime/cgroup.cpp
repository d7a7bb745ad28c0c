#include "runtime/cgroup.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <sstream>
#include <thread>

#include "base/file_util.h"

namespace chrys::runtime {

using base::Result;
using base::Status;

namespace {

bool ValidSegment(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos;
}

}  // namespace

Result<std::vector<CgroupHierarchy>> DiscoverCgroupHierarchies(const std::string& mountinfo_path) {
  CHRYS_ASSIGN_OR_RETURN(std::string text, base::ReadFile(mountinfo_path, 4 << 20));
  static const std::set<std::string> kJoinable = {"cpu", "cpuacct", "memory", "pids", "blkio", "devices", "freezer"};
  std::vector<CgroupHierarchy> out;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    // "<id> <parent> <maj:min> <root> <mount point> <opts> [optional...] - <fstype> <source> <super opts>"
    size_t dash = line.find(" - ");
    if (dash == std::string::npos) {
      continue;
    }
    std::istringstream head(line.substr(0, dash));
    std::string id, parent, devno, root, mount_point;
    head >> id >> parent >> devno >> root >> mount_point;
    std::istringstream tail(line.substr(dash + 3));
    std::string fstype, source, super_opts;
    tail >> fstype >> source >> super_opts;
    if (fstype == "cgroup2") {
      out.push_back({mount_point, true});
    } else if (fstype == "cgroup") {
      std::istringstream opts(super_opts);
      std::string opt;
      bool joinable = false;
      while (std::getline(opts, opt, ',')) {
        if (kJoinable.count(opt) != 0) {
          joinable = true;
        }
      }
      if (joinable) {
        out.push_back({mount_point, false});
      }
    }
  }
  if (out.empty()) {
    return base::NotFound("no cgroup hierarchy is mounted (read " + mountinfo_path + ")");
  }
  return out;
}

Result<std::string> ExpandSystemdSlice(const std::string& slice) {
  const std::string suffix = ".slice";
  if (slice.size() <= suffix.size() || slice.compare(slice.size() - suffix.size(), suffix.size(), suffix) != 0 ||
      slice.find('/') != std::string::npos) {
    return base::InvalidArgument("cgroup_parent \"" + slice +
                                 "\" is not a systemd slice name (systemd cgroup driver expects e.g. "
                                 "kubepods-burstable-pod1.slice)");
  }
  std::string stem = slice.substr(0, slice.size() - suffix.size());
  if (stem == "-") {
    return std::string();  // the root slice
  }
  if (stem.empty() || stem.front() == '-' || stem.back() == '-' || stem.find("--") != std::string::npos) {
    return base::InvalidArgument("cgroup_parent \"" + slice + "\" is not a valid slice name");
  }
  std::string path;
  size_t pos = 0;
  while (true) {
    size_t dash = stem.find('-', pos);
    std::string prefix = stem.substr(0, dash);
    if (!path.empty()) {
      path += '/';
    }
    path += prefix + suffix;
    if (dash == std::string::npos) {
      break;
    }
    pos = dash + 1;
  }
  return path;
}

Result<std::string> VmmCgroupRelativePath(const std::string& cgroup_parent, CgroupDriver driver,
                                          const std::string& sandbox_id) {
  if (!ValidSegment(sandbox_id)) {
    return base::InvalidArgument("sandbox id \"" + sandbox_id + "\" cannot name a cgroup");
  }
  if (driver == CgroupDriver::kSystemd) {
    std::string slice = cgroup_parent.empty() ? "system.slice" : cgroup_parent;
    CHRYS_ASSIGN_OR_RETURN(std::string expanded, ExpandSystemdSlice(slice));
    return (expanded.empty() ? std::string() : expanded + "/") + "chrys-" + sandbox_id + ".scope";
  }
  std::string parent = cgroup_parent;
  while (!parent.empty() && parent.front() == '/') {
    parent.erase(0, 1);
  }
  while (!parent.empty() && parent.back() == '/') {
    parent.pop_back();
  }
  std::istringstream segments(parent);
  std::string segment;
  while (std::getline(segments, segment, '/')) {
    if (!ValidSegment(segment)) {
      return base::InvalidArgument("cgroup_parent \"" + cgroup_parent + "\" has an invalid path segment");
    }
  }
  return (parent.empty() ? std::string() : parent + "/") + "chrys-" + sandbox_id;
}

namespace {

// "a/b": not empty, and every segment a valid one (no "", ".", "..").
bool IsRelativeCgroupPath(const std::string& path) {
  std::istringstream segments(path);
  std::string segment;
  while (std::getline(segments, segment, '/')) {
    if (!ValidSegment(segment)) {
      return false;
    }
  }
  return !path.empty();
}

// Makes mount_point/relative_path one directory at a time, appending each one it made (not found) to `created`.
Result<std::string> MakeCgroupDirs(const std::string& mount_point, const std::string& relative_path,
                                   std::vector<std::string>& created) {
  std::string path = mount_point;
  std::istringstream segments(relative_path);
  std::string segment;
  while (std::getline(segments, segment, '/')) {
    path += "/" + segment;
    if (::mkdir(path.c_str(), 0755) == 0) {
      created.push_back(path);
    } else if (errno != EEXIST) {
      return base::SystemError("creating cgroup " + path);
    }
  }
  return path;
}

}  // namespace

Status CreateLowCpuWeightCgroup(const std::vector<CgroupHierarchy>& hierarchies, const std::string& relative_path) {
  if (!IsRelativeCgroupPath(relative_path)) {
    return base::InvalidArgument("cgroup path '" + relative_path + "' must be a relative path without '..'");
  }
  bool weighted = false;
  std::vector<std::string> created;  // the pool's parent outlives this call: its owner removes it
  for (const auto& h : hierarchies) {
    CHRYS_ASSIGN_OR_RETURN(std::string path, MakeCgroupDirs(h.mount_point, relative_path, created));
    // v2 has cpu.weight only where the parent enables the cpu controller; a v1 hierarchy without cpu has no shares.
    std::string weight_file = path + (h.unified ? "/cpu.weight" : "/cpu.shares");
    if (::access(weight_file.c_str(), W_OK) != 0) {
      continue;
    }
    CHRYS_RETURN_IF_ERROR(base::WriteInterfaceFile(weight_file, h.unified ? "1" : "2"));
    weighted = true;
  }
  if (!weighted) {
    return base::FailedPrecondition("no cgroup hierarchy offers a CPU weight for " + relative_path +
                                    " (no v1 cpu controller, and v2's is not enabled in the root's subtree_control)");
  }
  return Status::Ok();
}

void RemoveEmptyCgroup(const std::vector<CgroupHierarchy>& hierarchies, const std::string& relative_path) {
  if (!IsRelativeCgroupPath(relative_path)) {
    return;
  }
  for (const auto& h : hierarchies) {
    (void)::rmdir((h.mount_point + "/" + relative_path).c_str());  // busy or gone: left as it is
  }
}

Result<VmmCgroup> VmmCgroup::Create(const std::vector<CgroupHierarchy>& hierarchies, const std::string& relative_path) {
  VmmCgroup cg;
  for (const auto& h : hierarchies) {
    Result<std::string> path = MakeCgroupDirs(h.mount_point, relative_path, cg.created_dirs_);
    if (!path.ok()) {
      (void)cg.Remove(std::chrono::milliseconds(0));
      return path.error();
    }
    cg.procs_files_.push_back(*path + "/cgroup.procs");
  }
  return cg;
}

VmmCgroup VmmCgroup::FromCreatedDirs(std::vector<std::string> created_dirs) {
  VmmCgroup cg;
  cg.created_dirs_ = std::move(created_dirs);
  return cg;
}

Status VmmCgroup::MoveProcessesTo(const VmmCgroup& target) const {
  if (target.procs_files_.size() != procs_files_.size()) {
    return base::InvalidArgument("moving processes between cgroups of different hierarchies");
  }
  for (size_t i = 0; i < procs_files_.size(); ++i) {
    // A second pass catches a process forked while the first one moved its parent; nothing here forks twice.
    for (int pass = 0; pass < 3; ++pass) {
      CHRYS_ASSIGN_OR_RETURN(std::string pids, base::ReadFile(procs_files_[i], 1 << 20));
      if (pids.find_first_not_of(" \n") == std::string::npos) {
        break;
      }
      std::istringstream lines(pids);
      std::string pid;
      while (std::getline(lines, pid)) {
        if (pid.empty()) {
          continue;
        }
        Status moved = base::WriteInterfaceFile(target.procs_files_[i], pid);
        // ESRCH: it exited meanwhile, nothing left to move.
        auto pid_number = static_cast<pid_t>(std::strtol(pid.c_str(), nullptr, 10));
        if (!moved.ok() && pid_number > 0 && ::kill(pid_number, 0) == 0) {
          return moved.error().Wrap("moving process " + pid + " to " + target.procs_files_[i]);
        }
      }
    }
  }
  return Status::Ok();
}

Status VmmCgroup::Remove(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string first_error;
  for (auto it = created_dirs_.rbegin(); it != created_dirs_.rend(); ++it) {
    bool leaf = std::none_of(created_dirs_.begin(), created_dirs_.end(),
                             [&](const std::string& d) { return d.size() > it->size() && d.rfind(*it + "/", 0) == 0; });
    while (::rmdir(it->c_str()) != 0) {
      if (errno == ENOENT) {
        break;
      }
      // A parent we created may hold other pods' cgroups by now: it is theirs to remove then.
      if (!leaf) {
        break;
      }
      if (errno != EBUSY || std::chrono::steady_clock::now() >= deadline) {
        if (first_error.empty()) {
          first_error =
              errno == EBUSY ? *it + " still has processes" : base::SystemError("removing cgroup " + *it).message();
        }
        break;
      }
      // The kernel frees a cgroup shortly after its last task is reaped.
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  created_dirs_.erase(std::remove_if(created_dirs_.begin(), created_dirs_.end(),
                                     [](const std::string& d) { return ::access(d.c_str(), F_OK) != 0; }),
                      created_dirs_.end());
  if (!first_error.empty()) {
    return base::Internal(first_error);
  }
  return Status::Ok();
}

}  // namespace chrys::runtime
