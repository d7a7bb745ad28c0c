// Pulls from a real docker-registry (plain HTTP and TLS + htpasswd) images built here from busybox-static and
// pushed with skopeo; checks records, EROFS images (mounted, and stacked with overlayfs), GC, leases, import.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "base/file_util.h"
#include "e2e/fixtures/temp_dir.h"
#include "e2e/fixtures/test_image.h"
#include "e2e/fixtures/test_registry.h"
#include "imagestore/image_store.h"

namespace chrys::imagestore {
namespace {

using e2e::TarEntry;

// Mounts for the length of a scope; lazily detached on the way out, also when an assertion fails.
class ScopedMount {
 public:
  ScopedMount(const std::string& source, const std::string& target, const char* fstype, unsigned long flags,
              const std::string& data) {
    if (::mount(source.c_str(), target.c_str(), fstype, flags, data.empty() ? nullptr : data.c_str()) == 0) {
      target_ = target;
    } else {
      error_ = std::string("mount ") + fstype + " " + source + " on " + target + ": " + std::strerror(errno);
    }
  }
  ~ScopedMount() {
    if (!target_.empty()) {
      ::umount2(target_.c_str(), MNT_DETACH);
    }
  }
  bool ok() const { return !target_.empty(); }
  const std::string& error() const { return error_; }

 private:
  std::string target_;
  std::string error_;
};

struct Images {
  std::unique_ptr<e2e::TestRegistry> plain;
  std::unique_ptr<e2e::TestRegistry> tls;
  std::unique_ptr<e2e::TempDir> layout_dir;
  std::string busybox_layer_digest;
};
Images* images = nullptr;

class RegistryPullTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) {
      return;
    }
    images = new Images();
    auto plain = e2e::TestRegistry::Start();
    ASSERT_TRUE(plain.ok()) << plain.error().message();
    images->plain = std::move(*plain);
    e2e::TestRegistryOptions tls_options;
    tls_options.tls = true;
    auto tls = e2e::TestRegistry::Start(tls_options);
    ASSERT_TRUE(tls.ok()) << tls.error().message();
    images->tls = std::move(*tls);
    images->layout_dir = std::make_unique<e2e::TempDir>("chrys-layout");
    auto layout = e2e::OciLayoutWriter::Create(images->layout_dir->path());
    ASSERT_TRUE(layout.ok());

    auto busybox = layout->AddLayer(e2e::BusyboxLayerEntries());
    ASSERT_TRUE(busybox.ok()) << busybox.error().message();
    images->busybox_layer_digest = busybox->digest;
    e2e::ImageSpec amd64;
    amd64.user = "1000";
    auto single = layout->AddImage({*busybox}, amd64);
    ASSERT_TRUE(single.ok());

    // Three layers: files, then a deleted file and a directory made opaque over what layer 2 put there.
    auto l2 = layout->AddLayer({TarEntry::Dir("app"), TarEntry::File("app/config", "v1"),
                                TarEntry::File("app/remove-me", "x"), TarEntry::Dir("app/cache"),
                                TarEntry::File("app/cache/old", "stale")});
    ASSERT_TRUE(l2.ok());
    auto l3 =
        layout->AddLayer({TarEntry::File("app/.wh.remove-me", ""), TarEntry::Dir("app/cache"),
                          TarEntry::File("app/cache/.wh..wh..opq", ""), TarEntry::File("app/cache/new", "fresh")});
    ASSERT_TRUE(l3.ok());
    e2e::ImageSpec named_user;
    named_user.user = "nobody";
    auto multi = layout->AddImage({*busybox, *l2, *l3}, named_user);
    ASSERT_TRUE(multi.ok());

    auto arm_layer = layout->AddLayer({TarEntry::File("arch", "arm64")});
    ASSERT_TRUE(arm_layer.ok());
    e2e::ImageSpec arm64;
    arm64.architecture = "arm64";
    arm64.variant = "v8";
    auto arm_image = layout->AddImage({*arm_layer}, arm64);
    ASSERT_TRUE(arm_image.ok());
    auto index = layout->AddIndex({{*single, amd64}, {*arm_image, arm64}});
    ASSERT_TRUE(index.ok());
    ASSERT_TRUE(layout->WriteIndexJson({{*single, "single"}, {*multi, "multi"}, {*index, "multiarch"}}).ok());

