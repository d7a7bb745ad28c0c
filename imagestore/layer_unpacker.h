// Unpacks one image layer (tar, gzip or zstd) into a directory without ever writing outside it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "base/result.h"
#include "imagestore/digest.h"
#include "imagestore/manifest.h"

namespace chrys::imagestore {

enum class WhiteoutMode {
  // Keep whiteouts as overlayfs expects them in a lower layer: a 0/0 character device for a deleted path and
  // the trusted.overlay.opaque="y" xattr on an opaque directory. Used for per-layer EROFS images.
  kOverlay,
  // Apply them to what the directory already holds (the layers below): delete the path, empty the directory.
  kApply,
};

struct UnpackOptions {
  WhiteoutMode whiteouts = WhiteoutMode::kOverlay;
  // Owners and trusted.*/security.* xattrs need root; an unprivileged unpack keeps modes and times only.
  bool restore_owners = true;
  bool restore_xattrs = true;
  // When set, the uncompressed stream must hash to this (the config's rootfs.diff_ids entry).
  std::optional<Digest> expected_diff_id;
};

struct UnpackStats {
  Digest diff_id;  // sha256 of the uncompressed tar stream
  uint64_t entries = 0;
  uint64_t uncompressed_bytes = 0;
};

// Reads the layer at `layer_path` and unpacks it below `dest_dir`, which must exist. Entries with "..",
// absolute names, or whose path (or hardlink target) leads through a symlink out of `dest_dir` are refused
// with an error naming the entry; the caller discards `dest_dir` on error.
base::Result<UnpackStats> UnpackLayer(const std::string& layer_path, LayerCompression compression,
                                      const std::string& dest_dir, const UnpackOptions& options);

}  // namespace chrys::imagestore
