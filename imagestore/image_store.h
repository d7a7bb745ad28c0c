// The node's image store: pulls and imports images into verified blobs, keeps image records across restarts,
// builds per-layer EROFS images, leases images to running pods, and collects what nothing references.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "imagestore/blob_store.h"
#include "imagestore/config.h"
#include "imagestore/digest.h"
#include "imagestore/manifest.h"
#include "imagestore/registry_client.h"

namespace chrys::imagestore {

struct LayerRecord {
  Digest digest;   // the blob as distributed (compressed)
  Digest diff_id;  // the uncompressed tar
  std::string media_type;
  int64_t size = 0;
};

struct ImageRecord {
  std::string id;  // "sha256:<config digest hex>"
  Digest config_digest;
  Digest manifest_digest;
  std::string manifest_media_type;
  std::optional<Digest> index_digest;     // the multi-platform index it was resolved from, if any
  std::vector<std::string> repo_tags;     // "registry/repo:tag"
  std::vector<std::string> repo_digests;  // "registry/repo@sha256:..."
  int64_t size = 0;                       // manifest + config + layer blobs, as stored
  std::optional<int64_t> uid;             // from config.User when numeric
  std::string username;                   // from config.User otherwise
  std::string platform;                   // "linux/amd64"
  std::vector<LayerRecord> layers;
  int64_t created_unix_nanos = 0;  // when it entered this store
};

struct PullProgress {
  Digest digest;
  int64_t done = 0;
  int64_t total = 0;
};

struct PullOptions {
  Credentials credentials;
  std::optional<Platform> platform;                   // default: the host's
  std::function<void(const PullProgress&)> progress;  // may be called from several threads
};

struct ImportOptions {
  // The name to tag the image with; default: the layout's org.opencontainers.image.ref.name annotation
  // (a full reference, or a tag for which `repository` gives the name).
  std::string reference;
  std::string repository = "import.local/image";
  std::optional<Platform> platform;
};

struct ImageFilter {
  // Matches an image by tag, digest reference or id (what CRI's ImageFilter.image.image carries); empty: all.
  std::string image;
};

struct FsUsage {
  std::string mountpoint;
  uint64_t used_bytes = 0;
  uint64_t inodes_used = 0;
  int64_t timestamp_unix_nanos = 0;
};

struct GcStats {
  int blobs_removed = 0;
  int layer_images_removed = 0;
  uint64_t bytes_freed = 0;
  // What was removed (or, on a dry run, would be): "blob sha256:<hex>" and "layer image <path>", with sizes.
  std::vector<std::pair<std::string, uint64_t>> items;
};

class ImageStore {
 public:
  // Opens (creating) the store below config.root. One process at a time: a second Open fails while the first
  // holds the store's lock.
  static base::Result<std::unique_ptr<ImageStore>> Open(ImageStoreConfig config);
  ~ImageStore();

  // Resolves `reference` (index → this platform's manifest), downloads what is missing, verifies every blob,
  // and, when configured, builds the layers' EROFS images. A failed pull leaves the store as it was.
  base::Result<ImageRecord> Pull(const std::string& reference, const PullOptions& options = {});

  // Imports an OCI image layout directory or an OCI archive (a tar of one) from a local path.
  base::Result<ImageRecord> Import(const std::string& path, const ImportOptions& options = {});

  std::vector<ImageRecord> List(const ImageFilter& filter = {}) const;
  // By tag ("busybox", "host:5000/app:v1"), digest reference ("app@sha256:..."), id or unique id prefix.
  base::Result<ImageRecord> Get(const std::string& ref_or_id) const;
  // The image's config JSON as stored.
  base::Result<std::string> ConfigJson(const ImageRecord& image) const;

  // Removes the image (every tag of it) and collects what only it used. Unknown images are kNotFound.
  base::Status Remove(const std::string& ref_or_id);

  // Path of the layer's EROFS image, built on first use; concurrent callers share one build.
  base::Result<std::string> EnsureLayerImage(const Digest& layer_digest);
  // EnsureLayerImage for every layer of the image, bottom layer first.
  base::Result<std::vector<std::string>> EnsureLayerImages(const std::string& ref_or_id);

  // Leases keep an image's blobs and layer images through Remove and GC until released; they persist.
  // `owner` is what uses it (a container id); one lease per owner, taking a new one replaces the old.
  base::Status Lease(const std::string& owner, const std::string& ref_or_id);
  base::Status ReleaseLease(const std::string& owner);
  std::map<std::string, std::string> Leases() const;  // owner → image id

  // Removes blobs and layer images no image, lease or pull refers to. `dry_run` only lists them.
  base::Result<GcStats> GarbageCollect(bool dry_run = false);
  base::Result<FsUsage> FsInfo() const;

  const ImageStoreConfig& config() const { return config_; }
  BlobStore& blobs() { return *blobs_; }
  std::string LayerImagePath(const Digest& layer_digest) const;

 private:
  struct LeaseRecord {
    std::string owner;
    std::string image_id;
    std::vector<Digest> digests;
  };
  // What one pull or import added; undone unless it completes.
  class Transaction;
  using BlobSource = std::function<base::Status(const Descriptor&, BlobStore::Writer&)>;

  explicit ImageStore(ImageStoreConfig config);
  base::Status Load();
  base::Result<ImageRecord> Resolve(const std::string& name_for_errors, std::string manifest_body,
                                    std::string manifest_media_type, Digest manifest_digest,
                                    std::optional<Digest> index_digest, const BlobSource& source,
                                    const std::vector<std::string>& tags, const std::vector<std::string>& digests,
                                    Transaction& tx, const std::function<void(const PullProgress&)>& progress);
  base::Result<ImageRecord> Commit(ImageRecord record, Transaction& tx);
  base::Status SaveRecord(const ImageRecord& record);
  const ImageRecord* FindLocked(const std::string& ref_or_id) const;
  std::set<std::string> ReferencedLocked() const;
  base::Result<GcStats> CollectLocked(bool dry_run = false);
  base::Status EnsureLayerImageFor(const LayerRecord& layer);
  base::Status NoteUnsyncedLayerImageLocked(const Digest& digest);
  base::Status SaveUnsyncedListLocked();
  base::Status LoadUnsyncedList();

  ImageStoreConfig config_;
  base::UniqueFd lock_fd_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<RegistryClient> registry_;

  mutable std::mutex mu_;
  std::map<std::string, ImageRecord> images_;  // by id
  std::map<std::string, LeaseRecord> leases_;  // by owner
  std::multiset<std::string> busy_;            // digests (hex) that running pulls and builds hold

  std::mutex build_mu_;
  std::condition_variable build_cv_;
  std::set<std::string> building_;         // layer digests (hex) whose EROFS image is being built
  std::set<std::string> unsynced_layers_;  // layer images written this boot and not fsynced
  std::string boot_id_;
};

// Serialisation of records, exposed for tests.
std::string ImageRecordToJson(const ImageRecord& record);
base::Result<ImageRecord> ImageRecordFromJson(const std::string& json);

}  // namespace chrys::imagestore
