#include <gtest/gtest.h>

#include "imagestore/digest.h"
#include "imagestore/reference.h"

namespace chrys::imagestore {
namespace {

TEST(DigestTest, HashesKnownVectors) {
  EXPECT_EQ(Sha256Of("").str(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256Hasher h;
  h.Update("ab", 2);
  h.Update("c", 1);
  EXPECT_EQ(h.Finish().hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(DigestTest, ParseRefusesOtherAlgorithmsAndBadHex) {
  EXPECT_TRUE(Digest::Parse("sha256:" + std::string(64, 'a')).ok());
  auto upper = Digest::Parse("sha256:" + std::string(64, 'A'));
  ASSERT_FALSE(upper.ok());
  EXPECT_NE(upper.error().message().find("64 lowercase hex"), std::string::npos);
  EXPECT_FALSE(Digest::Parse("sha512:" + std::string(128, 'a')).ok());
  EXPECT_FALSE(Digest::Parse("sha256:abc").ok());
  EXPECT_FALSE(Digest::Parse("sha256:" + std::string(63, 'a') + "/").ok());
}

TEST(ReferenceTest, NormalisesDockerHubNames) {
  auto r = Reference::Parse("busybox");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->registry, "docker.io");
  EXPECT_EQ(r->repository, "library/busybox");
  EXPECT_EQ(r->tag, "latest");
  EXPECT_EQ(r->String(), "docker.io/library/busybox:latest");
  EXPECT_EQ(RegistryApiHost(r->registry), "registry-1.docker.io");
  auto u = Reference::Parse("someone/app:1.2");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->String(), "docker.io/someone/app:1.2");
}

TEST(ReferenceTest, RegistryPortTagAndDigest) {
  std::string d = "sha256:" + std::string(64, 'b');
  auto r = Reference::Parse("127.0.0.1:5000/team/app:v1@" + d);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->registry, "127.0.0.1:5000");
  EXPECT_EQ(r->repository, "team/app");
  EXPECT_EQ(r->tag, "v1");
  EXPECT_EQ(r->digest, d);
  EXPECT_EQ(r->ManifestReference(), d);
  auto only_digest = Reference::Parse("localhost/app@" + d);
  ASSERT_TRUE(only_digest.ok());
  EXPECT_EQ(only_digest->tag, "");
  EXPECT_EQ(only_digest->String(), "localhost/app@" + d);
  auto port_no_tag = Reference::Parse("registry.example.com:443/app");
  ASSERT_TRUE(port_no_tag.ok());
  EXPECT_EQ(port_no_tag->registry, "registry.example.com:443");
  EXPECT_EQ(port_no_tag->tag, "latest");
}

TEST(ReferenceTest, RefusesInvalidNames) {
  for (const char* bad : {"", "UPPER/case", "app:", "app:-tag", "a//b", "app@sha256:xyz", "../x", "host:5000/"}) {
    auto r = Reference::Parse(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_NE(r.error().message().find("is invalid"), std::string::npos) << r.error().message();
    }
  }
}

}  // namespace
}  // namespace chrys::imagestore
