#include "imagestore/layer_unpacker.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "base/file_util.h"
#include "e2e/fixtures/temp_dir.h"
#include "e2e/fixtures/test_image.h"

namespace chrys::imagestore {
namespace {

using e2e::TarEntry;
using e2e::TempDir;
using e2e::TestCompression;

class LayerUnpackerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dest_ = dir_.path() + "/root";
    outside_ = dir_.path() + "/outside";
    ASSERT_TRUE(base::MakeDirs(dest_).ok());
    ASSERT_TRUE(base::MakeDirs(outside_).ok());
    ASSERT_TRUE(base::WriteFileAtomic(outside_ + "/passwd", "original").ok());
  }

  base::Result<UnpackStats> Unpack(const std::vector<TarEntry>& entries, UnpackOptions options = Unprivileged(),
                                   TestCompression compression = TestCompression::kGzip) {
    std::string layer = dir_.path() + "/layer.tar";
    auto written = e2e::WriteLayerFile(layer, entries, compression);
    if (!written.ok()) {
      return written.error();
    }
    last_diff_id_ = written->diff_id;
    return UnpackLayer(layer, compression == TestCompression::kGzip ? LayerCompression::kGzip : LayerCompression::kNone,
                       dest_, options);
  }

  static UnpackOptions Unprivileged() {
    UnpackOptions o;
    o.restore_owners = false;
    o.restore_xattrs = false;
    return o;
  }

  // The refusal names the entry, and nothing outside the layer root changed.
  void ExpectRefused(const std::vector<TarEntry>& entries, const std::string& entry, const std::string& why) {
    auto before = e2e::SnapshotTree(outside_);
    auto r = Unpack(entries);
    ASSERT_FALSE(r.ok()) << "entry " << entry << " was accepted";
    EXPECT_NE(r.error().message().find("\"" + entry + "\""), std::string::npos) << r.error().message();
    EXPECT_NE(r.error().message().find(why), std::string::npos) << r.error().message();
    EXPECT_EQ(e2e::DiffSnapshots(before, e2e::SnapshotTree(outside_)), "");
    EXPECT_EQ(*base::ReadFile(outside_ + "/passwd"), "original");
  }

  TempDir dir_;
  std::string dest_;
  std::string outside_;
  std::string last_diff_id_;
};

