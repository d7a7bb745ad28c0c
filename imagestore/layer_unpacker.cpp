#include "imagestore/layer_unpacker.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <set>
#include <vector>

#include "base/unique_fd.h"

namespace chrys::imagestore {
namespace {

using base::Status;
using base::UniqueFd;

struct ArchiveDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
using ArchivePtr = std::unique_ptr<archive, ArchiveDeleter>;

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";

base::Error Refuse(const std::string& entry, const std::string& why) {
  return base::InvalidArgument("refused layer entry \"" + entry + "\": " + why);
}

// Splits a tar member name into clean components; absolute names and ".." are refused.
base::Result<std::vector<std::string>> SplitEntryName(const std::string& name, const char* what) {
  if (!name.empty() && name.front() == '/') {
    return Refuse(name, std::string(what) + " is an absolute path");
  }
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= name.size()) {
    size_t slash = name.find('/', start);
    std::string comp = name.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (comp == "..") {
      return Refuse(name, std::string(what) + " contains \"..\"");
    }
    if (!comp.empty() && comp != ".") {
      out.push_back(comp);
    }
    if (slash == std::string::npos) {
      break;
    }
    start = slash + 1;
  }
  return out;
}

std::string Join(const std::vector<std::string>& comps, size_t count) {
  std::string out;
  for (size_t i = 0; i < count && i < comps.size(); ++i) {
    if (!out.empty()) {
      out += "/";
    }
    out += comps[i];
  }
  return out.empty() ? "." : out;
}

int OpenBeneath(int root_fd, const std::string& rel, uint64_t flags) {
  struct open_how how {};
  how.flags = flags | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(::syscall(SYS_openat2, root_fd, rel.c_str(), &how, sizeof how));
}

base::Error ResolveError(const std::string& entry, const std::string& rel, int err) {
  if (err == EXDEV || err == ELOOP) {
    return Refuse(entry, "\"" + rel + "\" walks through a symlink out of the layer root");
  }
  if (err == ENOTDIR) {
    return Refuse(entry, "a component of \"" + rel + "\" is not a directory");
  }
  return base::SystemError("layer entry \"" + entry + "\": open " + rel, err);
}

// Opens directory `comps[0..count)` below the root (O_PATH), creating missing directories when asked.
base::Result<UniqueFd> OpenDir(int root_fd, const std::vector<std::string>& comps, size_t count,
                               const std::string& entry, bool create) {
  std::string rel = Join(comps, count);
  UniqueFd fd(OpenBeneath(root_fd, rel, O_PATH | O_DIRECTORY));
  if (fd) {
    return fd;
  }
  if (errno != ENOENT || !create) {
    return ResolveError(entry, rel, errno);
  }
  UniqueFd parent(OpenBeneath(root_fd, ".", O_PATH | O_DIRECTORY));
  for (size_t i = 0; i < count; ++i) {
    std::string prefix = Join(comps, i + 1);
    UniqueFd next(OpenBeneath(root_fd, prefix, O_PATH | O_DIRECTORY));
    if (!next && errno == ENOENT) {
      if (::mkdirat(parent.get(), comps[i].c_str(), 0755) != 0 && errno != EEXIST) {
        return base::SystemError("layer entry \"" + entry + "\": mkdir " + prefix);
      }
      next.Reset(OpenBeneath(root_fd, prefix, O_PATH | O_DIRECTORY));
    }
    if (!next) {
      return ResolveError(entry, prefix, errno);
    }
    parent = std::move(next);
  }
  return parent;
}

Status RemoveTreeAt(int dir_fd, const std::string& name) {
  struct stat st {};
  if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return errno == ENOENT ? Status::Ok() : base::SystemError("stat " + name);
  }
  if (!S_ISDIR(st.st_mode)) {
    if (::unlinkat(dir_fd, name.c_str(), 0) != 0 && errno != ENOENT) {
      return base::SystemError("remove " + name);
    }
    return Status::Ok();
  }
  int fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    return base::SystemError("open " + name);
  }
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return base::SystemError("opendir " + name);
  }
  std::vector<std::string> children;
  while (dirent* e = ::readdir(d)) {
    std::string child = e->d_name;
    if (child != "." && child != "..") {
      children.push_back(child);
    }
  }
  Status s;
  for (const auto& child : children) {
    s = RemoveTreeAt(::dirfd(d), child);
    if (!s.ok()) {
      break;
    }
  }
  ::closedir(d);
  CHRYS_RETURN_IF_ERROR(s);
  if (::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
    return base::SystemError("remove directory " + name);
  }
  return Status::Ok();
}

