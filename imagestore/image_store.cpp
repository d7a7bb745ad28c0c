#include "imagestore/image_store.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "base/file_util.h"
#include "imagestore/layer_image.h"
#include "imagestore/reference.h"

namespace chrys::imagestore {

using base::Result;
using base::Status;
using nlohmann::json;

namespace {

constexpr size_t kMaxConfigBytes = 16UL << 20;
constexpr size_t kMaxIndexJsonBytes = 4UL << 20;

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void AddUnique(std::vector<std::string>& list, const std::string& value) {
  if (std::find(list.begin(), list.end(), value) == list.end()) {
    list.push_back(value);
  }
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    return out;
  }
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") {
      out.push_back(name);
    }
  }
  ::closedir(d);
  return out;
}

// Streams a local file into a blob writer.
Status CopyFileInto(const std::string& path, BlobStore::Writer& writer) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    return base::SystemError("open " + path);
  }
  std::vector<char> buf(1 << 20);
  while (true) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return base::SystemError("read " + path);
    }
    if (n == 0) {
      return Status::Ok();
    }
    CHRYS_RETURN_IF_ERROR(writer.Write(buf.data(), static_cast<size_t>(n)));
  }
}

// Forwards a blob's bytes to the store's writer, reporting progress.
class ProgressSink : public BlobSink {
 public:
  ProgressSink(BlobStore::Writer& writer, const Descriptor& desc, const std::function<void(const PullProgress&)>& cb)
      : writer_(writer), desc_(desc), cb_(cb) {}
  Status Write(const char* data, size_t size) override {
    CHRYS_RETURN_IF_ERROR(writer_.Write(data, size));
    if (cb_ && (writer_.written() - last_ >= (1 << 20) || writer_.written() == desc_.size)) {
      last_ = writer_.written();
      cb_(PullProgress{desc_.digest, writer_.written(), desc_.size});
    }
    return Status::Ok();
  }
  Status Restart() override {
    last_ = 0;
    return writer_.Restart();
  }

 private:
  BlobStore::Writer& writer_;
  const Descriptor& desc_;
  const std::function<void(const PullProgress&)>& cb_;
  int64_t last_ = 0;
};

}  // namespace

// ---- records ----

std::string ImageRecordToJson(const ImageRecord& r) {
  json j;
  j["id"] = r.id;
  j["config_digest"] = r.config_digest.str();
  j["manifest_digest"] = r.manifest_digest.str();
  j["manifest_media_type"] = r.manifest_media_type;
  if (r.index_digest) {
    j["index_digest"] = r.index_digest->str();
  }
  j["repo_tags"] = r.repo_tags;
  j["repo_digests"] = r.repo_digests;
  j["size"] = r.size;
  if (r.uid) {
    j["uid"] = *r.uid;
  }
  j["username"] = r.username;
  j["platform"] = r.platform;
  j["created_unix_nanos"] = r.created_unix_nanos;
  j["layers"] = json::array();
  for (const auto& l : r.layers) {
    j["layers"].push_back(
        {{"digest", l.digest.str()}, {"diff_id", l.diff_id.str()}, {"media_type", l.media_type}, {"size", l.size}});
  }
  return j.dump(2);
}

Result<ImageRecord> ImageRecordFromJson(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) {
    return base::InvalidArgument("image record is not a JSON object");
  }
  ImageRecord r;
  try {
    r.id = j.at("id").get<std::string>();
    CHRYS_ASSIGN_OR_RETURN(r.config_digest, Digest::Parse(j.at("config_digest").get<std::string>()));
    CHRYS_ASSIGN_OR_RETURN(r.manifest_digest, Digest::Parse(j.at("manifest_digest").get<std::string>()));
    r.manifest_media_type = j.at("manifest_media_type").get<std::string>();
    if (j.contains("index_digest")) {
      CHRYS_ASSIGN_OR_RETURN(Digest d, Digest::Parse(j.at("index_digest").get<std::string>()));
      r.index_digest = d;
    }
    r.repo_tags = j.at("repo_tags").get<std::vector<std::string>>();
    r.repo_digests = j.at("repo_digests").get<std::vector<std::string>>();
    r.size = j.at("size").get<int64_t>();
    if (j.contains("uid")) {
      r.uid = j.at("uid").get<int64_t>();
    }
    r.username = j.at("username").get<std::string>();
    r.platform = j.at("platform").get<std::string>();
    r.created_unix_nanos = j.at("created_unix_nanos").get<int64_t>();
    for (const auto& l : j.at("layers")) {
      LayerRecord layer;
      CHRYS_ASSIGN_OR_RETURN(layer.digest, Digest::Parse(l.at("digest").get<std::string>()));
      CHRYS_ASSIGN_OR_RETURN(layer.diff_id, Digest::Parse(l.at("diff_id").get<std::string>()));
      layer.media_type = l.at("media_type").get<std::string>();
      layer.size = l.at("size").get<int64_t>();
      r.layers.push_back(layer);
    }
  } catch (const json::exception& e) {
    return base::InvalidArgument(std::string("image record is malformed: ") + e.what());
  }
  if (r.id != r.config_digest.str()) {
    return base::InvalidArgument("image record id " + r.id + " does not match its config digest");
  }
  return r;
}

// ---- transaction ----

