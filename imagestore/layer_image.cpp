#include "imagestore/layer_image.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/file_util.h"
#include "base/subprocess.h"

namespace chrys::imagestore {
namespace {

// Removes a path when it goes out of scope unless released.
class PathCleanup {
 public:
  PathCleanup(std::string path, bool tree) : path_(std::move(path)), tree_(tree) {}
  ~PathCleanup() {
    if (path_.empty()) {
      return;
    }
    if (tree_) {
      (void)base::RemoveTree(path_);  // best effort in a destructor; the caller already has the real error
    } else {
      ::unlink(path_.c_str());
    }
  }
  PathCleanup(const PathCleanup&) = delete;
  PathCleanup& operator=(const PathCleanup&) = delete;
  void Release() { path_.clear(); }

 private:
  std::string path_;
  bool tree_;
};

}  // namespace

base::Status BuildErofsImage(const ErofsBuildSpec& spec) {
  std::string tmpl = spec.scratch_dir + "/unpack-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return base::SystemError("create scratch directory in " + spec.scratch_dir);
  }
  PathCleanup tree_cleanup(tmpl, true);
  std::string tree = tmpl + "/rootfs";
  if (::mkdir(tree.c_str(), 0755) != 0) {
    return base::SystemError("mkdir " + tree);
  }
  UnpackOptions options;
  options.whiteouts = WhiteoutMode::kOverlay;
  options.restore_owners = ::geteuid() == 0;
  options.restore_xattrs = ::geteuid() == 0;
  options.expected_diff_id = spec.diff_id;
  auto stats = UnpackLayer(spec.layer_path, spec.compression, tree, options);
  if (!stats.ok()) {
    return stats.error();
  }
  std::string temp_image = tmpl + "/layer.erofs";
  base::CommandSpec cmd;
  // Plain (uncompressed) EROFS: the guest reads it through the shared host page cache, and building is fast.
  cmd.argv = {spec.mkfs_erofs, "--quiet", "--preserve-mtime", "-U", "00000000-0000-0000-0000-000000000000",
              temp_image,      tree};
  cmd.timeout = spec.timeout;
  CHRYS_ASSIGN_OR_RETURN(base::CommandResult r, base::RunCommand(cmd));
  if (!r.success()) {
    return base::Internal("mkfs.erofs for layer " + spec.layer_path + " " + r.DescribeExit() + ": " +
                          base::Tail(r.stderr_data + r.stdout_data));
  }
  if (::chmod(temp_image.c_str(), 0444) != 0) {
    return base::SystemError("chmod " + temp_image);
  }
  if (::rename(temp_image.c_str(), spec.output_path.c_str()) != 0) {
    return base::SystemError("rename " + temp_image + " to " + spec.output_path);
  }
  return base::Status::Ok();
}

}  // namespace chrys::imagestore
