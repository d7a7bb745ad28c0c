#include "imagestore/blob_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "base/file_util.h"
#include "e2e/fixtures/temp_dir.h"

namespace chrys::imagestore {
namespace {

using e2e::SnapshotTree;
using e2e::TempDir;

TEST(BlobStoreTest, CommitsOnlyVerifiedContent) {
  TempDir dir;
  auto store = BlobStore::Open(dir.path());
  ASSERT_TRUE(store.ok()) << store.error().message();
  std::string data = "hello blob";
  Digest d = Sha256Of(data);
  bool created = false;
  ASSERT_TRUE((*store)->PutBytes(d, data, &created).ok());
  EXPECT_TRUE(created);
  EXPECT_TRUE((*store)->Has(d));
  EXPECT_EQ(*(*store)->ReadSmall(d, 100), data);
  ASSERT_TRUE((*store)->PutBytes(d, data, &created).ok());
  EXPECT_FALSE(created);  // already there
}

TEST(BlobStoreTest, WrongDigestOrSizeLeavesNothing) {
  TempDir dir;
  auto store = BlobStore::Open(dir.path());
  ASSERT_TRUE(store.ok());
  auto before = SnapshotTree(dir.path());
  Digest claimed = Sha256Of("the real content");
  bool created = true;
  auto s = (*store)->PutBytes(claimed, std::string("evil content....").substr(0, 16), &created);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("does not match its digest: expected " + claimed.str()), std::string::npos)
      << s.error().message();
  EXPECT_FALSE(created);
  EXPECT_FALSE((*store)->Has(claimed));
  EXPECT_EQ(e2e::DiffSnapshots(before, SnapshotTree(dir.path())), "");

  // Truncated: fewer bytes than the descriptor says.
  auto w = (*store)->NewWriter(claimed, 100);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Write("abc", 3).ok());
  auto commit = (*w)->Commit();
  ASSERT_FALSE(commit.ok());
  EXPECT_NE(commit.error().message().find("truncated: got 3 of 100 bytes"), std::string::npos);
  w->reset();
  // Too long.
  auto w2 = (*store)->NewWriter(claimed, 2);
  ASSERT_TRUE(w2.ok());
  EXPECT_FALSE((*w2)->Write("abc", 3).ok());
  w2->reset();
  EXPECT_EQ(e2e::DiffSnapshots(before, SnapshotTree(dir.path())), "");
}

TEST(BlobStoreTest, ConcurrentEnsureDownloadsOnce) {
  TempDir dir;
  auto store = BlobStore::Open(dir.path());
  ASSERT_TRUE(store.ok());
  std::string data(1 << 20, 'x');
  Digest d = Sha256Of(data);
  std::atomic<int> producers{0};
  std::atomic<int> created_count{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      bool created = false;
      auto s = (*store)->Ensure(
          d, static_cast<int64_t>(data.size()),
          [&](BlobStore::Writer& w) {
            producers++;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            return w.Write(data.data(), data.size());
          },
          &created);
      EXPECT_TRUE(s.ok());
      if (created) {
        created_count++;
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(producers.load(), 1);
  EXPECT_EQ(created_count.load(), 1);
  EXPECT_TRUE((*store)->Has(d));
}

TEST(BlobStoreTest, OpenRemovesInterruptedIngests) {
  TempDir dir;
  {
    auto store = BlobStore::Open(dir.path());
    ASSERT_TRUE(store.ok());
  }
  // What a pull killed mid-download leaves behind.
  ASSERT_TRUE(base::WriteFileAtomic(dir.path() + "/ingest/" + Sha256Of("x").hex() + ".0123", "partial").ok());
  auto store = BlobStore::Open(dir.path());
  ASSERT_TRUE(store.ok());
  auto snap = SnapshotTree(dir.path());
  for (const auto& [path, what] : snap) {
    EXPECT_EQ(path.rfind("ingest/", 0), std::string::npos) << path;
  }
}

}  // namespace
}  // namespace chrys::imagestore
