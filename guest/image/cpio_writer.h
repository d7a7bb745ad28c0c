// CpioWriter: writes a reproducible "newc" cpio archive (the initramfs format) from an in-memory file list.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "base/result.h"

namespace chrys::guest {

// One archive member. Paths are relative ("bin/busybox"), without a leading slash.
struct CpioEntry {
  enum class Type { kFile, kDirectory, kSymlink, kCharDevice };
  Type type = Type::kFile;
  uint32_t mode = 0644;  // permission bits only
  std::string data;      // file content, or the symlink target
  uint32_t rdev_major = 0;
  uint32_t rdev_minor = 0;
};

class CpioArchive {
 public:
  // Adds or replaces a member. Parent directories are added automatically (0755).
  base::Status Add(const std::string& path, CpioEntry entry);
  bool Contains(const std::string& path) const { return entries_.count(path) != 0; }
  size_t size() const { return entries_.size(); }

  // The archive bytes: members sorted by path (parents first), every mtime = `mtime`, owner root, inode
  // numbers assigned in order, then the TRAILER!!! record. Same members → same bytes.
  std::string Serialize(uint32_t mtime = 0) const;

 private:
  std::map<std::string, CpioEntry> entries_;
};

}  // namespace chrys::guest
