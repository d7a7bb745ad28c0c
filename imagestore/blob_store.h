// Content-addressed blob store: blobs/sha256/<hex>, written through a hashing temp file and renamed into place
// only when size and digest match; concurrent requests for one blob share a single download.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "imagestore/digest.h"
#include "imagestore/registry_client.h"

namespace chrys::imagestore {

class BlobStore {
 public:
  // Creates <root>/blobs/sha256 and <root>/ingest; removes leftover temp files of an earlier, interrupted run.
  static base::Result<std::unique_ptr<BlobStore>> Open(const std::string& root);

  // Receives one blob; Commit() checks size and digest and moves it into place. Dropping an uncommitted
  // writer deletes its temp file.
  class Writer : public BlobSink {
   public:
    ~Writer() override;
    base::Status Write(const char* data, size_t size) override;
    base::Status Restart() override;
    base::Status Commit();
    int64_t written() const { return written_; }

   private:
    friend class BlobStore;
    Writer(BlobStore* store, Digest expected, int64_t expected_size, std::string temp_path, base::UniqueFd fd);
    BlobStore* store_;
    Digest expected_;
    int64_t expected_size_;
    std::string temp_path_;
    base::UniqueFd fd_;
    Sha256Hasher hasher_;
    int64_t written_ = 0;
    bool committed_ = false;
  };

  base::Result<std::unique_ptr<Writer>> NewWriter(const Digest& expected, int64_t expected_size);

  // Makes sure the blob is present. When it is missing, `produce` fills a writer (and must not commit it);
  // callers asking for the same digest at the same time wait for the one running producer. `created` tells
  // whether this call added the blob.
  base::Status Ensure(const Digest& digest, int64_t size, const std::function<base::Status(Writer&)>& produce,
                      bool* created);

  // Stores an in-memory blob (manifests, configs), verifying it against `expected`.
  base::Status PutBytes(const Digest& expected, const std::string& data, bool* created);

  std::string PathOf(const Digest& digest) const;
  bool Has(const Digest& digest) const;
  base::Result<int64_t> SizeOf(const Digest& digest) const;
  base::Result<std::string> ReadSmall(const Digest& digest, size_t max_bytes) const;
  base::Status Remove(const Digest& digest);
  // Makes the blobs durable (fdatasync each, then the directory). Commit() leaves that to this batch call so
  // that a pull waits for the disk once, after its downloads, instead of once per blob.
  base::Status Sync(const std::vector<Digest>& digests);
  base::Result<std::vector<Digest>> List() const;
  const std::string& root() const { return root_; }

 private:
  explicit BlobStore(std::string root) : root_(std::move(root)) {}

  struct Inflight {
    bool done = false;
    std::condition_variable cv;
  };

  std::string root_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Inflight>> inflight_;
};

// fdatasync of one file / fsync of one directory.
base::Status SyncFile(const std::string& path);
base::Status FsyncDir(const std::string& dir);

}  // namespace chrys::imagestore