class ImageStore::Transaction {
 public:
  explicit Transaction(ImageStore* store) : store_(store) {}
  ~Transaction() { Finish(); }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  // Keeps GC and other transactions' rollbacks away from `digest` while this one runs.
  void Hold(const Digest& digest) {
    std::lock_guard<std::mutex> lock(store_->mu_);
    store_->busy_.insert(digest.hex());
    std::lock_guard<std::mutex> own(mu_);
    held_.push_back(digest.hex());
  }
  void CreatedBlob(const Digest& d) {
    std::lock_guard<std::mutex> lock(mu_);
    blobs_.push_back(d);
  }
  void CreatedLayerImage(const Digest& d) {
    std::lock_guard<std::mutex> lock(mu_);
    layer_images_.push_back(d);
  }

  // Drops the holds and deletes whatever this transaction added that no record, lease or other running
  // transaction needs: all of it after a failure, the leftovers (other platforms' blobs) after success.
  void Finish() {
    std::lock_guard<std::mutex> lock(store_->mu_);
    for (const auto& hex : held_) {
      auto it = store_->busy_.find(hex);
      if (it != store_->busy_.end()) {
        store_->busy_.erase(it);
      }
    }
    held_.clear();
    std::set<std::string> keep = store_->ReferencedLocked();
    for (const auto& d : blobs_) {
      if (keep.count(d.hex()) == 0 && store_->busy_.count(d.hex()) == 0) {
        (void)store_->blobs_->Remove(d);  // a file we cannot delete is found again by the next GC
      }
    }
    for (const auto& d : layer_images_) {
      if (keep.count(d.hex()) == 0 && store_->busy_.count(d.hex()) == 0) {
        ::unlink(store_->LayerImagePath(d).c_str());
      }
    }
    blobs_.clear();
    layer_images_.clear();
  }

 private:
  ImageStore* store_;
  std::mutex mu_;
  std::vector<std::string> held_;
  std::vector<Digest> blobs_;
  std::vector<Digest> layer_images_;
};

// ---- store ----

ImageStore::ImageStore(ImageStoreConfig config) : config_(std::move(config)) {}
ImageStore::~ImageStore() = default;

Result<std::unique_ptr<ImageStore>> ImageStore::Open(ImageStoreConfig config) {
  if (config.root.empty()) {
    return base::InvalidArgument("image store root is empty");
  }
  if (config.max_concurrent_downloads < 1) {
    return base::InvalidArgument("max_concurrent_downloads must be at least 1");
  }
  std::unique_ptr<ImageStore> store(new ImageStore(std::move(config)));
  CHRYS_RETURN_IF_ERROR(store->Load());
  return store;
}

