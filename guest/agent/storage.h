// Container root filesystems in the guest: EROFS layer disks by virtio serial, ext4 scratch, overlayfs.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "base/result.h"
#include "guest/proto/agent.pb.h"

namespace chrys::guest {

namespace v1 = ::chrys::agent::v1;

inline constexpr const char* kLayersDir = "/run/chrys/layers";
inline constexpr const char* kScratchDir = "/run/chrys/scratch";
inline constexpr const char* kUpperTmpfsDir = "/run/chrys/upper";
inline constexpr const char* kSharesDir = "/run/chrys/shares";
// Confidential pods: layers the guest pulled itself, and the containers' upper layers, on the encrypted /cocos.
inline constexpr const char* kPulledLayersDir = "/cocos/.cache/oci/layers";
inline constexpr const char* kPulledUpperDir = "/cocos/containers";

// Finds /dev/vdX whose virtio-blk serial is `serial`, waiting at most `timeout` (disks may be hot-plugged
// a moment before the request that uses them).
base::Result<std::string> FindDiskBySerial(const std::string& serial, std::chrono::milliseconds timeout);
// Waits (bounded) until `device` opens and reports a non-zero size: right after hot-plug the node can exist
// before the disk is readable (opening or mounting it then fails with ENXIO). A regular file counts by its size.
base::Status WaitUntilReadable(const std::string& device, std::chrono::milliseconds timeout);

// The overlay mount options for the given layers (bottom first, as the image lists them). Pure.
std::string OverlayOptions(const std::vector<std::string>& layer_dirs_bottom_first, const std::string& upper,
                           const std::string& work);

// Whether the first 2 KiB of a block device hold an ext2/3/4 superblock (magic 0xEF53 at 1080).
bool HasExt4Superblock(const std::string& header);

class Storage {
 public:
  // Mounts the layers (shared, reference counted), the scratch disk (formatted ext4 when blank) and the
  // overlay at `rootfs`. Undoes everything it did on failure.
  base::Status MountRootfs(const std::string& container_id, const v1::RootfsSource& source, const std::string& rootfs);
  // Unmounts the overlay, removes the container's upper/work, releases its layers.
  base::Status UnmountRootfs(const std::string& container_id, const std::string& rootfs);
  // Bytes under the container's upper dir.
  uint64_t UpperUsage(const std::string& container_id);

  base::Result<std::string> MountShare(const std::string& tag, const std::string& name, bool read_only);

 private:
  base::Result<std::string> AcquireLayer(const std::string& serial);
  void ReleaseLayer(const std::string& serial);
  base::Result<std::string> EnsureScratch(const std::string& serial);

  std::mutex mu_;
  std::map<std::string, int> layer_refs_;
  std::map<std::string, std::string> scratch_mounts_;          // serial -> mountpoint
  std::map<std::string, v1::RootfsSource> container_sources_;  // container -> what it holds
  std::map<std::string, std::string> container_upper_roots_;   // container -> dir holding upper/work
};

}  // namespace chrys::guest
