#include "cri/state_store.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "base/file_util.h"

namespace chrys::cri {
namespace {

class StateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/chrys-state-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(StateStoreTest, PutGetDeleteLoad) {
  auto store = StateStore::Open(dir_ + "/state");
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE(store->Put("pods", "b", {{"n", 2}}).ok());
  ASSERT_TRUE(store->Put("pods", "a", {{"n", 1}}).ok());
  EXPECT_EQ((*store->Get("pods", "a"))["n"], 1);
  auto all = store->LoadAll("pods");
  ASSERT_EQ(all.size(), 2U);
  EXPECT_EQ(all[0].first, "a");
  ASSERT_TRUE(store->Delete("pods", "a").ok());
  ASSERT_TRUE(store->Delete("pods", "a").ok());
  EXPECT_EQ(store->Get("pods", "a").error().code(), base::ErrorCode::kNotFound);
}

TEST_F(StateStoreTest, CorruptRecordIsMovedAsideNotFatal) {
  auto store = StateStore::Open(dir_);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE(store->Put("pods", "good", {{"ok", true}}).ok());
  ASSERT_TRUE(base::WriteFileAtomic(dir_ + "/pods/bad.json", "{\"truncated\": ").ok());
  ASSERT_TRUE(base::WriteFileAtomic(dir_ + "/pods/array.json", "[1,2]").ok());
  ASSERT_TRUE(base::WriteFileAtomic(dir_ + "/pods/.good.json.tmp-123", "{}").ok());
  auto all = store->LoadAll("pods");
  ASSERT_EQ(all.size(), 1U);
  EXPECT_EQ(all[0].first, "good");
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/pods/bad.json"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/pods/.good.json.tmp-123"));
  int aside = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_ + "/pods/corrupt")) {
    aside += e.path().filename().string().rfind("bad.json.", 0) == 0 ||
             e.path().filename().string().rfind("array.json.", 0) == 0;
  }
  EXPECT_EQ(aside, 2);
  EXPECT_EQ(store->LoadAll("pods").size(), 1U);
}

TEST_F(StateStoreTest, UnsafeNamesRefused) {
  auto store = StateStore::Open(dir_);
  ASSERT_TRUE(store.ok());
  for (const char* bad : {"../x", "a/b", "", ".hidden", "a b"}) {
    auto s = store->Put("pods", bad, {});
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.error().code(), base::ErrorCode::kInvalidArgument);
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/x.json"));
}

}  // namespace
}  // namespace chrys::cri