Status ImageStore::Load() {
  const std::string& root = config_.root;
  for (const char* sub : {"", "/images", "/leases", "/layers/sha256", "/tmp"}) {
    CHRYS_RETURN_IF_ERROR(base::MakeDirs(root + sub, 0700));
  }
  lock_fd_.Reset(::open((root + "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock_fd_) {
    return base::SystemError("open " + root + "/.lock");
  }
  if (::flock(lock_fd_.get(), LOCK_EX | LOCK_NB) != 0) {
    return base::FailedPrecondition("image store " + root + " is in use by another process");
  }
  // Scratch trees and half-built layer images of an interrupted run.
  for (const auto& name : ListDir(root + "/tmp")) {
    CHRYS_RETURN_IF_ERROR(base::RemoveTree(root + "/tmp/" + name));
  }
  CHRYS_ASSIGN_OR_RETURN(blobs_, BlobStore::Open(root));
  registry_ = std::make_unique<RegistryClient>(config_.registry);
  for (const auto& name : ListDir(root + "/images")) {
    std::string path = root + "/images/" + name;
    if (name.size() != 69 || name.substr(64) != ".json") {
      CHRYS_RETURN_IF_ERROR(base::RemoveFileIfExists(path));  // temp files of an interrupted write
      continue;
    }
    CHRYS_ASSIGN_OR_RETURN(std::string text, base::ReadFile(path, 16UL << 20));
    auto record = ImageRecordFromJson(text);
    if (!record.ok()) {
      return record.error().Wrap(path);
    }
    images_[record->id] = std::move(*record);
  }
  for (const auto& name : ListDir(root + "/leases")) {
    std::string path = root + "/leases/" + name;
    if (name.size() != 69 || name.substr(64) != ".json") {
      CHRYS_RETURN_IF_ERROR(base::RemoveFileIfExists(path));
      continue;
    }
    CHRYS_ASSIGN_OR_RETURN(std::string text, base::ReadFile(path, 16UL << 20));
    json j = json::parse(text, nullptr, false);
    if (!j.is_object() || !j.contains("owner") || !j.contains("image_id") || !j.contains("digests")) {
      return base::InvalidArgument(path + " is not a lease record");
    }
    LeaseRecord lease;
    lease.owner = j["owner"].get<std::string>();
    lease.image_id = j["image_id"].get<std::string>();
    for (const auto& d : j["digests"]) {
      CHRYS_ASSIGN_OR_RETURN(Digest digest, Digest::Parse(d.get<std::string>()));
      lease.digests.push_back(digest);
    }
    leases_[lease.owner] = std::move(lease);
  }
  CHRYS_RETURN_IF_ERROR(LoadUnsyncedList());
  // Whatever no record or lease names is left from a pull that died (maybe not even flushed): drop it now.
  std::lock_guard<std::mutex> lock(mu_);
  auto gc = CollectLocked();
  return gc.ok() ? Status::Ok() : Status(gc.error().Wrap("collect leftovers in " + root));
}

std::string ImageStore::LayerImagePath(const Digest& layer_digest) const {
  return config_.root + "/layers/sha256/" + layer_digest.hex() + ".erofs";
}

std::set<std::string> ImageStore::ReferencedLocked() const {
  std::set<std::string> keep;
  for (const auto& [id, r] : images_) {
    keep.insert(r.config_digest.hex());
    keep.insert(r.manifest_digest.hex());
    if (r.index_digest) {
      keep.insert(r.index_digest->hex());
    }
    for (const auto& l : r.layers) {
      keep.insert(l.digest.hex());
    }
  }
  for (const auto& [owner, lease] : leases_) {
    for (const auto& d : lease.digests) {
      keep.insert(d.hex());
    }
  }
  return keep;
}

Status ImageStore::SaveRecord(const ImageRecord& record) {
  return base::WriteFileAtomic(config_.root + "/images/" + record.config_digest.hex() + ".json",
                               ImageRecordToJson(record), 0600);
}

Result<ImageRecord> ImageStore::Pull(const std::string& reference, const PullOptions& options) {
  CHRYS_ASSIGN_OR_RETURN(Reference ref, Reference::Parse(reference));
  auto deadline = Clock::now() + config_.pull_timeout;
  Platform platform = options.platform.value_or(Platform::Host());
  Transaction tx(this);
  auto wrap = [&](const base::Error& e) { return e.Wrap("pull " + ref.String()); };

  auto fetched = registry_->GetManifest(ref, ref.ManifestReference(), options.credentials, deadline);
  if (!fetched.ok()) {
    return wrap(fetched.error());
  }
  std::optional<Digest> index_digest;
  if (IsIndexMediaType(fetched->media_type)) {
    auto index = ParseIndex(fetched->body);
    if (!index.ok()) {
      return wrap(index.error());
    }
    auto chosen = SelectPlatform(*index, platform);
    if (!chosen.ok()) {
      return wrap(chosen.error());
    }
    tx.Hold(fetched->digest);
    bool created = false;
    Status put = blobs_->PutBytes(fetched->digest, fetched->body, &created);
    if (created) {
      tx.CreatedBlob(fetched->digest);
    }
    if (!put.ok()) {
      return wrap(put.error());
    }
    index_digest = fetched->digest;
    fetched = registry_->GetManifest(ref, chosen->digest.str(), options.credentials, deadline);
    if (!fetched.ok()) {
      return wrap(fetched.error());
    }
    if (!IsManifestMediaType(fetched->media_type)) {
      return wrap(base::InvalidArgument("the index entry for " + platform.String() + " is a " + fetched->media_type +
                                        ", not an image manifest"));
    }
  }
  BlobSource source = [&](const Descriptor& desc, BlobStore::Writer& writer) -> Status {
    ProgressSink sink(writer, desc, options.progress);
    return registry_->FetchBlob(ref, desc.digest, desc.size, options.credentials, sink, deadline);
  };
  std::vector<std::string> tags;
  if (!ref.tag.empty()) {
    tags.push_back(ref.TaggedName());
  }
  std::vector<std::string> digests = {ref.DigestedName(index_digest ? index_digest->str() : fetched->digest.str())};
  auto record = Resolve(ref.String(), std::move(fetched->body), fetched->media_type, fetched->digest, index_digest,
                        source, tags, digests, tx, options.progress);
  if (!record.ok()) {
    return wrap(record.error());
  }
  return Commit(std::move(*record), tx);
}

Result<ImageRecord> ImageStore::Resolve(const std::string& name, std::string manifest_body,
                                        std::string manifest_media_type, Digest manifest_digest,
                                        std::optional<Digest> index_digest, const BlobSource& source,
                                        const std::vector<std::string>& tags, const std::vector<std::string>& digests,
                                        Transaction& tx, const std::function<void(const PullProgress&)>& progress) {
  CHRYS_ASSIGN_OR_RETURN(Manifest manifest, ParseManifest(manifest_body));
  tx.Hold(manifest_digest);
  bool created = false;
  Status put = blobs_->PutBytes(manifest_digest, manifest_body, &created);
  if (created) {
    tx.CreatedBlob(manifest_digest);
  }
  CHRYS_RETURN_IF_ERROR(put);

  if (manifest.config.size > static_cast<int64_t>(kMaxConfigBytes)) {
    return base::InvalidArgument("image config " + manifest.config.digest.str() + " is larger than 16 MiB");
  }
  tx.Hold(manifest.config.digest);
  Status got = blobs_->Ensure(
      manifest.config.digest, manifest.config.size, [&](BlobStore::Writer& w) { return source(manifest.config, w); },
      &created);
  if (created) {
    tx.CreatedBlob(manifest.config.digest);
  }
  CHRYS_RETURN_IF_ERROR(got);
  CHRYS_ASSIGN_OR_RETURN(std::string config_body, blobs_->ReadSmall(manifest.config.digest, kMaxConfigBytes));
  CHRYS_ASSIGN_OR_RETURN(ImageConfig config, ParseImageConfig(config_body));
  if (config.diff_ids.size() != manifest.layers.size()) {
    return base::InvalidArgument("image config lists " + std::to_string(config.diff_ids.size()) +
                                 " diff_ids but the manifest has " + std::to_string(manifest.layers.size()) +
                                 " layers");
  }

  ImageRecord record;
  record.id = manifest.config.digest.str();
  record.config_digest = manifest.config.digest;
  record.manifest_digest = manifest_digest;
  record.manifest_media_type = manifest_media_type;
  record.index_digest = index_digest;
  record.repo_tags = tags;
  record.repo_digests = digests;
  record.size = static_cast<int64_t>(manifest_body.size()) + manifest.config.size;
  ImageUser user = ParseImageUser(config.user);
  record.uid = user.uid;
  record.username = user.username;
  record.platform = Platform{config.os, config.architecture, config.variant}.String();
  record.created_unix_nanos = NowNanos();
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    const Descriptor& d = manifest.layers[i];
    record.layers.push_back(LayerRecord{d.digest, config.diff_ids[i], d.media_type, d.size});
    record.size += d.size;
    tx.Hold(d.digest);
  }

  // Layers download (and become EROFS images) in parallel; the first failure stops the others.
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex err_mu;
  std::optional<base::Error> first_error;
  auto worker = [&] {
    while (!failed.load()) {
      size_t i = next.fetch_add(1);
      if (i >= manifest.layers.size()) {
        return;
      }
      const Descriptor& d = manifest.layers[i];
      bool added = false;
      Status s = blobs_->Ensure(
          d.digest, d.size, [&](BlobStore::Writer& w) { return source(d, w); }, &added);
      if (added) {
        tx.CreatedBlob(d.digest);
      }
      if (s.ok() && config_.build_layer_images_on_pull) {
        std::string path = LayerImagePath(d.digest);
        bool existed = ::access(path.c_str(), F_OK) == 0;
        s = EnsureLayerImageFor(record.layers[i]);
        if (!existed && ::access(path.c_str(), F_OK) == 0) {
          tx.CreatedLayerImage(d.digest);
        }
        if (!s.ok()) {
          s = s.error().Wrap("layer " + d.digest.str());
        }
      }
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(err_mu);
        if (!first_error) {
          first_error = s.error();
        }
        failed = true;
        return;
      }
    }
  };
  int workers = std::min<int>(config_.max_concurrent_downloads, static_cast<int>(manifest.layers.size()));
  std::vector<std::thread> threads;
  for (int i = 1; i < workers; ++i) {
    threads.emplace_back(worker);
  }
  worker();
  for (auto& t : threads) {
    t.join();
  }
  if (first_error) {
    return *first_error;
  }
  // Durable before the record that refers to them exists.
  std::vector<Digest> digests_to_sync = {manifest_digest, manifest.config.digest};
  if (index_digest) {
    digests_to_sync.push_back(*index_digest);
  }
  for (const auto& l : record.layers) {
    digests_to_sync.push_back(l.digest);
  }
  CHRYS_RETURN_IF_ERROR(blobs_->Sync(digests_to_sync));
  // Layer images are derived data and not synced here: see NoteUnsyncedLayerImage.
  (void)progress;
  (void)name;
  return record;
}