    std::string dir = images->layout_dir->path();
    std::string host = images->plain->host();
    for (const auto& push :
         std::vector<e2e::SkopeoPush>{{dir, "single", host + "/test/single:v1", false, "", ""},
                                      {dir, "multi", host + "/test/multi:v1", false, "", ""},
                                      {dir, "multiarch", host + "/test/multiarch:v1", true, "", ""},
                                      {dir, "single", host + "/test/docker2:v1", false, "v2s2", ""},
                                      {dir, "single", images->tls->host() + "/private/single:v1", false, "",
                                       images->tls->username() + ":" + images->tls->password()}}) {
      auto s = e2e::PushWithSkopeo(push);
      ASSERT_TRUE(s.ok()) << s.error().message();
    }
  }

  static void TearDownTestSuite() {
    delete images;
    images = nullptr;
  }

  void SetUp() override {
    if (::geteuid() != 0) {
      GTEST_SKIP() << "e2e: needs root (mounts, owners, whiteout devices)";
    }
    ASSERT_NE(images, nullptr);
    ASSERT_NE(images->plain, nullptr);
    root_ = std::make_unique<e2e::TempDir>("chrys-store");
    config_.root = root_->path() + "/images";
    config_.registry.hosts[images->plain->host()].insecure = true;
    config_.registry.hosts[images->tls->host()].ca_file = images->tls->ca_file();
    Open();
  }

  void Open() {
    store_.reset();
    auto s = ImageStore::Open(config_);
    ASSERT_TRUE(s.ok()) << s.error().message();
    store_ = std::move(*s);
  }

  std::string Ref(const std::string& repo) { return images->plain->host() + "/" + repo; }

  std::unique_ptr<e2e::TempDir> root_;
  ImageStoreConfig config_;
  std::unique_ptr<ImageStore> store_;
};

