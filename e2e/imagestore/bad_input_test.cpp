// Bad input from a registry that misbehaves (served by a scriptable HTTP server on 127.0.0.1, since
// docker-registry verifies digests itself): each case must fail with a clear error and leave the store exactly
// as it was. Also the protocol paths a plain registry does not exercise: bearer tokens, retries, redirects,
// mirrors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "e2e/fixtures/fake_http_server.h"
#include "e2e/fixtures/temp_dir.h"
#include "e2e/fixtures/test_image.h"
#include "imagestore/image_store.h"

namespace chrys::imagestore {
namespace {

using e2e::HttpRequest;
using e2e::HttpResponse;
using e2e::TarEntry;
using nlohmann::json;

struct Blob {
  std::string digest;
  std::string data;
  std::string media_type;
  std::string diff_id;
};

struct FakeImage {
  std::string manifest;
  std::string manifest_digest;
  Blob config;
  std::vector<Blob> layers;
};

base::Result<Blob> MakeLayer(const std::vector<TarEntry>& entries) {
  e2e::TempDir dir("chrys-layer");
  CHRYS_ASSIGN_OR_RETURN(e2e::BlobDesc d, e2e::WriteLayerFile(dir.path() + "/l", entries, e2e::TestCompression::kGzip));
  CHRYS_ASSIGN_OR_RETURN(std::string data, base::ReadFile(dir.path() + "/l"));
  return Blob{d.digest, data, d.media_type, d.diff_id};
}

FakeImage MakeImage(const std::vector<Blob>& layers,
                    const std::string& manifest_type = "application/vnd.oci.image.manifest.v1+json") {
  FakeImage img;
  img.layers = layers;
  json config = {
      {"architecture", "amd64"}, {"os", "linux"}, {"rootfs", {{"type", "layers"}, {"diff_ids", json::array()}}}};
  json manifest = {{"schemaVersion", 2}, {"mediaType", manifest_type}, {"layers", json::array()}};
  for (const auto& l : layers) {
    config["rootfs"]["diff_ids"].push_back(l.diff_id);
    manifest["layers"].push_back({{"mediaType", l.media_type}, {"digest", l.digest}, {"size", l.data.size()}});
  }
  img.config.data = config.dump();
  img.config.digest = Sha256Of(img.config.data).str();
  img.config.media_type = "application/vnd.oci.image.config.v1+json";
  manifest["config"] = {
      {"mediaType", img.config.media_type}, {"digest", img.config.digest}, {"size", img.config.data.size()}};
  img.manifest = manifest.dump();
  img.manifest_digest = Sha256Of(img.manifest).str();
  return img;
}

// Routes by path; a test swaps single routes for misbehaving ones.
class FakeRegistry {
 public:
  FakeRegistry() {
    auto s = e2e::FakeHttpServer::Start([this](const HttpRequest& r) { return Handle(r); });
    if (s.ok()) {
      server_ = std::move(*s);
    }
  }
  bool ok() const { return server_ != nullptr; }
  std::string host() const { return server_->host(); }

  void Serve(const std::string& repo, const std::string& tag, const FakeImage& img) {
    std::lock_guard<std::mutex> lock(mu_);
    HttpResponse m;
    m.headers = {{"Content-Type", json::parse(img.manifest).value("mediaType", "application/json")},
                 {"Docker-Content-Digest", img.manifest_digest}};
    m.body = img.manifest;
    routes_["/v2/" + repo + "/manifests/" + tag] = m;
    routes_["/v2/" + repo + "/manifests/" + img.manifest_digest] = m;
    for (const Blob& b : img.layers) {
      routes_["/v2/" + repo + "/blobs/" + b.digest] = HttpResponse{200, {}, b.data};
    }
    routes_["/v2/" + repo + "/blobs/" + img.config.digest] = HttpResponse{200, {}, img.config.data};
  }
  void Route(const std::string& path, std::function<HttpResponse(const HttpRequest&)> fn) {
    std::lock_guard<std::mutex> lock(mu_);
    custom_[path] = std::move(fn);
  }
  int Count(const std::string& path) const {
    int n = 0;
    for (const auto& r : server_->requests()) {
      n += r.path == path ? 1 : 0;
    }
    return n;
  }

