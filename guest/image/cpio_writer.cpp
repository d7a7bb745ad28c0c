#include "guest/image/cpio_writer.h"

#include <cstdio>

namespace chrys::guest {
namespace {

constexpr uint32_t kTypeFile = 0100000;
constexpr uint32_t kTypeDir = 0040000;
constexpr uint32_t kTypeSymlink = 0120000;
constexpr uint32_t kTypeChar = 0020000;

void Pad4(std::string& out) {
  while (out.size() % 4 != 0) {
    out.push_back('\0');
  }
}

void AppendHeader(std::string& out, uint32_t ino, uint32_t mode, uint32_t nlink, uint32_t mtime, uint32_t filesize,
                  uint32_t rmajor, uint32_t rminor, const std::string& name) {
  char header[111];
  std::snprintf(header, sizeof(header), "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", ino, mode, 0u, 0u,
                nlink, mtime, filesize, 0u, 0u, rmajor, rminor, static_cast<uint32_t>(name.size() + 1), 0u);
  out.append(header, 110);
  out.append(name);
  out.push_back('\0');
  Pad4(out);
}

}  // namespace

base::Status CpioArchive::Add(const std::string& path, CpioEntry entry) {
  if (path.empty() || path.front() == '/' || path.back() == '/' || path.find("//") != std::string::npos ||
      path == "." || path.find("..") != std::string::npos) {
    return base::InvalidArgument("cpio member path '" + path + "' must be relative and normalised");
  }
  for (size_t slash = path.find('/'); slash != std::string::npos; slash = path.find('/', slash + 1)) {
    std::string parent = path.substr(0, slash);
    auto it = entries_.find(parent);
    if (it == entries_.end()) {
      CpioEntry dir;
      dir.type = CpioEntry::Type::kDirectory;
      dir.mode = 0755;
      entries_[parent] = dir;
    } else if (it->second.type != CpioEntry::Type::kDirectory) {
      return base::InvalidArgument("cpio member '" + parent + "' is not a directory but '" + path + "' needs it");
    }
  }
  entries_[path] = std::move(entry);
  return base::Status::Ok();
}

std::string CpioArchive::Serialize(uint32_t mtime) const {
  std::string out;
  uint32_t ino = 1;
  // std::map order puts "a" before "a/b": parents always come first.
  for (const auto& [path, e] : entries_) {
    uint32_t type = kTypeFile;
    uint32_t nlink = 1;
    std::string payload;
    switch (e.type) {
      case CpioEntry::Type::kFile:
        payload = e.data;
        break;
      case CpioEntry::Type::kDirectory:
        type = kTypeDir;
        nlink = 2;
        break;
      case CpioEntry::Type::kSymlink:
        type = kTypeSymlink;
        payload = e.data;
        break;
      case CpioEntry::Type::kCharDevice:
        type = kTypeChar;
        break;
    }
    AppendHeader(out, ino++, type | (e.mode & 07777), nlink, mtime, static_cast<uint32_t>(payload.size()), e.rdev_major,
                 e.rdev_minor, path);
    out.append(payload);
    Pad4(out);
  }
  AppendHeader(out, 0, 0, 1, 0, 0, 0, 0, "TRAILER!!!");
  // The kernel reads the archive in 512-byte blocks happily either way; pad like cpio(1) does.
  while (out.size() % 512 != 0) {
    out.push_back('\0');
  }
  return out;
}

}  // namespace chrys::guest