TEST_F(RegistryPullTest, SingleLayerPullMakesRecordAndMountableErofs) {
  auto image = store_->Pull(Ref("test/single:v1"));
  ASSERT_TRUE(image.ok()) << image.error().message();
  EXPECT_EQ(image->repo_tags, std::vector<std::string>{Ref("test/single:v1")});
  ASSERT_EQ(image->repo_digests.size(), 1u);
  EXPECT_EQ(image->repo_digests[0], Ref("test/single@") + image->manifest_digest.str());
  EXPECT_EQ(image->manifest_media_type, "application/vnd.oci.image.manifest.v1+json");
  EXPECT_EQ(image->uid, 1000);
  EXPECT_EQ(image->platform, "linux/amd64");
  ASSERT_EQ(image->layers.size(), 1u);
  EXPECT_EQ(image->layers[0].digest.str(), images->busybox_layer_digest);
  struct stat busybox {};
  ASSERT_EQ(::stat("/bin/busybox", &busybox), 0);
  EXPECT_GT(image->size, busybox.st_size / 3);  // compressed busybox plus manifest and config

  std::string erofs = store_->LayerImagePath(image->layers[0].digest);
  ASSERT_EQ(::access(erofs.c_str(), F_OK), 0) << "layer image built during the pull";
  auto paths = store_->EnsureLayerImages(image->id);
  ASSERT_TRUE(paths.ok());
  EXPECT_EQ(*paths, std::vector<std::string>{erofs});

  e2e::TempDir mnt("chrys-mnt");
  ScopedMount m(erofs, mnt.path(), "erofs", MS_RDONLY, "");
  ASSERT_TRUE(m.ok()) << m.error();
  struct stat st {};
  ASSERT_EQ(::stat((mnt.path() + "/bin/busybox").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, busybox.st_size);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  EXPECT_EQ(st.st_nlink, 2u);  // bin/ls is a hardlink to it
  char link[32] = {0};
  ASSERT_GT(::readlink((mnt.path() + "/bin/sh").c_str(), link, sizeof link - 1), 0);
  EXPECT_STREQ(link, "busybox");
  auto config = store_->ConfigJson(*image);
  ASSERT_TRUE(config.ok());
  EXPECT_NE(config->find("\"User\":\"1000\""), std::string::npos);
}

TEST_F(RegistryPullTest, MultiLayerWhiteoutsWorkUnderOverlayfs) {
  auto image = store_->Pull(Ref("test/multi:v1"));
  ASSERT_TRUE(image.ok()) << image.error().message();
  ASSERT_EQ(image->layers.size(), 3u);
  EXPECT_EQ(image->username, "nobody");
  EXPECT_FALSE(image->uid.has_value());
  auto paths = store_->EnsureLayerImages(image->id);
  ASSERT_TRUE(paths.ok()) << paths.error().message();

  e2e::TempDir work("chrys-overlay");
  std::vector<std::unique_ptr<ScopedMount>> mounts;
  std::string lowerdir;
  for (size_t i = 0; i < paths->size(); ++i) {
    std::string dir = work.path() + "/l" + std::to_string(i);
    ASSERT_TRUE(base::MakeDirs(dir).ok());
    mounts.push_back(std::make_unique<ScopedMount>((*paths)[i], dir, "erofs", MS_RDONLY, ""));
    ASSERT_TRUE(mounts.back()->ok()) << mounts.back()->error();
    lowerdir = dir + (lowerdir.empty() ? "" : ":" + lowerdir);  // top layer first
  }
  // The top layer's image keeps the markers overlayfs reads.
  struct stat st {};
  ASSERT_EQ(::lstat((work.path() + "/l2/app/remove-me").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(0, 0));
  char opaque[4] = {0};
  EXPECT_EQ(::getxattr((work.path() + "/l2/app/cache").c_str(), "trusted.overlay.opaque", opaque, sizeof opaque), 1);

  std::string merged = work.path() + "/merged";
  ASSERT_TRUE(base::MakeDirs(merged).ok());
  ScopedMount overlay("overlay", merged, "overlay", MS_RDONLY, "lowerdir=" + lowerdir);
  ASSERT_TRUE(overlay.ok()) << overlay.error();
  EXPECT_EQ(::lstat((merged + "/bin/busybox").c_str(), &st), 0);
  EXPECT_EQ(*base::ReadFile(merged + "/app/config"), "v1");
  EXPECT_NE(::lstat((merged + "/app/remove-me").c_str(), &st), 0) << "whiteout hides the lower file";
  EXPECT_NE(::lstat((merged + "/app/cache/old").c_str(), &st), 0) << "opaque directory hides lower entries";
  EXPECT_EQ(*base::ReadFile(merged + "/app/cache/new"), "fresh");
}

TEST_F(RegistryPullTest, MultiArchIndexResolvesPlatform) {
  auto host = store_->Pull(Ref("test/multiarch:v1"));
  ASSERT_TRUE(host.ok()) << host.error().message();
  ASSERT_TRUE(host->index_digest.has_value());
  EXPECT_EQ(host->platform, "linux/amd64");
  EXPECT_EQ(host->layers[0].digest.str(), images->busybox_layer_digest);
  EXPECT_EQ(host->repo_digests[0], Ref("test/multiarch@") + host->index_digest->str());

  PullOptions arm;
  arm.platform = *Platform::Parse("linux/arm64");
  auto other = store_->Pull(Ref("test/multiarch:v1"), arm);
  ASSERT_TRUE(other.ok()) << other.error().message();
  EXPECT_EQ(other->platform, "linux/arm64/v8");
  EXPECT_NE(other->id, host->id);
  // The tag moved to the arm64 image; the amd64 one stays, untagged.
  EXPECT_TRUE(store_->Get(host->id)->repo_tags.empty());
  EXPECT_EQ(store_->Get(Ref("test/multiarch:v1"))->id, other->id);

  PullOptions s390;
  s390.platform = *Platform::Parse("linux/s390x");
  auto none = store_->Pull(Ref("test/multiarch:v1"), s390);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().message().find("no manifest for platform linux/s390x"), std::string::npos)
      << none.error().message();
}

TEST_F(RegistryPullTest, DockerSchema2Image) {
  auto image = store_->Pull(Ref("test/docker2:v1"));
  ASSERT_TRUE(image.ok()) << image.error().message();
  EXPECT_EQ(image->manifest_media_type, "application/vnd.docker.distribution.manifest.v2+json");
  EXPECT_EQ(image->layers[0].media_type, "application/vnd.docker.image.rootfs.diff.tar.gzip");
  EXPECT_EQ(::access(store_->LayerImagePath(image->layers[0].digest).c_str(), F_OK), 0);
}

TEST_F(RegistryPullTest, TlsRegistryWithBasicAuth) {
  std::string ref = images->tls->host() + "/private/single:v1";
  auto before = e2e::SnapshotTree(config_.root);
  auto anonymous = store_->Pull(ref);
  ASSERT_FALSE(anonymous.ok());
  EXPECT_NE(anonymous.error().message().find("requires authentication (HTTP 401)"), std::string::npos)
      << anonymous.error().message();
  EXPECT_EQ(e2e::DiffSnapshots(before, e2e::SnapshotTree(config_.root)), "");

  PullOptions wrong;
  wrong.credentials.username = images->tls->username();
  wrong.credentials.password = "not-the-password";
  auto refused = store_->Pull(ref, wrong);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("refused the credentials"), std::string::npos) << refused.error().message();
  EXPECT_EQ(e2e::DiffSnapshots(before, e2e::SnapshotTree(config_.root)), "");

  PullOptions good;
  // CRI's AuthConfig.auth form: base64("user:password").
  std::string up = images->tls->username() + ":" + images->tls->password();
  std::string b64;
  {
    static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0;
    for (; i + 2 < up.size(); i += 3) {
      uint32_t n = (uint8_t(up[i]) << 16) | (uint8_t(up[i + 1]) << 8) | uint8_t(up[i + 2]);
      for (int k = 18; k >= 0; k -= 6)
        b64 += kAlphabet[(n >> k) & 63];
    }
    if (i < up.size()) {
      uint32_t n = uint8_t(up[i]) << 16;
      if (i + 1 < up.size())
        n |= uint8_t(up[i + 1]) << 8;
      b64 += kAlphabet[(n >> 18) & 63];
      b64 += kAlphabet[(n >> 12) & 63];
      b64 += i + 1 < up.size() ? kAlphabet[(n >> 6) & 63] : '=';
      b64 += '=';
    }
  }
  good.credentials.auth = b64;
  auto image = store_->Pull(ref, good);
  ASSERT_TRUE(image.ok()) << image.error().message();
  EXPECT_EQ(image->repo_tags[0], ref);
}