Result<ImageRecord> ImageStore::Commit(ImageRecord record, Transaction& tx) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = images_.find(record.id); it != images_.end()) {
    const ImageRecord& old = it->second;
    record.created_unix_nanos = old.created_unix_nanos;
    std::vector<std::string> tags = old.repo_tags;
    for (const auto& t : record.repo_tags) {
      AddUnique(tags, t);
    }
    std::vector<std::string> digests = old.repo_digests;
    for (const auto& d : record.repo_digests) {
      AddUnique(digests, d);
    }
    record.repo_tags = tags;
    record.repo_digests = digests;
  }
  // A tag names one image: it moves from whichever image held it before.
  for (auto& [id, other] : images_) {
    if (id == record.id) {
      continue;
    }
    size_t before = other.repo_tags.size();
    std::erase_if(other.repo_tags, [&](const std::string& t) {
      return std::find(record.repo_tags.begin(), record.repo_tags.end(), t) != record.repo_tags.end();
    });
    if (other.repo_tags.size() != before) {
      CHRYS_RETURN_IF_ERROR(SaveRecord(other));
    }
  }
  CHRYS_RETURN_IF_ERROR(SaveRecord(record));
  images_[record.id] = record;
  (void)tx;  // its Finish() (in the caller's scope) now keeps everything the record references
  return record;
}

const ImageRecord* ImageStore::FindLocked(const std::string& key) const {
  if (key.empty()) {
    return nullptr;
  }
  if (auto it = images_.find(key); it != images_.end()) {
    return &it->second;
  }
  if (key.size() == 64 && IsLowerHex(key)) {
    if (auto it = images_.find("sha256:" + key); it != images_.end()) {
      return &it->second;
    }
  }
  if (auto ref = Reference::Parse(key); ref.ok()) {
    for (const auto& [id, r] : images_) {
      if (!ref->digest.empty()) {
        std::string wanted = ref->DigestedName(ref->digest);
        if (std::find(r.repo_digests.begin(), r.repo_digests.end(), wanted) != r.repo_digests.end()) {
          return &r;
        }
      } else if (std::find(r.repo_tags.begin(), r.repo_tags.end(), ref->TaggedName()) != r.repo_tags.end()) {
        return &r;
      }
    }
  }
  std::string prefix = key.rfind("sha256:", 0) == 0 ? key.substr(7) : key;
  if (!prefix.empty() && prefix.size() < 64 && IsLowerHex(prefix)) {
    const ImageRecord* found = nullptr;
    for (const auto& [id, r] : images_) {
      if (r.config_digest.hex().rfind(prefix, 0) == 0) {
        if (found != nullptr) {
          return nullptr;  // ambiguous prefix
        }
        found = &r;
      }
    }
    return found;
  }
  return nullptr;
}