TEST_F(LayerUnpackerTest, UnpacksTreeWithModesTimesLinksAndDiffId) {
  TarEntry exe = TarEntry::File("usr/bin/tool", "#!/bin/sh\necho hi\n", 04755);
  exe.mtime = 1600000000;
  TarEntry ro_dir = TarEntry::Dir("etc/ro", 0555);
  ro_dir.mtime = 1500000000;
  auto stats = Unpack({TarEntry::Dir("etc"), ro_dir, TarEntry::File("etc/ro/conf", "x=1\n", 0640), exe,
                       TarEntry::Symlink("usr/bin/alias", "tool"), TarEntry::Hardlink("usr/bin/hard", "usr/bin/tool"),
                       TarEntry::Symlink("abs", "/usr/bin/tool")});
  ASSERT_TRUE(stats.ok()) << stats.error().message();
  EXPECT_EQ(stats->diff_id.str(), last_diff_id_);
  EXPECT_EQ(stats->entries, 7u);
  struct stat st {};
  ASSERT_EQ(::stat((dest_ + "/usr/bin/tool").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 04755u);
  EXPECT_EQ(st.st_mtime, 1600000000);
  EXPECT_EQ(st.st_nlink, 2u);
  ASSERT_EQ(::stat((dest_ + "/etc/ro").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0555u);
  EXPECT_EQ(st.st_mtime, 1500000000);
  EXPECT_EQ(*base::ReadFile(dest_ + "/etc/ro/conf"), "x=1\n");
  char buf[64] = {0};
  ASSERT_GT(::readlink((dest_ + "/abs").c_str(), buf, sizeof buf - 1), 0);
  EXPECT_STREQ(buf, "/usr/bin/tool");  // a symlink's target is data; it only matters when walked through
}

TEST_F(LayerUnpackerTest, UncompressedLayerAndDiffIdMismatch) {
  auto ok = Unpack({TarEntry::File("a", "b")}, Unprivileged(), TestCompression::kNone);
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  EXPECT_EQ(ok->diff_id.str(), last_diff_id_);
  UnpackOptions o = Unprivileged();
  o.expected_diff_id = Sha256Of("something else");
  auto bad = Unpack({TarEntry::File("a", "b")}, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("but the image config says " + o.expected_diff_id->str()), std::string::npos);
}

TEST_F(LayerUnpackerTest, CorruptGzipIsAnError) {
  std::string layer = dir_.path() + "/bad.tar.gz";
  ASSERT_TRUE(base::WriteFileAtomic(layer, std::string("\x1f\x8b\x08\x00garbage-garbage-garbage", 30)).ok());
  auto r = UnpackLayer(layer, LayerCompression::kGzip, dest_, Unprivileged());
  ASSERT_FALSE(r.ok());
}

TEST_F(LayerUnpackerTest, RefusesDotDot) {
  ExpectRefused({TarEntry::File("../outside/passwd", "pwned")}, "../outside/passwd", "contains \"..\"");
  ExpectRefused({TarEntry::File("a/../../outside/x", "pwned")}, "a/../../outside/x", "contains \"..\"");
}

TEST_F(LayerUnpackerTest, RefusesAbsolutePath) {
  ExpectRefused({TarEntry::File(outside_ + "/passwd", "pwned")}, outside_ + "/passwd", "absolute path");
}

TEST_F(LayerUnpackerTest, RefusesWritingThroughEscapingSymlink) {
  ExpectRefused({TarEntry::Symlink("evil", outside_), TarEntry::File("evil/passwd", "pwned")}, "evil/passwd",
                "walks through a symlink out of the layer root");
  ExpectRefused({TarEntry::Dir("d"), TarEntry::Symlink("d/up", "../../outside"), TarEntry::File("d/up/new", "x")},
                "d/up/new", "walks through a symlink out of the layer root");
}

TEST_F(LayerUnpackerTest, RefusesHardlinksOutside) {
  ExpectRefused({TarEntry::Hardlink("h", "../outside/passwd")}, "../outside/passwd", "contains \"..\"");
  ExpectRefused({TarEntry::Hardlink("h", outside_ + "/passwd")}, outside_ + "/passwd", "absolute path");
  ExpectRefused({TarEntry::Symlink("evil", outside_), TarEntry::Hardlink("h", "evil/passwd")}, "h",
                "walks through a symlink out of the layer root");
}

TEST_F(LayerUnpackerTest, RefusesDeviceNodes) {
  // 8:0 is /dev/sda on the host: a layer must never make it under the state root.
  ExpectRefused({TarEntry::Dir("dev"), TarEntry::CharDevice("dev/sda", 8, 0)}, "dev/sda", "device node (8:0)");
}

TEST_F(LayerUnpackerTest, SymlinkInsideRootMayBeWalked) {
  auto r = Unpack({TarEntry::Dir("real"), TarEntry::Symlink("alias", "real"), TarEntry::File("alias/f", "ok")});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(*base::ReadFile(dest_ + "/real/f"), "ok");
}

TEST_F(LayerUnpackerTest, ApplyModeDeletesWhiteoutsAndEmptiesOpaqueDirs) {
  // The layer below.
  ASSERT_TRUE(Unpack({TarEntry::File("keep", "1"), TarEntry::File("gone", "2"), TarEntry::Dir("dir"),
                      TarEntry::File("dir/old", "3"), TarEntry::Dir("tree"), TarEntry::File("tree/x", "4")})
                  .ok());
  UnpackOptions o = Unprivileged();
  o.whiteouts = WhiteoutMode::kApply;
  auto r = Unpack({TarEntry::File(".wh.gone", ""), TarEntry::File(".wh.tree", ""), TarEntry::Dir("dir"),
                   TarEntry::File("dir/new", "5"), TarEntry::File("dir/.wh..wh..opq", "")},
                  o);
  ASSERT_TRUE(r.ok()) << r.error().message();
  struct stat st {};
  EXPECT_EQ(::lstat((dest_ + "/keep").c_str(), &st), 0);
  EXPECT_NE(::lstat((dest_ + "/gone").c_str(), &st), 0);
  EXPECT_NE(::lstat((dest_ + "/tree").c_str(), &st), 0);
  EXPECT_NE(::lstat((dest_ + "/dir/old").c_str(), &st), 0);
  EXPECT_EQ(*base::ReadFile(dest_ + "/dir/new"), "5");
  EXPECT_NE(::lstat((dest_ + "/.wh.gone").c_str(), &st), 0);
}

TEST_F(LayerUnpackerTest, OverlayModeWritesWhiteoutDevicesAndOpaqueXattr) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "overlay whiteouts (0/0 devices, trusted.* xattrs) need root";
  }
  UnpackOptions o;
  o.whiteouts = WhiteoutMode::kOverlay;
  TarEntry owned = TarEntry::File("owned", "x");
  owned.uid = 1234;
  owned.gid = 5678;
  owned.xattrs["user.note"] = "kept";
  owned.xattrs["trusted.overlay.redirect"] = "/etc";  // only the store may set overlay's own xattrs
  auto r = Unpack(
      {TarEntry::File(".wh.deleted", ""), TarEntry::Dir("opaque"), TarEntry::File("opaque/.wh..wh..opq", ""), owned},
      o);
  ASSERT_TRUE(r.ok()) << r.error().message();
  struct stat st {};
  ASSERT_EQ(::lstat((dest_ + "/deleted").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(0, 0));
  char value[8] = {0};
  ASSERT_EQ(::getxattr((dest_ + "/opaque").c_str(), "trusted.overlay.opaque", value, sizeof value), 1);
  EXPECT_EQ(value[0], 'y');
  ASSERT_EQ(::lstat((dest_ + "/owned").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  char note[16] = {0};
  EXPECT_EQ(::getxattr((dest_ + "/owned").c_str(), "user.note", note, sizeof note), 4);
  EXPECT_LT(::getxattr((dest_ + "/owned").c_str(), "trusted.overlay.redirect", note, sizeof note), 0);
}

}  // namespace
}  // namespace chrys::imagestore