// Feeds the decompressed layer stream to the tar reader, hashing it on the way (that is the diff_id).
struct HashingSource {
  archive* decompressor = nullptr;
  Sha256Hasher hasher;
  uint64_t total = 0;
  std::vector<char> buf = std::vector<char>(256 << 10);
  std::string error;
};

la_ssize_t ReadDecompressed(archive* /*tar*/, void* client, const void** out) {
  auto* src = static_cast<HashingSource*>(client);
  la_ssize_t n = archive_read_data(src->decompressor, src->buf.data(), src->buf.size());
  if (n < 0) {
    src->error = archive_error_string(src->decompressor) != nullptr ? archive_error_string(src->decompressor)
                                                                    : "decompression failed";
    return -1;
  }
  src->hasher.Update(src->buf.data(), static_cast<size_t>(n));
  src->total += static_cast<uint64_t>(n);
  *out = src->buf.data();
  return n;
}

struct DeferredDir {
  std::string rel;
  mode_t mode;
  timespec times[2];
};

class Unpacker {
 public:
  Unpacker(int root_fd, const UnpackOptions& options) : root_fd_(root_fd), options_(options) {}

  Status Entry(archive* tar, archive_entry* e);
  Status Finish();

 private:
  Status Whiteout(const std::string& name, const std::vector<std::string>& comps);
  Status ClearForNew(int parent_fd, const std::string& base, bool new_is_dir, const std::string& name);
  Status ApplyOwnerXattrsTimes(int parent_fd, const std::string& base, archive_entry* e, const std::string& name,
                               bool is_symlink);
  Status WriteFile(archive* tar, int parent_fd, const std::string& base, archive_entry* e, const std::string& name);

  int root_fd_;
  const UnpackOptions& options_;
  std::vector<DeferredDir> dirs_;
  std::set<std::string> created_;  // paths this layer made, which opaque markers in kApply mode keep
};

Status Unpacker::ClearForNew(int parent_fd, const std::string& base, bool new_is_dir, const std::string& name) {
  struct stat st {};
  if (::fstatat(parent_fd, base.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) {
      return Status::Ok();
    }
    return base::SystemError("layer entry \"" + name + "\": stat");
  }
  if (new_is_dir && S_ISDIR(st.st_mode)) {
    return Status::Ok();
  }
  auto s = RemoveTreeAt(parent_fd, base);
  return s.ok() ? s : Status(s.error().Wrap("layer entry \"" + name + "\""));
}