std::vector<ImageRecord> ImageStore::List(const ImageFilter& filter) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ImageRecord> out;
  if (!filter.image.empty()) {
    if (const ImageRecord* r = FindLocked(filter.image)) {
      out.push_back(*r);
    }
    return out;
  }
  for (const auto& [id, r] : images_) {
    out.push_back(r);
  }
  return out;
}

Result<ImageRecord> ImageStore::Get(const std::string& ref_or_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  const ImageRecord* r = FindLocked(ref_or_id);
  if (r == nullptr) {
    return base::NotFound("image \"" + ref_or_id + "\" is not in the store");
  }
  return *r;
}

Result<std::string> ImageStore::ConfigJson(const ImageRecord& image) const {
  return blobs_->ReadSmall(image.config_digest, kMaxConfigBytes);
}

Status ImageStore::Remove(const std::string& ref_or_id) {
  std::lock_guard<std::mutex> lock(mu_);
  const ImageRecord* r = FindLocked(ref_or_id);
  if (r == nullptr) {
    return base::NotFound("image \"" + ref_or_id + "\" is not in the store");
  }
  std::string id = r->id;
  CHRYS_RETURN_IF_ERROR(base::RemoveFileIfExists(config_.root + "/images/" + r->config_digest.hex() + ".json"));
  images_.erase(id);
  auto gc = CollectLocked();
  if (!gc.ok()) {
    return gc.error().Wrap("image " + id + " removed, but collecting its blobs failed");
  }
  return Status::Ok();
}

Result<GcStats> ImageStore::GarbageCollect(bool dry_run) {
  std::lock_guard<std::mutex> lock(mu_);
  CHRYS_ASSIGN_OR_RETURN(GcStats stats, CollectLocked(dry_run));
  if (dry_run) {
    return stats;
  }
  // A periodic GC is also when the layer images built since the last one become durable.
  std::lock_guard<std::mutex> build_lock(build_mu_);
  if (!unsynced_layers_.empty() && building_.empty()) {
    if (::syncfs(lock_fd_.get()) != 0) {
      return base::SystemError("syncfs " + config_.root);
    }
    unsynced_layers_.clear();
    CHRYS_RETURN_IF_ERROR(SaveUnsyncedListLocked());
  }
  return stats;
}

Result<GcStats> ImageStore::CollectLocked(bool dry_run) {
  std::set<std::string> keep = ReferencedLocked();
  GcStats stats;
  CHRYS_ASSIGN_OR_RETURN(std::vector<Digest> blobs, blobs_->List());
  for (const auto& d : blobs) {
    if (keep.count(d.hex()) != 0 || busy_.count(d.hex()) != 0) {
      continue;
    }
    auto size = blobs_->SizeOf(d);
    uint64_t bytes = size.ok() ? static_cast<uint64_t>(*size) : 0;
    if (!dry_run) {
      CHRYS_RETURN_IF_ERROR(blobs_->Remove(d));
    }
    stats.blobs_removed++;
    stats.bytes_freed += bytes;
    stats.items.emplace_back("blob " + d.str(), bytes);
  }
  std::lock_guard<std::mutex> build_lock(build_mu_);
  for (const auto& name : ListDir(config_.root + "/layers/sha256")) {
    std::string hex = name.substr(0, name.find('.'));
    if (keep.count(hex) != 0 || busy_.count(hex) != 0 || building_.count(hex) != 0) {
      continue;
    }
    std::string path = config_.root + "/layers/sha256/" + name;
    struct stat st {};
    uint64_t size = ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
    stats.layer_images_removed++;
    stats.bytes_freed += size;
    stats.items.emplace_back("layer image " + path, size);
    if (dry_run) {
      continue;
    }
    CHRYS_RETURN_IF_ERROR(base::RemoveFileIfExists(path));
    unsynced_layers_.erase(hex);
  }
  if (stats.layer_images_removed > 0 && !dry_run) {
    CHRYS_RETURN_IF_ERROR(SaveUnsyncedListLocked());
  }
  return stats;
}

Status ImageStore::EnsureLayerImageFor(const LayerRecord& layer) {
  std::string path = LayerImagePath(layer.digest);
  {
    std::unique_lock<std::mutex> lock(build_mu_);
    build_cv_.wait(lock, [&] { return building_.count(layer.digest.hex()) == 0; });
    if (::access(path.c_str(), F_OK) == 0) {
      return Status::Ok();
    }
    building_.insert(layer.digest.hex());
  }
  Status status = [&]() -> Status {
    CHRYS_ASSIGN_OR_RETURN(LayerCompression compression, LayerCompressionOf(layer.media_type));
    ErofsBuildSpec spec;
    spec.layer_path = blobs_->PathOf(layer.digest);
    spec.compression = compression;
    spec.diff_id = layer.diff_id;
    spec.output_path = path;
    spec.scratch_dir = config_.root + "/tmp";
    spec.mkfs_erofs = config_.mkfs_erofs;
    spec.timeout = config_.mkfs_timeout;
    return BuildErofsImage(spec);
  }();
  std::lock_guard<std::mutex> lock(build_mu_);
  building_.erase(layer.digest.hex());
  build_cv_.notify_all();
  if (status.ok()) {
    status = NoteUnsyncedLayerImageLocked(layer.digest);
  }
  return status;
}

