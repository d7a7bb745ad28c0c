#include "base/file_util.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

namespace chrys::base {
namespace {

class FileUtilTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/chrys-fileutil-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(FileUtilTest, AtomicWriteReplacesAndLeavesNoTemp) {
  std::string path = dir_ + "/rec.json";
  ASSERT_TRUE(WriteFileAtomic(path, "old", 0600).ok());
  ASSERT_TRUE(WriteFileAtomic(path, "new", 0600).ok());
  EXPECT_EQ(*ReadFile(path), "new");
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600U);
  int entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir_)) {
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

TEST_F(FileUtilTest, AtomicWriteIntoMissingDirFails) {
  auto s = WriteFileAtomic(dir_ + "/missing/rec", "x");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), ErrorCode::kNotFound);
}

TEST_F(FileUtilTest, ReadFileLimitAndMissing) {
  std::string path = dir_ + "/big";
  ASSERT_TRUE(WriteFileAtomic(path, std::string(100, 'x')).ok());
  EXPECT_FALSE(ReadFile(path, 99).ok());
  EXPECT_EQ(ReadFile(path, 100)->size(), 100U);
  EXPECT_EQ(ReadFile(dir_ + "/nope").error().code(), ErrorCode::kNotFound);
}

TEST_F(FileUtilTest, MakeDirsAndRemoveTree) {
  std::string deep = dir_ + "/a/b/c";
  ASSERT_TRUE(MakeDirs(deep, 0700).ok());
  EXPECT_TRUE(std::filesystem::is_directory(deep));
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/a/file", "x").ok());
  EXPECT_FALSE(MakeDirs(dir_ + "/a/file").ok());
  ASSERT_TRUE(RemoveTree(dir_ + "/a").ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/a"));
  EXPECT_TRUE(RemoveTree(dir_ + "/a").ok());
  EXPECT_TRUE(RemoveFileIfExists(dir_ + "/none").ok());
}

}  // namespace
}  // namespace chrys::base
