#include "base/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <system_error>
#include <vector>

#include "base/page_runs.h"
#include "base/unique_fd.h"

namespace chrys::base {

Status WriteAll(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return SystemError("write " + path);
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

namespace {

Status FsyncDir(const std::string& dir) {
  UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dfd) {
    return SystemError("open directory " + dir);
  }
  if (::fsync(dfd.get()) != 0) {
    return SystemError("fsync directory " + dir);
  }
  return Status::Ok();
}

std::string RandomSuffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(12, '0');
  for (auto& c : s) {
    c = kHex[rng() % 16];
  }
  return s;
}

}  // namespace

Status WriteFileAtomic(const std::string& path, const std::string& data, mode_t mode) {
  std::filesystem::path target(path);
  std::string dir = target.parent_path().empty() ? "." : target.parent_path().string();
  std::string tmp = dir + "/." + target.filename().string() + ".tmp-" + RandomSuffix();
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (!fd) {
    return SystemError("create " + tmp);
  }
  Status written = WriteAll(fd.get(), data, tmp);
  if (written.ok() && ::fchmod(fd.get(), mode) != 0) {
    written = SystemError("chmod " + tmp);
  }
  if (written.ok() && ::fsync(fd.get()) != 0) {
    written = SystemError("fsync " + tmp);
  }
  fd.Reset();
  if (written.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    written = SystemError("rename " + tmp + " to " + path);
  }
  if (!written.ok()) {
    ::unlink(tmp.c_str());
    return written;
  }
  return FsyncDir(dir);
}

Status WriteInterfaceFile(const std::string& path, const std::string& value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_TRUNC));
  if (!fd) {
    return SystemError("open " + path);
  }
  ssize_t n = ::write(fd.get(), value.data(), value.size());
  if (n != static_cast<ssize_t>(value.size())) {
    return SystemError("write " + path);
  }
  return Status::Ok();
}

Result<std::string> ReadFile(const std::string& path, size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    return SystemError("open " + path);
  }
  std::string out;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return SystemError("read " + path);
    }
    if (n == 0) {
      break;
    }
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      return MakeError(ErrorCode::kResourceExhausted,
                       path + " is larger than the limit of " + std::to_string(max_bytes) + " bytes");
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Status MakeDirs(const std::string& path, mode_t mode) {
  std::error_code ec;
  std::filesystem::path p(path);
  std::filesystem::path cur;
  for (const auto& part : p) {
    cur /= part;
    if (cur.string().empty() || cur == "/") {
      continue;
    }
    if (::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) {
      return SystemError("mkdir " + cur.string());
    }
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return SystemError("stat " + path);
  }
  if (!S_ISDIR(st.st_mode)) {
    return FailedPrecondition(path + " exists and is not a directory");
  }
  return Status::Ok();
}

Status RemoveFileIfExists(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return SystemError("remove " + path);
  }
  return Status::Ok();
}

Status RemoveTree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) {
    return Internal("remove " + path + ": " + ec.message());
  }
  return Status::Ok();
}

namespace {

// mountinfo writes space, tab, newline and backslash in paths as \ooo.
std::string DecodeMountinfoPath(const std::string& field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size() && std::isdigit(static_cast<unsigned char>(field[i + 1])) &&
        std::isdigit(static_cast<unsigned char>(field[i + 2])) &&
        std::isdigit(static_cast<unsigned char>(field[i + 3]))) {
      out += static_cast<char>((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 + (field[i + 3] - '0'));
      i += 3;
    } else {
      out += field[i];
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> MountPointsAtOrBelow(const std::string& dir) {
  std::vector<std::string> out;
  std::ifstream info("/proc/self/mountinfo");
  std::string line;
  while (std::getline(info, line)) {
    std::istringstream fields(line);
    std::string id, parent, devs, root, mount_point;
    fields >> id >> parent >> devs >> root >> mount_point;
    mount_point = DecodeMountinfoPath(mount_point);
    if (mount_point == dir || mount_point.rfind(dir + "/", 0) == 0) {
      out.push_back(mount_point);
    }
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return out;
}

Result<uint64_t> PunchZeroPages(int fd) {
  std::vector<char> buffer(1 << 20);
  uint64_t freed = 0;
  int err =
      ForEachPageRun(fd, buffer.data(), buffer.size(), [fd, &freed](off_t at, const char*, size_t len, bool zero) {
        if (!zero) {
          return 0;
        }
        if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, at, static_cast<off_t>(len)) != 0) {
          return errno;
        }
        freed += len;
        return 0;
      });
  if (err != 0) {
    return SystemError("punching the zero pages of fd " + std::to_string(fd), err);
  }
  return freed;
}

}  // namespace chrys::base