// A layer image is not fsynced when built (that would double a pull's disk waits). Its digest goes on a
// list stamped with the boot id instead: after a restart of chrysd the page cache still holds it, so it is
// good; after a reboot (a crash may have lost unwritten pages) the listed images are deleted at open and
// rebuilt from their durable blobs on next use.
Status ImageStore::NoteUnsyncedLayerImageLocked(const Digest& digest) {
  unsynced_layers_.insert(digest.hex());
  return SaveUnsyncedListLocked();
}

Status ImageStore::SaveUnsyncedListLocked() {
  json j;
  j["boot_id"] = boot_id_;
  j["layer_images"] = unsynced_layers_;
  return base::WriteFileAtomic(config_.root + "/layers/unsynced.json", j.dump(), 0600);
}

Status ImageStore::LoadUnsyncedList() {
  auto boot = base::ReadFile("/proc/sys/kernel/random/boot_id", 256);
  boot_id_ = boot.ok() ? *boot : "";
  while (!boot_id_.empty() && (boot_id_.back() == '\n' || boot_id_.back() == ' ')) {
    boot_id_.pop_back();
  }
  std::string path = config_.root + "/layers/unsynced.json";
  auto text = base::ReadFile(path, 64UL << 20);
  if (!text.ok()) {
    if (text.error().code() == base::ErrorCode::kNotFound) {
      return Status::Ok();
    }
    return text.error();
  }
  json j = json::parse(*text, nullptr, false);
  if (!j.is_object() || !j.contains("layer_images") || !j["layer_images"].is_array()) {
    return base::InvalidArgument(path + " is malformed");
  }
  bool same_boot = !boot_id_.empty() && j.value("boot_id", "") == boot_id_;
  for (const auto& hex : j["layer_images"]) {
    std::string h = hex.is_string() ? hex.get<std::string>() : "";
    if (h.size() != 64 || !IsLowerHex(h)) {
      continue;
    }
    if (same_boot) {
      unsynced_layers_.insert(h);
    } else {
      CHRYS_RETURN_IF_ERROR(base::RemoveFileIfExists(LayerImagePath(Digest::FromHex(h))));
    }
  }
  std::lock_guard<std::mutex> lock(build_mu_);
  return SaveUnsyncedListLocked();
}

Result<std::string> ImageStore::EnsureLayerImage(const Digest& layer_digest) {
  std::optional<LayerRecord> layer;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, r] : images_) {
      for (const auto& l : r.layers) {
        if (l.digest == layer_digest) {
          layer = l;
        }
      }
    }
    if (!layer) {
      return base::NotFound("no image in the store has layer " + layer_digest.str());
    }
    busy_.insert(layer_digest.hex());
  }
  Status s = EnsureLayerImageFor(*layer);
  {
    std::lock_guard<std::mutex> lock(mu_);
    busy_.erase(busy_.find(layer_digest.hex()));
  }
  if (!s.ok()) {
    return s.error().Wrap("layer " + layer_digest.str());
  }
  return LayerImagePath(layer_digest);
}

Result<std::vector<std::string>> ImageStore::EnsureLayerImages(const std::string& ref_or_id) {
  CHRYS_ASSIGN_OR_RETURN(ImageRecord image, Get(ref_or_id));
  std::vector<std::string> paths;
  for (const auto& l : image.layers) {
    CHRYS_ASSIGN_OR_RETURN(std::string path, EnsureLayerImage(l.digest));
    paths.push_back(path);
  }
  return paths;
}

Status ImageStore::Lease(const std::string& owner, const std::string& ref_or_id) {
  if (owner.empty()) {
    return base::InvalidArgument("lease owner is empty");
  }
  std::lock_guard<std::mutex> lock(mu_);
  const ImageRecord* r = FindLocked(ref_or_id);
  if (r == nullptr) {
    return base::NotFound("image \"" + ref_or_id + "\" is not in the store");
  }
  LeaseRecord lease{owner, r->id, {r->config_digest, r->manifest_digest}};
  if (r->index_digest) {
    lease.digests.push_back(*r->index_digest);
  }
  for (const auto& l : r->layers) {
    lease.digests.push_back(l.digest);
  }
  json j;
  j["owner"] = owner;
  j["image_id"] = lease.image_id;
  j["digests"] = json::array();
  for (const auto& d : lease.digests) {
    j["digests"].push_back(d.str());
  }
  CHRYS_RETURN_IF_ERROR(
      base::WriteFileAtomic(config_.root + "/leases/" + Sha256Of(owner).hex() + ".json", j.dump(2), 0600));
  leases_[owner] = std::move(lease);
  return Status::Ok();
}

Status ImageStore::ReleaseLease(const std::string& owner) {
  std::lock_guard<std::mutex> lock(mu_);
  CHRYS_RETURN_IF_ERROR(base::RemoveFileIfExists(config_.root + "/leases/" + Sha256Of(owner).hex() + ".json"));
  leases_.erase(owner);
  return Status::Ok();
}

std::map<std::string, std::string> ImageStore::Leases() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, std::string> out;
  for (const auto& [owner, lease] : leases_) {
    out[owner] = lease.image_id;
  }
  return out;
}

