#include "imagestore/blob_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <random>

#include "base/file_util.h"

namespace chrys::imagestore {
namespace {

std::string RandomName() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(16, '0');
  for (auto& c : s) {
    c = kHex[rng() % 16];
  }
  return s;
}

}  // namespace

base::Status FsyncDir(const std::string& dir) {
  base::UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd || ::fsync(fd.get()) != 0) {
    return base::SystemError("fsync " + dir);
  }
  return base::Status::Ok();
}

base::Result<std::unique_ptr<BlobStore>> BlobStore::Open(const std::string& root) {
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(root + "/blobs/sha256", 0700));
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(root + "/ingest", 0700));
  // Anything in ingest/ belongs to a pull that died; the store is opened by one process at a time.
  DIR* d = ::opendir((root + "/ingest").c_str());
  if (d == nullptr) {
    return base::SystemError("open " + root + "/ingest");
  }
  std::vector<std::string> leftovers;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") {
      leftovers.push_back(root + "/ingest/" + name);
    }
  }
  ::closedir(d);
  for (const auto& path : leftovers) {
    CHRYS_RETURN_IF_ERROR(base::RemoveFileIfExists(path));
  }
  return std::unique_ptr<BlobStore>(new BlobStore(root));
}

std::string BlobStore::PathOf(const Digest& digest) const {
  return root_ + "/blobs/sha256/" + digest.hex();
}

bool BlobStore::Has(const Digest& digest) const {
  struct stat st {};
  return ::stat(PathOf(digest).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

base::Result<int64_t> BlobStore::SizeOf(const Digest& digest) const {
  struct stat st {};
  if (::stat(PathOf(digest).c_str(), &st) != 0) {
    return base::SystemError("blob " + digest.str());
  }
  return static_cast<int64_t>(st.st_size);
}

base::Result<std::string> BlobStore::ReadSmall(const Digest& digest, size_t max_bytes) const {
  return base::ReadFile(PathOf(digest), max_bytes);
}

base::Status BlobStore::Remove(const Digest& digest) {
  return base::RemoveFileIfExists(PathOf(digest));
}

base::Result<std::vector<Digest>> BlobStore::List() const {
  std::vector<Digest> out;
  std::string dir = root_ + "/blobs/sha256";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    return base::SystemError("open " + dir);
  }
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() == 64 && IsLowerHex(name)) {
      out.push_back(Digest::FromHex(name));
    }
  }
  ::closedir(d);
  return out;
}

base::Result<std::unique_ptr<BlobStore::Writer>> BlobStore::NewWriter(const Digest& expected, int64_t expected_size) {
  std::string temp = root_ + "/ingest/" + expected.hex() + "." + RandomName();
  base::UniqueFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd) {
    return base::SystemError("create " + temp);
  }
  return std::unique_ptr<Writer>(new Writer(this, expected, expected_size, temp, std::move(fd)));
}

BlobStore::Writer::Writer(BlobStore* store, Digest expected, int64_t expected_size, std::string temp_path,
                          base::UniqueFd fd)
    : store_(store),
      expected_(std::move(expected)),
      expected_size_(expected_size),
      temp_path_(std::move(temp_path)),
      fd_(std::move(fd)) {}

BlobStore::Writer::~Writer() {
  if (!committed_) {
    fd_.Reset();
    ::unlink(temp_path_.c_str());
  }
}

base::Status BlobStore::Writer::Write(const char* data, size_t size) {
  if (expected_size_ >= 0 && written_ + static_cast<int64_t>(size) > expected_size_) {
    return base::InvalidArgument("blob " + expected_.str() + " is longer than its declared " +
                                 std::to_string(expected_size_) + " bytes");
  }
  hasher_.Update(data, size);
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd_.get(), data + done, size - done);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return base::SystemError("write " + temp_path_);
    }
    done += static_cast<size_t>(n);
  }
  written_ += static_cast<int64_t>(size);
  return base::Status::Ok();
}

base::Status BlobStore::Writer::Restart() {
  if (written_ == 0) {
    return base::Status::Ok();
  }
  if (::ftruncate(fd_.get(), 0) != 0 || ::lseek(fd_.get(), 0, SEEK_SET) != 0) {
    return base::SystemError("truncate " + temp_path_);
  }
  hasher_.Reset();
  written_ = 0;
  return base::Status::Ok();
}

base::Status BlobStore::Writer::Commit() {
  if (expected_size_ >= 0 && written_ != expected_size_) {
    return base::InvalidArgument("blob " + expected_.str() + " is truncated: got " + std::to_string(written_) + " of " +
                                 std::to_string(expected_size_) + " bytes");
  }
  Digest actual = hasher_.Finish();
  if (!(actual == expected_)) {
    return base::InvalidArgument("blob content does not match its digest: expected " + expected_.str() + ", got " +
                                 actual.str());
  }
  if (::fchmod(fd_.get(), 0444) != 0) {
    return base::SystemError("chmod " + temp_path_);
  }
  // No fsync here: Sync() makes blobs durable in one batch before anything refers to them, and a blob that a
  // crash left unsynced is unreferenced, so the image store's collection at open removes it.
  fd_.Reset();
  std::string target = store_->PathOf(expected_);
  if (::rename(temp_path_.c_str(), target.c_str()) != 0) {
    return base::SystemError("rename " + temp_path_ + " to " + target);
  }
  committed_ = true;
  return base::Status::Ok();
}

base::Status BlobStore::Sync(const std::vector<Digest>& digests) {
  for (const auto& d : digests) {
    CHRYS_RETURN_IF_ERROR(SyncFile(PathOf(d)));
  }
  return FsyncDir(root_ + "/blobs/sha256");
}

base::Status SyncFile(const std::string& path) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    return base::SystemError("open " + path);
  }
  if (::fdatasync(fd.get()) != 0) {
    return base::SystemError("fsync " + path);
  }
  return base::Status::Ok();
}

base::Status BlobStore::Ensure(const Digest& digest, int64_t size, const std::function<base::Status(Writer&)>& produce,
                               bool* created) {
  *created = false;
  std::shared_ptr<Inflight> mine;
  {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      if (Has(digest)) {
        return base::Status::Ok();
      }
      auto it = inflight_.find(digest.hex());
      if (it == inflight_.end()) {
        mine = std::make_shared<Inflight>();
        inflight_[digest.hex()] = mine;
        break;
      }
      // Someone else is downloading it: wait, then look again (their failure lets us try ourselves).
      auto other = it->second;
      other->cv.wait(lock, [&] { return other->done; });
    }
  }
  base::Status status = [&]() -> base::Status {
    CHRYS_ASSIGN_OR_RETURN(auto writer, NewWriter(digest, size));
    CHRYS_RETURN_IF_ERROR(produce(*writer));
    return writer->Commit();
  }();
  std::lock_guard<std::mutex> lock(mu_);
  mine->done = true;
  inflight_.erase(digest.hex());
  mine->cv.notify_all();
  *created = status.ok();
  return status;
}

base::Status BlobStore::PutBytes(const Digest& expected, const std::string& data, bool* created) {
  return Ensure(
      expected, static_cast<int64_t>(data.size()), [&](Writer& w) { return w.Write(data.data(), data.size()); },
      created);
}

}  // namespace chrys::imagestore
