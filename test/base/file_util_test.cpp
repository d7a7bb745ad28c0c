#include "base/file_util.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <filesystem>

#include "base/unique_fd.h"

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

TEST_F(FileUtilTest, MountPointsAtOrBelowDeepestFirstWithEscapedNames) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "mounting needs root";
  }
  const std::string top = dir_ + "/top";
  const std::string inner = top + "/with space";
  struct Unmount {  // also when an assertion below fails
    std::string top, inner;
    ~Unmount() {
      ::umount2(inner.c_str(), MNT_DETACH);
      ::umount2(top.c_str(), MNT_DETACH);
    }
  } unmount{top, inner};
  ASSERT_TRUE(MakeDirs(top).ok());
  ASSERT_EQ(::mount("tmpfs", top.c_str(), "tmpfs", 0, "size=1m"), 0);
  ASSERT_TRUE(MakeDirs(inner).ok());
  ASSERT_EQ(::mount("tmpfs", inner.c_str(), "tmpfs", 0, "size=1m"), 0);
  auto mounts = MountPointsAtOrBelow(top);
  std::vector<std::string> sibling = MountPointsAtOrBelow(top + "/with");  // a prefix, not a parent
  ::umount2(inner.c_str(), MNT_DETACH);
  ::umount2(top.c_str(), MNT_DETACH);
  EXPECT_EQ(mounts, (std::vector<std::string>{inner, top}));
  EXPECT_TRUE(sibling.empty());
  EXPECT_TRUE(MountPointsAtOrBelow(top).empty());
}

// A memfd with data pages, written-zero pages and holes: only the zero pages are punched, and the bytes read the same.
TEST(PunchZeroPages, FreesOnlyPagesThatHoldZeros) {
  UniqueFd fd(static_cast<int>(::syscall(SYS_memfd_create, "punch-test", MFD_CLOEXEC)));
  ASSERT_TRUE(fd.valid());
  constexpr size_t kPage = 4096;
  ASSERT_EQ(::ftruncate(fd.get(), 32 * kPage), 0);
  std::string data(kPage, 'x');
  std::string zeros(kPage, '\0');
  std::string zero_but_last(kPage, '\0');
  zero_but_last.back() = 1;
  ASSERT_EQ(::pwrite(fd.get(), data.data(), kPage, 0), ssize_t(kPage));
  for (size_t page : {1, 2, 3, 10}) {
    ASSERT_EQ(::pwrite(fd.get(), zeros.data(), kPage, static_cast<off_t>(page * kPage)), ssize_t(kPage));
  }
  ASSERT_EQ(::pwrite(fd.get(), zero_but_last.data(), kPage, 4 * kPage), ssize_t(kPage));
  auto freed = PunchZeroPages(fd.get());
  ASSERT_TRUE(freed.ok()) << freed.error().message();
  EXPECT_EQ(*freed, 4 * kPage);
  struct stat st {};
  ASSERT_EQ(::fstat(fd.get(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_blocks) * 512, 2 * kPage) << "the data page and the almost-zero page stay";
  EXPECT_EQ(st.st_size, static_cast<off_t>(32 * kPage));
  std::string page(kPage, '?');
  ASSERT_EQ(::pread(fd.get(), page.data(), kPage, 4 * kPage), ssize_t(kPage));
  EXPECT_EQ(page, zero_but_last);
  ASSERT_EQ(::pread(fd.get(), page.data(), kPage, 2 * kPage), ssize_t(kPage));
  EXPECT_EQ(page, zeros);
  EXPECT_FALSE(PunchZeroPages(-1).ok());
}

}  // namespace
}  // namespace chrys::base