Result<FsUsage> ImageStore::FsInfo() const {
  FsUsage usage;
  usage.timestamp_unix_nanos = NowNanos();
  struct stat root_st {};
  if (::lstat(config_.root.c_str(), &root_st) != 0) {
    return base::SystemError("stat " + config_.root);
  }
  // Walk the store: real allocated bytes and inode count, without crossing into other filesystems.
  std::vector<std::string> stack = {config_.root};
  while (!stack.empty()) {
    std::string dir = stack.back();
    stack.pop_back();
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0) {
      continue;  // removed while we walked
    }
    usage.used_bytes += static_cast<uint64_t>(st.st_blocks) * 512;
    usage.inodes_used++;
    if (!S_ISDIR(st.st_mode) || st.st_dev != root_st.st_dev) {
      continue;
    }
    for (const auto& name : ListDir(dir)) {
      std::string path = dir + "/" + name;
      struct stat child {};
      if (::lstat(path.c_str(), &child) != 0) {
        continue;
      }
      if (S_ISDIR(child.st_mode)) {
        stack.push_back(path);
      } else {
        usage.used_bytes += static_cast<uint64_t>(child.st_blocks) * 512;
        usage.inodes_used++;
      }
    }
  }
  // The mount point is the longest mountinfo entry that contains the root.
  char resolved[PATH_MAX];
  std::string real = ::realpath(config_.root.c_str(), resolved) != nullptr ? resolved : config_.root;
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line;
  std::string best = "/";
  while (std::getline(mountinfo, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, fsroot, mountpoint;
    fields >> id >> parent >> devno >> fsroot >> mountpoint;
    if ((real == mountpoint || real.rfind(mountpoint == "/" ? "/" : mountpoint + "/", 0) == 0) &&
        mountpoint.size() > best.size()) {
      best = mountpoint;
    }
  }
  usage.mountpoint = best;
  return usage;
}

// ---- import ----

