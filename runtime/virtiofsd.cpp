#include "runtime/virtiofsd.h"

#include <unistd.h>

#include <thread>

#include "base/file_util.h"
#include "base/subprocess.h"

namespace chrys::runtime {

base::Result<DetachedProcess> LaunchVirtiofsd(const std::string& binary, const std::string& socket_path,
                                              const FsShareSpec& share,
                                              const std::vector<std::string>& cgroup_procs_files,
                                              const std::string& log_path, std::chrono::milliseconds timeout) {
  (void)base::RemoveFileIfExists(socket_path);
  DetachedLaunchSpec helper;
  // sandbox=chroot works inside containers too (the namespace sandbox needs unprivileged user namespaces).
  helper.argv = {
      binary,          "--socket-path=" + socket_path, "-o", "source=" + share.host_dir, "-o", "cache=auto", "-o",
      "sandbox=chroot"};
  helper.cgroup_procs_files = cgroup_procs_files;
  helper.output_log_path = log_path;
  CHRYS_ASSIGN_OR_RETURN(DetachedProcess proc, DetachedProcess::Launch(helper));
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (::access(socket_path.c_str(), F_OK) != 0) {
    if (!proc.Alive() || std::chrono::steady_clock::now() >= deadline) {
      (void)proc.Terminate(std::chrono::seconds(1));
      auto log = base::ReadFile(log_path, 1 << 16);
      return base::Internal("virtiofsd for share \"" + share.tag + "\" did not create " + socket_path + ": " +
                            base::Tail(log.ok() ? *log : std::string(), 600));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return proc;
}

}  // namespace chrys::runtime