 private:
  HttpResponse Handle(const HttpRequest& r) {
    std::function<HttpResponse(const HttpRequest&)> fn;
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::string path = r.path.substr(0, r.path.find('?'));
      if (auto it = custom_.find(path); it != custom_.end()) {
        fn = it->second;
      } else if (path == "/v2/" || path == "/v2") {
        return HttpResponse{200, {}, "{}"};
      } else if (auto route = routes_.find(path); route != routes_.end()) {
        return route->second;
      } else {
        return HttpResponse{404, {}, R"({"errors":[{"code":"NOT_FOUND","message":"no such thing"}]})"};
      }
    }
    return fn(r);
  }

  std::mutex mu_;
  std::map<std::string, HttpResponse> routes_;
  std::map<std::string, std::function<HttpResponse(const HttpRequest&)>> custom_;
  std::unique_ptr<e2e::FakeHttpServer> server_;
};

class BadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(registry_.ok());
    config_.root = root_.path() + "/images";
    config_.registry.hosts[registry_.host()].insecure = true;
    config_.registry.max_attempts = 2;
    config_.registry.retry_backoff = std::chrono::milliseconds(20);
    config_.registry.stall_timeout = std::chrono::seconds(1);
    config_.registry.request_timeout = std::chrono::seconds(3);
    // Hostile-layer cases reach the unpacker only when layer images are built during the pull.
    config_.build_layer_images_on_pull = ::geteuid() == 0;
    auto layer = MakeLayer({TarEntry::Dir("etc"), TarEntry::File("etc/hostname", "fake\n")});
    ASSERT_TRUE(layer.ok());
    good_ = MakeImage({*layer});
    registry_.Serve("test/app", "v1", good_);
    Open();
  }

  void Open() {
    store_.reset();
    auto s = ImageStore::Open(config_);
    ASSERT_TRUE(s.ok()) << s.error().message();
    store_ = std::move(*s);
  }

  std::string Ref(const std::string& repo_tag) { return registry_.host() + "/" + repo_tag; }
  std::string BlobPath(const std::string& repo, const std::string& digest) {
    return "/v2/" + repo + "/blobs/" + digest;
  }

  // The pull fails, the message says why, and the store holds exactly what it held before.
  void ExpectFailsCleanly(const std::string& ref, const std::string& why, const PullOptions& options = {}) {
    auto before = e2e::SnapshotTree(config_.root);
    auto r = store_->Pull(ref, options);
    ASSERT_FALSE(r.ok()) << "pull of " << ref << " succeeded";
    EXPECT_NE(r.error().message().find(why), std::string::npos) << r.error().message();
    EXPECT_EQ(e2e::DiffSnapshots(before, e2e::SnapshotTree(config_.root)), "");
    EXPECT_TRUE(store_->List().empty());
  }

  e2e::TempDir root_{"chrys-store"};
  FakeRegistry registry_;
  ImageStoreConfig config_;
  std::unique_ptr<ImageStore> store_;
  FakeImage good_;
};

TEST_F(BadInputTest, GoodImagePulls) {
  auto r = store_->Pull(Ref("test/app:v1"));
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->manifest_digest.str(), good_.manifest_digest);
}

TEST_F(BadInputTest, BlobWhoseContentDoesNotMatchItsDigest) {
  std::string lie = good_.layers[0].data;
  lie[lie.size() / 2] ^= 0x55;
  registry_.Route(BlobPath("test/app", good_.layers[0].digest), [lie](const HttpRequest&) {
    return HttpResponse{200, {}, lie};
  });
  ExpectFailsCleanly(Ref("test/app:v1"), "does not match its digest: expected " + good_.layers[0].digest);
}

TEST_F(BadInputTest, ManifestOverFourMiB) {
  json huge = json::parse(good_.manifest);
  huge["annotations"] = {{"padding", std::string(5 << 20, 'p')}};
  FakeImage img = good_;
  img.manifest = huge.dump();
  img.manifest_digest = Sha256Of(img.manifest).str();
  registry_.Serve("test/huge", "v1", img);
  ExpectFailsCleanly(Ref("test/huge:v1"), "is larger than the limit of 4194304 bytes");
}

