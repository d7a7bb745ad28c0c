// File helpers: crash-safe atomic writes, whole-file reads, directory creation.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "base/result.h"

namespace chrys::base {

// Writes `data` to `path` so that a crash at any instant leaves either the old or the new content:
// temp file in the same directory, fsync, rename over `path`, fsync of the directory.
Status WriteFileAtomic(const std::string& path, const std::string& data, mode_t mode = 0644);

// Writes all of `data` to `fd` (retrying short writes and EINTR); errors name `what` ("write <what>: ...").
Status WriteAll(int fd, const std::string& data, const std::string& what);

// Writes `value` into an existing kernel interface file (/proc/sys, cgroupfs) in one write(2): never creates the
// file, never renames over it.
Status WriteInterfaceFile(const std::string& path, const std::string& value);

// Reads a whole file, refusing files larger than `max_bytes`.
// Deallocates the pages of `fd` (a file on a filesystem with holes, such as a memfd) that hold only zeros: they read
// the same afterwards and take no memory. Returns the bytes freed.
Result<uint64_t> PunchZeroPages(int fd);

Result<std::string> ReadFile(const std::string& path, size_t max_bytes = 64UL << 20);

// mkdir -p with the given mode for directories it creates.
Status MakeDirs(const std::string& path, mode_t mode = 0755);

// Removes a file; a missing file is not an error.
Status RemoveFileIfExists(const std::string& path);

// Removes a directory tree; a missing tree is not an error. Does not follow symlinks or cross mounts.
Status RemoveTree(const std::string& path);

// Mount points at or below `dir` (from /proc/self/mountinfo, octal escapes decoded), deepest first: the order
// to unmount them in.
std::vector<std::string> MountPointsAtOrBelow(const std::string& dir);

}  // namespace chrys::base