TEST_F(RegistryPullTest, SelfSignedTlsIsRefusedUnlessConfigured) {
  config_.registry.hosts.erase(images->tls->host());
  Open();
  auto before = e2e::SnapshotTree(config_.root);
  PullOptions creds;
  creds.credentials.username = images->tls->username();
  creds.credentials.password = images->tls->password();
  auto r = store_->Pull(images->tls->host() + "/private/single:v1", creds);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("certificate"), std::string::npos) << r.error().message();
  EXPECT_EQ(e2e::DiffSnapshots(before, e2e::SnapshotTree(config_.root)), "");
  // Marked insecure, the same registry works (no verification, by explicit choice).
  config_.registry.hosts[images->tls->host()].insecure = true;
  Open();
  auto ok = store_->Pull(images->tls->host() + "/private/single:v1", creds);
  ASSERT_TRUE(ok.ok()) << ok.error().message();
}

TEST_F(RegistryPullTest, RecordsSurviveRestartAndRemoveKeepsSharedBlobs) {
  auto single = store_->Pull(Ref("test/single:v1"));
  ASSERT_TRUE(single.ok()) << single.error().message();
  auto multi = store_->Pull(Ref("test/multi:v1"));
  ASSERT_TRUE(multi.ok()) << multi.error().message();
  Open();  // a restart
  ASSERT_EQ(store_->List().size(), 2u);
  EXPECT_EQ(store_->Get(single->id)->repo_tags, single->repo_tags);
  EXPECT_EQ(store_->Get(single->config_digest.hex().substr(0, 12))->id, single->id);
  EXPECT_EQ(store_->Get(single->repo_digests[0])->id, single->id);
  EXPECT_EQ(store_->List(ImageFilter{Ref("test/multi:v1")}).size(), 1u);
  EXPECT_TRUE(store_->List(ImageFilter{Ref("test/none:v1")}).empty());

  // Both images use the busybox layer: removing one keeps it for the other.
  ASSERT_TRUE(store_->Remove(Ref("test/single:v1")).ok());
  EXPECT_EQ(store_->Get(single->id).error().code(), base::ErrorCode::kNotFound);
  EXPECT_TRUE(store_->blobs().Has(single->layers[0].digest));
  EXPECT_EQ(::access(store_->LayerImagePath(single->layers[0].digest).c_str(), F_OK), 0);
  EXPECT_FALSE(store_->blobs().Has(single->config_digest));
  EXPECT_FALSE(store_->blobs().Has(single->manifest_digest));
  EXPECT_EQ(store_->Remove(single->id).error().code(), base::ErrorCode::kNotFound);

  ASSERT_TRUE(store_->Remove(multi->id).ok());
  EXPECT_TRUE(store_->blobs().List()->empty());
  auto layers = e2e::SnapshotTree(config_.root + "/layers/sha256");
  EXPECT_TRUE(layers.empty()) << e2e::DiffSnapshots({}, layers);
}