TEST_F(BadInputTest, TruncatedDownload) {
  std::string data = good_.layers[0].data;
  registry_.Route(BlobPath("test/app", good_.layers[0].digest), [data](const HttpRequest&) {
    HttpResponse r{200, {}, data};
    r.behaviour = HttpResponse::Behaviour::kTruncate;
    r.send_bytes = data.size() / 2;
    return r;
  });
  ExpectFailsCleanly(Ref("test/app:v1"), "gave up after 2 attempts");
  EXPECT_EQ(registry_.Count(BlobPath("test/app", good_.layers[0].digest)), 2);
}

TEST_F(BadInputTest, Unauthorized401WithoutCredentials) {
  registry_.Route("/v2/test/app/manifests/v1", [](const HttpRequest&) {
    return HttpResponse{401, {{"WWW-Authenticate", "Basic realm=\"test\""}}, "{}"};
  });
  ExpectFailsCleanly(Ref("test/app:v1"), "requires authentication (HTTP 401)");
}

TEST_F(BadInputTest, UnknownMediaTypes) {
  FakeImage img = good_;
  json m = json::parse(img.manifest);
  m["mediaType"] = "application/vnd.example.unknown+json";
  img.manifest = m.dump();
  img.manifest_digest = Sha256Of(img.manifest).str();
  registry_.Serve("test/unknown", "v1", img);
  ExpectFailsCleanly(Ref("test/unknown:v1"), "unknown manifest media type \"application/vnd.example.unknown+json\"");

  Blob odd = good_.layers[0];
  odd.media_type = "application/vnd.example.layer.tar+lz4";
  FakeImage layer_img = MakeImage({odd});
  registry_.Serve("test/oddlayer", "v1", layer_img);
  ExpectFailsCleanly(Ref("test/oddlayer:v1"), "unknown layer media type \"application/vnd.example.layer.tar+lz4\"");
}

TEST_F(BadInputTest, RegistryThatStopsAnswering) {
  registry_.Route(BlobPath("test/app", good_.layers[0].digest), [](const HttpRequest&) {
    HttpResponse r;
    r.behaviour = HttpResponse::Behaviour::kStall;
    return r;
  });
  auto start = std::chrono::steady_clock::now();
  ExpectFailsCleanly(Ref("test/app:v1"), "stopped sending data");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30)) << "every wait is bounded";

  registry_.Route("/v2/test/app/manifests/v1", [](const HttpRequest&) {
    HttpResponse r;
    r.behaviour = HttpResponse::Behaviour::kStall;
    return r;
  });
  ExpectFailsCleanly(Ref("test/app:v1"), "manifest");
}

TEST_F(BadInputTest, HostileLayerTars) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "layer images (where layers are unpacked) are built during pulls only as root";
  }
  e2e::TempDir outside("chrys-outside");
  ASSERT_TRUE(base::WriteFileAtomic(outside.path() + "/passwd", "original").ok());
  struct Case {
    std::string name;
    std::vector<TarEntry> entries;
    std::string why;
  };
  std::vector<Case> cases = {
      {"dotdot", {TarEntry::File("../../../../../.." + outside.path() + "/pwned", "x")}, "contains \"..\""},
      {"absolute", {TarEntry::File(outside.path() + "/pwned", "x")}, "is an absolute path"},
      {"symlink",
       {TarEntry::Symlink("evil", outside.path()), TarEntry::File("evil/pwned", "x")},
       "refused layer entry \"evil/pwned\": \"evil\" walks through a symlink out of the layer root"},
      {"hardlink", {TarEntry::Hardlink("h", outside.path() + "/passwd")}, "the hardlink target is an absolute path"},
      {"hardlink-dotdot",
       {TarEntry::Hardlink("h", "../../../../../.." + outside.path() + "/passwd")},
       "the hardlink target contains \"..\""},
  };
  auto outside_before = e2e::SnapshotTree(outside.path());
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto layer = MakeLayer(c.entries);
    ASSERT_TRUE(layer.ok());
    registry_.Serve("test/" + c.name, "v1", MakeImage({*layer}));
    ExpectFailsCleanly(Ref("test/" + c.name + ":v1"), c.why);
  }
  EXPECT_EQ(e2e::DiffSnapshots(outside_before, e2e::SnapshotTree(outside.path())), "");
  EXPECT_EQ(*base::ReadFile(outside.path() + "/passwd"), "original");
}

