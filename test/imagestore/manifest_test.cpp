#include "imagestore/manifest.h"

#include <gtest/gtest.h>

namespace chrys::imagestore {
namespace {

std::string D(char c) {
  return "sha256:" + std::string(64, c);
}

TEST(ManifestTest, DetectsTypesFromDocumentHeaderAndShape) {
  EXPECT_EQ(*DetectManifestMediaType(R"({"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]})", ""),
            "application/vnd.oci.image.index.v1+json");
  EXPECT_EQ(*DetectManifestMediaType(R"({"schemaVersion":2,"config":{},"layers":[]})",
                                     "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
            "application/vnd.docker.distribution.manifest.v2+json");
  EXPECT_EQ(*DetectManifestMediaType(R"({"schemaVersion":2,"manifests":[]})", "application/json"),
            "application/vnd.oci.image.index.v1+json");
  auto unknown = DetectManifestMediaType(R"({"mediaType":"application/x-evil","layers":[]})", "");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message().find("unknown manifest media type \"application/x-evil\""), std::string::npos);
  auto v1 = DetectManifestMediaType(R"({"schemaVersion":1,"fsLayers":[]})", "");
  ASSERT_FALSE(v1.ok());
  EXPECT_NE(v1.error().message().find("schema-1"), std::string::npos);
}

TEST(ManifestTest, ParsesManifestAndRefusesUnknownLayerType) {
  std::string good = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
    "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
                     D('a') + R"(","size":10},
    "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":")" +
                     D('b') + R"(","size":20}]})";
  auto m = ParseManifest(good);
  ASSERT_TRUE(m.ok()) << m.error().message();
  EXPECT_EQ(m->layers.size(), 1u);
  EXPECT_EQ(m->layers[0].size, 20);
  std::string bad = good;
  std::string docker_gzip = "application/vnd.docker.image.rootfs.diff.tar.gzip";
  bad.replace(bad.find(docker_gzip), docker_gzip.size(), "application/x-weird-layer");
  auto e = ParseManifest(bad);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message().find("unknown layer media type"), std::string::npos) << e.error().message();
  EXPECT_NE(e.error().message().find("layers[0]"), std::string::npos);
}

TEST(ManifestTest, SelectsPlatformWithVariants) {
  std::string body = R"({"schemaVersion":2,"manifests":[
    {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
                     D('1') + R"(","size":1,
     "platform":{"os":"linux","architecture":"arm","variant":"v7"}},
    {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
                     D('2') + R"(","size":1,
     "platform":{"os":"linux","architecture":"arm64"}},
    {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
                     D('3') + R"(","size":1,
     "platform":{"os":"linux","architecture":"amd64"}}]})";
  auto index = ParseIndex(body);
  ASSERT_TRUE(index.ok());
  EXPECT_EQ(SelectPlatform(*index, *Platform::Parse("linux/amd64"))->digest.str(), D('3'));
  EXPECT_EQ(SelectPlatform(*index, *Platform::Parse("linux/arm64/v8"))->digest.str(), D('2'));
  EXPECT_EQ(SelectPlatform(*index, *Platform::Parse("linux/arm/v7"))->digest.str(), D('1'));
  auto none = SelectPlatform(*index, *Platform::Parse("linux/s390x"));
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().message().find("offers: linux/arm/v7, linux/arm64, linux/amd64"), std::string::npos)
      << none.error().message();
}

TEST(ManifestTest, ConfigUserAndDiffIds) {
  auto c = ParseImageConfig(R"({"os":"linux","architecture":"amd64","config":{"User":"1000:50"},
      "rootfs":{"type":"layers","diff_ids":[")" +
                            D('c') + R"("]}})");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->diff_ids.size(), 1u);
  EXPECT_EQ(*ParseImageUser(c->user).uid, 1000);
  EXPECT_EQ(ParseImageUser("nobody:nogroup").username, "nobody");
  EXPECT_FALSE(ParseImageUser("").uid.has_value());
  EXPECT_FALSE(ParseImageConfig(R"({"rootfs":{"diff_ids":["sha256:zz"]}})").ok());
}

TEST(ManifestTest, HostPlatformIsLinux) {
  Platform p = Platform::Host();
  EXPECT_EQ(p.os, "linux");
  EXPECT_FALSE(p.architecture.empty());
  EXPECT_FALSE(Platform::Parse("linux").ok());
}

}  // namespace
}  // namespace chrys::imagestore