TEST_F(RegistryPullTest, UnsyncedLayerImagesAreRebuiltAfterAReboot) {
  auto image = store_->Pull(Ref("test/single:v1"));
  ASSERT_TRUE(image.ok()) << image.error().message();
  std::string erofs = store_->LayerImagePath(image->layers[0].digest);
  Open();  // chrysd restarted, same boot: the page cache still has the image
  EXPECT_EQ(::access(erofs.c_str(), F_OK), 0);
  store_.reset();
  // Same list, stamped by another boot: the image may have lost unwritten pages in a crash.
  std::string list = config_.root + "/layers/unsynced.json";
  auto text = base::ReadFile(list);
  ASSERT_TRUE(text.ok());
  auto j = nlohmann::json::parse(*text);
  EXPECT_EQ(j["layer_images"].size(), 1u);
  j["boot_id"] = "another-boot";
  ASSERT_TRUE(base::WriteFileAtomic(list, j.dump()).ok());
  Open();
  EXPECT_NE(::access(erofs.c_str(), F_OK), 0) << "suspect image dropped";
  auto rebuilt = store_->EnsureLayerImages(image->id);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.error().message();
  EXPECT_EQ(::access(erofs.c_str(), F_OK), 0);
  ASSERT_TRUE(store_->GarbageCollect().ok());  // syncs and empties the list
  EXPECT_TRUE(nlohmann::json::parse(*base::ReadFile(list))["layer_images"].empty());
}

TEST_F(RegistryPullTest, LeaseKeepsLayersThroughRemoveAndGc) {
  auto multi = store_->Pull(Ref("test/multi:v1"));
  ASSERT_TRUE(multi.ok()) << multi.error().message();
  ASSERT_TRUE(store_->Lease("container-1", multi->id).ok());
  ASSERT_TRUE(store_->Remove(multi->id).ok());
  Open();  // leases persist
  ASSERT_TRUE(store_->GarbageCollect().ok());
  EXPECT_EQ(store_->Leases().at("container-1"), multi->id);
  for (const auto& l : multi->layers) {
    EXPECT_TRUE(store_->blobs().Has(l.digest));
    EXPECT_EQ(::access(store_->LayerImagePath(l.digest).c_str(), F_OK), 0);
  }
  ASSERT_TRUE(store_->ReleaseLease("container-1").ok());
  auto gc = store_->GarbageCollect();
  ASSERT_TRUE(gc.ok());
  EXPECT_EQ(gc->layer_images_removed, 3);
  EXPECT_TRUE(store_->blobs().List()->empty());
}

TEST_F(RegistryPullTest, ConcurrentPullsShareDownloadsAndLayerBuilds) {
  std::vector<std::thread> threads;
  std::vector<base::Result<ImageRecord>> results(3, base::Internal("not run"));
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] { results[i] = store_->Pull(Ref(i == 2 ? "test/single:v1" : "test/multi:v1")); });
  }
  for (auto& t : threads) {
    t.join();
  }
  for (auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.error().message();
  }
  EXPECT_EQ(results[0]->id, results[1]->id);
  EXPECT_EQ(store_->List().size(), 2u);
  EXPECT_EQ(store_->blobs().List()->size(), 3u + 2u + 2u);  // 3 layers + manifest/config of each image
  auto tmp = e2e::SnapshotTree(config_.root + "/tmp");
  auto ingest = e2e::SnapshotTree(config_.root + "/ingest");
  EXPECT_TRUE(tmp.empty() && ingest.empty());
}

TEST_F(RegistryPullTest, ImportLayoutDirectoryAndArchive) {
  ImportOptions options;
  options.reference = "multi";
  options.repository = "import.local/test";
  auto from_dir = store_->Import(images->layout_dir->path(), options);
  ASSERT_TRUE(from_dir.ok()) << from_dir.error().message();
  EXPECT_EQ(from_dir->repo_tags, std::vector<std::string>{"import.local/test:multi"});
  EXPECT_EQ(from_dir->layers.size(), 3u);
  // The archive holds all three images; only the named one's blobs stay.
  e2e::TempDir tar_dir("chrys-archive");
  std::string tar = tar_dir.path() + "/image.tar";
  ASSERT_TRUE(e2e::TarDirectory(images->layout_dir->path(), tar).ok());
  ImportOptions by_index;
  by_index.reference = "multiarch";
  auto from_tar = store_->Import(tar, by_index);
  ASSERT_TRUE(from_tar.ok()) << from_tar.error().message();
  EXPECT_EQ(from_tar->platform, "linux/amd64");
  EXPECT_TRUE(from_tar->index_digest.has_value());
  EXPECT_EQ(store_->List().size(), 2u);
  // busybox + 2 multi layers + multi manifest/config + single manifest/config + index
  EXPECT_EQ(store_->blobs().List()->size(), 3u + 2u + 2u + 1u);
  auto fs = store_->FsInfo();
  ASSERT_TRUE(fs.ok());
  EXPECT_GT(fs->used_bytes, 1000u);
  EXPECT_GT(fs->inodes_used, 10u);
  EXPECT_FALSE(fs->mountpoint.empty());
  EXPECT_GT(fs->timestamp_unix_nanos, 0);
}

}  // namespace
}  // namespace chrys::imagestore