Result<ImageRecord> ImageStore::Import(const std::string& path, const ImportOptions& options) {
  Transaction tx(this);
  auto wrap = [&](const base::Error& e) { return e.Wrap("import " + path); };
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return wrap(base::SystemError("stat"));
  }
  std::string index_json;
  std::string layout_json;
  BlobSource source;
  if (S_ISDIR(st.st_mode)) {
    auto layout = base::ReadFile(path + "/oci-layout", 64 << 10);
    if (!layout.ok()) {
      return wrap(layout.error().Wrap("not an OCI image layout (oci-layout)"));
    }
    layout_json = *layout;
    auto index = base::ReadFile(path + "/index.json", kMaxIndexJsonBytes);
    if (!index.ok()) {
      return wrap(index.error());
    }
    index_json = *index;
    source = [path](const Descriptor& d, BlobStore::Writer& w) {
      return CopyFileInto(path + "/blobs/sha256/" + d.digest.hex(), w);
    };
  } else if (S_ISREG(st.st_mode)) {
    // An OCI archive: ingest every blobs/sha256/<hex> member (each verified), keep the two small documents.
    std::unique_ptr<archive, decltype(&archive_read_free)> ar(archive_read_new(), archive_read_free);
    archive_read_support_format_tar(ar.get());
    archive_read_support_format_gnutar(ar.get());
    archive_read_support_filter_all(ar.get());
    if (archive_read_open_filename(ar.get(), path.c_str(), 1 << 20) != ARCHIVE_OK) {
      return wrap(base::InvalidArgument(std::string("not a readable archive: ") + archive_error_string(ar.get())));
    }
    while (true) {
      archive_entry* e = nullptr;
      int r = archive_read_next_header(ar.get(), &e);
      if (r == ARCHIVE_EOF) {
        break;
      }
      if (r < ARCHIVE_WARN) {
        return wrap(base::InvalidArgument(std::string("corrupt archive: ") + archive_error_string(ar.get())));
      }
      if (archive_entry_filetype(e) != AE_IFREG || archive_entry_hardlink(e) != nullptr) {
        continue;
      }
      std::string name = archive_entry_pathname(e) != nullptr ? archive_entry_pathname(e) : "";
      while (name.rfind("./", 0) == 0) {
        name = name.substr(2);
      }
      auto read_small = [&](size_t limit) -> Result<std::string> {
        if (archive_entry_size(e) > static_cast<la_int64_t>(limit)) {
          return base::InvalidArgument(name + " in the archive is larger than " + std::to_string(limit) + " bytes");
        }
        std::string out(static_cast<size_t>(archive_entry_size(e)), '\0');
        la_ssize_t n = archive_read_data(ar.get(), out.data(), out.size());
        if (n != static_cast<la_ssize_t>(out.size())) {
          return base::InvalidArgument(name + " in the archive is truncated");
        }
        return out;
      };
      if (name == "index.json") {
        auto body = read_small(kMaxIndexJsonBytes);
        if (!body.ok()) {
          return wrap(body.error());
        }
        index_json = *body;
      } else if (name == "oci-layout") {
        auto body = read_small(64 << 10);
        if (!body.ok()) {
          return wrap(body.error());
        }
        layout_json = *body;
      } else if (name.rfind("blobs/sha256/", 0) == 0 && name.size() == 13 + 64 && IsLowerHex(name.substr(13))) {
        Digest d = Digest::FromHex(name.substr(13));
        tx.Hold(d);
        bool created = false;
        Status s = blobs_->Ensure(
            d, archive_entry_size(e),
            [&](BlobStore::Writer& w) -> Status {
              std::vector<char> buf(1 << 20);
              while (true) {
                la_ssize_t n = archive_read_data(ar.get(), buf.data(), buf.size());
                if (n < 0) {
                  return base::InvalidArgument(name + ": " + archive_error_string(ar.get()));
                }
                if (n == 0) {
                  return Status::Ok();
                }
                CHRYS_RETURN_IF_ERROR(w.Write(buf.data(), static_cast<size_t>(n)));
              }
            },
            &created);
        if (created) {
          tx.CreatedBlob(d);
        }
        if (!s.ok()) {
          return wrap(s.error().Wrap(name));
        }
      }
    }
    source = [](const Descriptor& d, BlobStore::Writer&) -> Status {
      return base::NotFound("blob " + d.digest.str() + " is not in the archive");
    };
  } else {
    return wrap(base::InvalidArgument("neither a directory nor a file"));
  }

  if (layout_json.empty()) {
    return wrap(base::InvalidArgument("no oci-layout file: not an OCI image layout"));
  }
  json layout = json::parse(layout_json, nullptr, false);
  if (!layout.is_object() || layout.value("imageLayoutVersion", "") != "1.0.0") {
    return wrap(base::InvalidArgument("oci-layout does not declare imageLayoutVersion 1.0.0"));
  }
  if (index_json.empty()) {
    return wrap(base::InvalidArgument("no index.json"));
  }
  auto index = ParseIndex(index_json);
  if (!index.ok()) {
    return wrap(index.error());
  }
  if (index->manifests.empty()) {
    return wrap(base::InvalidArgument("index.json lists no images"));
  }
  Platform platform = options.platform.value_or(Platform::Host());
  auto ref_name = [](const Descriptor& d) -> std::string {
    for (const char* key : {"io.containerd.image.name", "org.opencontainers.image.ref.name"}) {
      if (auto it = d.annotations.find(key); it != d.annotations.end()) {
        return it->second;
      }
    }
    return "";
  };
  const Descriptor* chosen = nullptr;
  if (index->manifests.size() == 1) {
    chosen = &index->manifests[0];
  } else {
    for (const auto& d : index->manifests) {
      if (!options.reference.empty() && ref_name(d) == options.reference) {
        chosen = &d;
        break;
      }
    }
    if (chosen == nullptr) {
      auto by_platform = SelectPlatform(*index, platform);
      if (!by_platform.ok()) {
        return wrap(base::InvalidArgument("index.json lists " + std::to_string(index->manifests.size()) +
                                          " images and none is named \"" + options.reference +
                                          "\" or matches this platform"));
      }
      for (const auto& d : index->manifests) {
        if (d.digest == by_platform->digest) {
          chosen = &d;
        }
      }
    }
  }

  // The name: the caller's, else the layout's annotation (a bare tag goes under options.repository).
  std::string name = options.reference.empty() ? ref_name(*chosen) : options.reference;
  std::optional<Reference> ref;
  if (!name.empty()) {
    std::string full = name;
    if (name.find('/') == std::string::npos && name.find(':') == std::string::npos &&
        name.find('@') == std::string::npos) {
      full = options.repository + ":" + name;
    }
    auto parsed = Reference::Parse(full);
    if (!parsed.ok()) {
      return wrap(parsed.error());
    }
    ref = *parsed;
  }

  auto fetch_document = [&](const Descriptor& d) -> Result<std::string> {
    if (d.size > static_cast<int64_t>(config_.registry.max_manifest_bytes)) {
      return base::MakeError(base::ErrorCode::kResourceExhausted,
                             "manifest " + d.digest.str() + " is larger than the limit of " +
                                 std::to_string(config_.registry.max_manifest_bytes) + " bytes");
    }
    tx.Hold(d.digest);
    bool created = false;
    Status s = blobs_->Ensure(
        d.digest, d.size, [&](BlobStore::Writer& w) { return source(d, w); }, &created);
    if (created) {
      tx.CreatedBlob(d.digest);
    }
    CHRYS_RETURN_IF_ERROR(s);
    return blobs_->ReadSmall(d.digest, config_.registry.max_manifest_bytes);
  };

  auto body = fetch_document(*chosen);
  if (!body.ok()) {
    return wrap(body.error());
  }
  auto media_type = DetectManifestMediaType(*body, chosen->media_type);
  if (!media_type.ok()) {
    return wrap(media_type.error());
  }
  std::optional<Digest> index_digest;
  Digest manifest_digest = chosen->digest;
  if (IsIndexMediaType(*media_type)) {
    auto nested = ParseIndex(*body);
    if (!nested.ok()) {
      return wrap(nested.error());
    }
    auto entry = SelectPlatform(*nested, platform);
    if (!entry.ok()) {
      return wrap(entry.error());
    }
    index_digest = chosen->digest;
    manifest_digest = entry->digest;
    body = fetch_document(*entry);
    if (!body.ok()) {
      return wrap(body.error());
    }
    media_type = DetectManifestMediaType(*body, entry->media_type);
    if (!media_type.ok()) {
      return wrap(media_type.error());
    }
  }
  std::vector<std::string> tags;
  std::vector<std::string> digests;
  if (ref) {
    if (!ref->tag.empty()) {
      tags.push_back(ref->TaggedName());
    }
    digests.push_back(ref->DigestedName(index_digest ? index_digest->str() : manifest_digest.str()));
  }
  auto record =
      Resolve(path, std::move(*body), *media_type, manifest_digest, index_digest, source, tags, digests, tx, nullptr);
  if (!record.ok()) {
    return wrap(record.error());
  }
  return Commit(std::move(*record), tx);
}

}  // namespace chrys::imagestore