TEST_F(BadInputTest, BearerTokenFlow) {
  std::string realm = "http://" + registry_.host() + "/token";
  auto guarded = [this, realm](const std::string& path, HttpResponse ok) {
    registry_.Route(path, [realm, ok](const HttpRequest& r) {
      auto auth = r.headers.find("authorization");
      if (auth == r.headers.end() || auth->second != "Bearer good-token") {
        return HttpResponse{401,
                            {{"WWW-Authenticate",
                              "Bearer realm=\"" + realm + "\",service=\"fake\",scope=\"repository:test/app:pull\""}},
                            "{}"};
      }
      return ok;
    });
  };
  guarded("/v2/test/app/manifests/v1",
          HttpResponse{200, {{"Content-Type", "application/vnd.oci.image.manifest.v1+json"}}, good_.manifest});
  guarded(BlobPath("test/app", good_.config.digest), HttpResponse{200, {}, good_.config.data});
  guarded(BlobPath("test/app", good_.layers[0].digest), HttpResponse{200, {}, good_.layers[0].data});
  registry_.Route("/token", [](const HttpRequest& r) {
    auto auth = r.headers.find("authorization");
    // base64("alice:wonder")
    if (auth == r.headers.end() || auth->second != "Basic YWxpY2U6d29uZGVy" ||
        r.path.find("scope=repository%3Atest%2Fapp%3Apull") == std::string::npos) {
      return HttpResponse{401, {}, "{}"};
    }
    return HttpResponse{200, {}, R"({"token":"good-token"})"};
  });
  ExpectFailsCleanly(Ref("test/app:v1"), "refused anonymous access");
  PullOptions creds;
  creds.credentials.username = "alice";
  creds.credentials.password = "wonder";
  auto r = store_->Pull(Ref("test/app:v1"), creds);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(registry_.Count("/token?service=fake&scope=repository%3Atest%2Fapp%3Apull"), 2);
}

TEST_F(BadInputTest, RetriesOn503AndFollowsRedirects) {
  auto storage = std::make_unique<FakeRegistry>();
  ASSERT_TRUE(storage->ok());
  storage->Route("/storage/layer", [this](const HttpRequest& r) {
    // Credentials for the registry must not leak to the storage host.
    EXPECT_EQ(r.headers.count("authorization"), 0u);
    return HttpResponse{200, {}, good_.layers[0].data};
  });
  std::atomic<int> calls{0};
  std::string location = "http://" + storage->host() + "/storage/layer";
  registry_.Route(BlobPath("test/app", good_.layers[0].digest), [&calls, location](const HttpRequest&) {
    if (calls++ == 0) {
      return HttpResponse{503, {{"Retry-After", "0"}}, "{}"};
    }
    return HttpResponse{307, {{"Location", location}}, ""};
  });
  auto r = store_->Pull(Ref("test/app:v1"));
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(storage->Count("/storage/layer"), 1);
}

TEST_F(BadInputTest, MirrorServesBeforeTheRegistry) {
  config_.registry.hosts["registry.invalid"].mirrors = {"http://" + registry_.host()};
  Open();
  auto r = store_->Pull("registry.invalid/test/app:v1");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->repo_tags[0], "registry.invalid/test/app:v1");
}

TEST_F(BadInputTest, ConcurrentPullsDownloadEachBlobOnce) {
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      if (!store_->Pull(Ref("test/app:v1")).ok()) {
        failures++;
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(registry_.Count(BlobPath("test/app", good_.layers[0].digest)), 1);
}

}  // namespace
}  // namespace chrys::imagestore
