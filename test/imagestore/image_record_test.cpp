#include <gtest/gtest.h>

#include "imagestore/image_store.h"

namespace chrys::imagestore {
namespace {

TEST(ImageRecordTest, RoundTripsThroughJson) {
  ImageRecord r;
  r.config_digest = Sha256Of("config");
  r.id = r.config_digest.str();
  r.manifest_digest = Sha256Of("manifest");
  r.manifest_media_type = "application/vnd.oci.image.manifest.v1+json";
  r.index_digest = Sha256Of("index");
  r.repo_tags = {"127.0.0.1:5000/a:v1"};
  r.repo_digests = {"127.0.0.1:5000/a@" + r.index_digest->str()};
  r.size = 1234;
  r.uid = 1000;
  r.platform = "linux/amd64";
  r.created_unix_nanos = 42;
  r.layers.push_back(LayerRecord{Sha256Of("l1"), Sha256Of("d1"), "application/vnd.oci.image.layer.v1.tar+gzip", 99});
  auto back = ImageRecordFromJson(ImageRecordToJson(r));
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(back->id, r.id);
  EXPECT_EQ(back->index_digest->str(), r.index_digest->str());
  EXPECT_EQ(back->repo_tags, r.repo_tags);
  EXPECT_EQ(back->repo_digests, r.repo_digests);
  EXPECT_EQ(*back->uid, 1000);
  ASSERT_EQ(back->layers.size(), 1u);
  EXPECT_EQ(back->layers[0].diff_id, r.layers[0].diff_id);
  EXPECT_EQ(back->layers[0].size, 99);
}

TEST(ImageRecordTest, RefusesMalformedRecords) {
  EXPECT_FALSE(ImageRecordFromJson("not json").ok());
  EXPECT_FALSE(ImageRecordFromJson(R"({"id":"x"})").ok());
  ImageRecord r;
  r.config_digest = Sha256Of("config");
  r.id = Sha256Of("other").str();
  r.manifest_digest = Sha256Of("m");
  auto mismatch = ImageRecordFromJson(ImageRecordToJson(r));
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.error().message().find("does not match its config digest"), std::string::npos);
}

}  // namespace
}  // namespace chrys::imagestore
