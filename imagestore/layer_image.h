// Turns one layer blob into a read-only EROFS filesystem image (mkfs.erofs) that a VM mounts as an overlay
// lower layer.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "base/result.h"
#include "imagestore/digest.h"
#include "imagestore/layer_unpacker.h"
#include "imagestore/manifest.h"

namespace chrys::imagestore {

struct ErofsBuildSpec {
  std::string layer_path;  // the compressed or plain tar blob
  LayerCompression compression = LayerCompression::kGzip;
  std::optional<Digest> diff_id;
  std::string output_path;  // written atomically: temp file beside it, then rename
  std::string scratch_dir;  // an existing directory on the same filesystem for the unpacked tree
  std::string mkfs_erofs = "mkfs.erofs";
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
};

// Unpacks the layer (overlay whiteouts) into a private scratch directory, runs mkfs.erofs on it and moves
// the image into place. Nothing is left behind on failure.
base::Status BuildErofsImage(const ErofsBuildSpec& spec);

}  // namespace chrys::imagestore