Status Unpacker::ApplyOwnerXattrsTimes(int parent_fd, const std::string& base, archive_entry* e,
                                       const std::string& name, bool is_symlink) {
  if (options_.restore_owners) {
    if (::fchownat(parent_fd, base.c_str(), static_cast<uid_t>(archive_entry_uid(e)),
                   static_cast<gid_t>(archive_entry_gid(e)), AT_SYMLINK_NOFOLLOW) != 0) {
      return base::SystemError("layer entry \"" + name + "\": chown");
    }
  }
  if (!is_symlink && ::fchmodat(parent_fd, base.c_str(), archive_entry_perm(e) & 07777, 0) != 0) {
    return base::SystemError("layer entry \"" + name + "\": chmod");
  }
  if (options_.restore_xattrs && archive_entry_xattr_reset(e) > 0) {
    std::string proc_path = "/proc/self/fd/" + std::to_string(parent_fd) + "/" + base;
    const char* xname = nullptr;
    const void* value = nullptr;
    size_t size = 0;
    while (archive_entry_xattr_next(e, &xname, &value, &size) == ARCHIVE_OK) {
      // Overlay's own xattrs (redirect, metacopy, opaque) steer lookups across layers; only we set those.
      if (std::string_view(xname).rfind("trusted.overlay.", 0) == 0) {
        continue;
      }
      if (::lsetxattr(proc_path.c_str(), xname, value, size, 0) != 0) {
        return base::SystemError("layer entry \"" + name + "\": set xattr " + xname);
      }
    }
  }
  timespec times[2];
  times[1] = {archive_entry_mtime(e), archive_entry_mtime_nsec(e)};
  times[0] = archive_entry_atime_is_set(e) ? timespec{archive_entry_atime(e), archive_entry_atime_nsec(e)} : times[1];
  if (::utimensat(parent_fd, base.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
    return base::SystemError("layer entry \"" + name + "\": set times");
  }
  return Status::Ok();
}

Status Unpacker::WriteFile(archive* tar, int parent_fd, const std::string& base, archive_entry* e,
                           const std::string& name) {
  UniqueFd fd(::openat(parent_fd, base.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) {
    return base::SystemError("layer entry \"" + name + "\": create");
  }
  const void* block = nullptr;
  size_t size = 0;
  la_int64_t offset = 0;
  while (true) {
    int r = archive_read_data_block(tar, &block, &size, &offset);
    if (r == ARCHIVE_EOF) {
      break;
    }
    if (r < ARCHIVE_WARN) {
      return base::InvalidArgument("layer entry \"" + name + "\": " + archive_error_string(tar));
    }
    size_t done = 0;
    while (done < size) {
      ssize_t n = ::pwrite(fd.get(), static_cast<const char*>(block) + done, size - done,
                           static_cast<off_t>(offset) + static_cast<off_t>(done));
      if (n < 0) {
        if (errno == EINTR) {
          continue;
        }
        return base::SystemError("layer entry \"" + name + "\": write");
      }
      done += static_cast<size_t>(n);
    }
  }
  // Sparse files end in a hole that no data block covers.
  if (::ftruncate(fd.get(), static_cast<off_t>(archive_entry_size(e))) != 0) {
    return base::SystemError("layer entry \"" + name + "\": truncate");
  }
  return Status::Ok();
}

Status Unpacker::Whiteout(const std::string& name, const std::vector<std::string>& comps) {
  const std::string& base = comps.back();
  CHRYS_ASSIGN_OR_RETURN(UniqueFd parent, OpenDir(root_fd_, comps, comps.size() - 1, name, true));
  std::string parent_rel = Join(comps, comps.size() - 1);
  if (base == kOpaqueMarker) {
    if (options_.whiteouts == WhiteoutMode::kOverlay) {
      UniqueFd dir(OpenBeneath(root_fd_, parent_rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
      if (!dir) {
        return ResolveError(name, parent_rel, errno);
      }
      if (::fsetxattr(dir.get(), "trusted.overlay.opaque", "y", 1, 0) != 0) {
        return base::SystemError("layer entry \"" + name + "\": mark " + parent_rel + " opaque");
      }
      return Status::Ok();
    }
    // kApply: drop what lower layers put in the directory, keep what this layer already wrote there.
    UniqueFd dir(OpenBeneath(root_fd_, parent_rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
    if (!dir) {
      return ResolveError(name, parent_rel, errno);
    }
    DIR* d = ::fdopendir(::dup(dir.get()));
    if (d == nullptr) {
      return base::SystemError("layer entry \"" + name + "\": list " + parent_rel);
    }
    std::vector<std::string> doomed;
    while (dirent* de = ::readdir(d)) {
      std::string child = de->d_name;
      std::string rel = parent_rel == "." ? child : parent_rel + "/" + child;
      if (child != "." && child != ".." && created_.count(rel) == 0) {
        doomed.push_back(child);
      }
    }
    ::closedir(d);
    for (const auto& child : doomed) {
      CHRYS_RETURN_IF_ERROR(RemoveTreeAt(dir.get(), child));
    }
    return Status::Ok();
  }
  std::string target = base.substr(kWhiteoutPrefix.size());
  if (target.empty() || target == "." || target == "..") {
    return Refuse(name, "whiteout names no file");
  }
  CHRYS_RETURN_IF_ERROR(RemoveTreeAt(parent.get(), target));
  if (options_.whiteouts == WhiteoutMode::kOverlay) {
    if (::mknodat(parent.get(), target.c_str(), S_IFCHR | 0, makedev(0, 0)) != 0) {
      return base::SystemError("layer entry \"" + name + "\": create whiteout device");
    }
  }
  return Status::Ok();
}

Status Unpacker::Entry(archive* tar, archive_entry* e) {
  const char* raw = archive_entry_pathname(e);
  if (raw == nullptr) {
    return base::InvalidArgument("layer entry with an unreadable name");
  }
  std::string name = raw;
  CHRYS_ASSIGN_OR_RETURN(std::vector<std::string> comps, SplitEntryName(name, "the name"));
  if (comps.empty()) {
    return Status::Ok();  // the layer root itself ("./"); the image root keeps the store's mode
  }
  const std::string& base = comps.back();
  if (base.rfind(kWhiteoutPrefix, 0) == 0) {
    return Whiteout(name, comps);
  }
  CHRYS_ASSIGN_OR_RETURN(UniqueFd parent, OpenDir(root_fd_, comps, comps.size() - 1, name, true));
  std::string rel = Join(comps, comps.size());
  if (options_.whiteouts == WhiteoutMode::kApply) {
    created_.insert(rel);
  }

  if (const char* link = archive_entry_hardlink(e); link != nullptr) {
    CHRYS_ASSIGN_OR_RETURN(std::vector<std::string> target, SplitEntryName(link, "the hardlink target"));
    if (target.empty()) {
      return Refuse(name, "hardlink to the layer root");
    }
    auto target_parent = OpenDir(root_fd_, target, target.size() - 1, name, false);
    if (!target_parent.ok()) {
      return target_parent.error();
    }
    CHRYS_RETURN_IF_ERROR(ClearForNew(parent.get(), base, false, name));
    if (::linkat(target_parent->get(), target.back().c_str(), parent.get(), base.c_str(), 0) != 0) {
      if (errno == ENOENT) {
        return Refuse(name, "hardlink target \"" + std::string(link) + "\" is not in the layer");
      }
      return base::SystemError("layer entry \"" + name + "\": link to " + link);
    }
    return Status::Ok();
  }

  mode_t type = archive_entry_filetype(e);
  switch (type) {
    case AE_IFDIR: {
      CHRYS_RETURN_IF_ERROR(ClearForNew(parent.get(), base, true, name));
      if (::mkdirat(parent.get(), base.c_str(), 0755) != 0 && errno != EEXIST) {
        return base::SystemError("layer entry \"" + name + "\": mkdir");
      }
      if (options_.restore_owners && ::fchownat(parent.get(), base.c_str(), static_cast<uid_t>(archive_entry_uid(e)),
                                                static_cast<gid_t>(archive_entry_gid(e)), AT_SYMLINK_NOFOLLOW) != 0) {
        return base::SystemError("layer entry \"" + name + "\": chown");
      }
      if (options_.restore_xattrs && archive_entry_xattr_reset(e) > 0) {
        std::string proc_path = "/proc/self/fd/" + std::to_string(parent.get()) + "/" + base;
        const char* xname = nullptr;
        const void* value = nullptr;
        size_t size = 0;
        while (archive_entry_xattr_next(e, &xname, &value, &size) == ARCHIVE_OK) {
          if (std::string_view(xname).rfind("trusted.overlay.", 0) == 0) {
            continue;
          }
          if (::lsetxattr(proc_path.c_str(), xname, value, size, 0) != 0) {
            return base::SystemError("layer entry \"" + name + "\": set xattr " + xname);
          }
        }
      }
      // Mode and times last: creating children would change the times, a read-only mode would block them.
      DeferredDir d;
      d.rel = rel;
      d.mode = archive_entry_perm(e) & 07777;
      d.times[1] = {archive_entry_mtime(e), archive_entry_mtime_nsec(e)};
      d.times[0] = d.times[1];
      dirs_.push_back(d);
      return Status::Ok();
    }
    case AE_IFREG:
      CHRYS_RETURN_IF_ERROR(ClearForNew(parent.get(), base, false, name));
      CHRYS_RETURN_IF_ERROR(WriteFile(tar, parent.get(), base, e, name));
      return ApplyOwnerXattrsTimes(parent.get(), base, e, name, false);
    case AE_IFLNK: {
      const char* target = archive_entry_symlink(e);
      if (target == nullptr || *target == '\0') {
        return Refuse(name, "symlink without a target");
      }
      CHRYS_RETURN_IF_ERROR(ClearForNew(parent.get(), base, false, name));
      if (::symlinkat(target, parent.get(), base.c_str()) != 0) {
        return base::SystemError("layer entry \"" + name + "\": symlink");
      }
      return ApplyOwnerXattrsTimes(parent.get(), base, e, name, true);
    }
    case AE_IFCHR:
    case AE_IFBLK:
      // A device node unpacked on the host is a real host device (a disk, /dev/mem): never made. Whiteouts (0/0)
      // were handled above. The guest gets its /dev from devtmpfs.
      return Refuse(name, "device node (" + std::to_string(archive_entry_rdevmajor(e)) + ":" +
                              std::to_string(archive_entry_rdevminor(e)) + ") in a layer");
    case AE_IFIFO: {
      CHRYS_RETURN_IF_ERROR(ClearForNew(parent.get(), base, false, name));
      if (::mknodat(parent.get(), base.c_str(), type | 0600, 0) != 0) {
        return base::SystemError("layer entry \"" + name + "\": mknod");
      }
      return ApplyOwnerXattrsTimes(parent.get(), base, e, name, false);
    }
    default:
      return Refuse(name, "unsupported file type");
  }
}

Status Unpacker::Finish() {
  for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
    UniqueFd fd(OpenBeneath(root_fd_, it->rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
    if (!fd) {
      if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) {
        continue;  // replaced or removed by a later entry of the same layer
      }
      return ResolveError(it->rel, it->rel, errno);
    }
    if (::fchmod(fd.get(), it->mode) != 0) {
      return base::SystemError("layer entry \"" + it->rel + "\": chmod");
    }
    if (::futimens(fd.get(), it->times) != 0) {
      return base::SystemError("layer entry \"" + it->rel + "\": set times");
    }
  }
  return Status::Ok();
}

}  // namespace

base::Result<UnpackStats> UnpackLayer(const std::string& layer_path, LayerCompression compression,
                                      const std::string& dest_dir, const UnpackOptions& options) {
  UniqueFd root(::open(dest_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) {
    return base::SystemError("open " + dest_dir);
  }
  ArchivePtr outer(archive_read_new());
  archive_read_support_format_raw(outer.get());
  switch (compression) {
    case LayerCompression::kNone:
      archive_read_support_filter_none(outer.get());
      break;
    case LayerCompression::kGzip:
      archive_read_support_filter_gzip(outer.get());
      break;
    case LayerCompression::kZstd:
      archive_read_support_filter_zstd(outer.get());
      break;
  }
  if (archive_read_open_filename(outer.get(), layer_path.c_str(), 256 << 10) != ARCHIVE_OK) {
    return base::InvalidArgument("layer " + layer_path + ": " + archive_error_string(outer.get()));
  }
  archive_entry* raw_entry = nullptr;
  if (archive_read_next_header(outer.get(), &raw_entry) != ARCHIVE_OK) {
    return base::InvalidArgument("layer " + layer_path + " is empty or unreadable");
  }
  HashingSource source;
  source.decompressor = outer.get();
  ArchivePtr tar(archive_read_new());
  archive_read_support_format_tar(tar.get());
  archive_read_support_format_gnutar(tar.get());
  if (archive_read_open(tar.get(), &source, nullptr, ReadDecompressed, nullptr) != ARCHIVE_OK) {
    return base::InvalidArgument("layer " + layer_path + " is not a tar archive: " +
                                 (source.error.empty() ? archive_error_string(tar.get()) : source.error));
  }
  Unpacker unpacker(root.get(), options);
  UnpackStats stats;
  while (true) {
    archive_entry* e = nullptr;
    int r = archive_read_next_header(tar.get(), &e);
    if (r == ARCHIVE_EOF) {
      break;
    }
    if (r < ARCHIVE_WARN) {
      std::string why = source.error.empty() ? archive_error_string(tar.get()) : source.error;
      return base::InvalidArgument("layer " + layer_path + " is corrupt: " + why);
    }
    CHRYS_RETURN_IF_ERROR(unpacker.Entry(tar.get(), e));
    ++stats.entries;
  }
  CHRYS_RETURN_IF_ERROR(unpacker.Finish());
  // The diff_id covers the whole uncompressed stream, including padding after the tar's end marker.
  const void* sink = nullptr;
  while (true) {
    la_ssize_t n = ReadDecompressed(tar.get(), &source, &sink);
    if (n < 0) {
      return base::InvalidArgument("layer " + layer_path + " is corrupt: " + source.error);
    }
    if (n == 0) {
      break;
    }
  }
  stats.diff_id = source.hasher.Finish();
  stats.uncompressed_bytes = source.total;
  if (options.expected_diff_id && !(stats.diff_id == *options.expected_diff_id)) {
    return base::InvalidArgument("layer " + layer_path + " unpacks to content with digest " + stats.diff_id.str() +
                                 " but the image config says " + options.expected_diff_id->str());
  }
  return stats;
}

}  // namespace chrys::imagestore
