#include "cri/container_log.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <regex>
#include <sstream>

#include "base/file_util.h"

namespace chrys::cri {
namespace {

struct Record {
  std::string stream;
  std::string tag;
  std::string text;
};

std::vector<Record> ReadRecords(const std::string& path) {
  std::vector<Record> out;
  std::stringstream in(*base::ReadFile(path));
  std::string line;
  static const std::regex kLine(R"((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (stdout|stderr) ([PF]) (.*))");
  while (std::getline(in, line)) {
    std::smatch m;
    EXPECT_TRUE(std::regex_match(line, m, kLine)) << line.substr(0, 100);
    out.push_back({m[2], m[3], m[4]});
  }
  return out;
}

class ContainerLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/chrys-log-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(ContainerLogTest, LinesStreamsAndPartialHold) {
  auto log = ContainerLog::Open(dir_ + "/pod/c/0.log");
  ASSERT_TRUE(log.ok()) << log.error().message();
  ASSERT_TRUE((*log)->Write(LogStream::kStdout, "hello\nwor").ok());
  ASSERT_TRUE((*log)->Write(LogStream::kStderr, "oops\r\n").ok());
  ASSERT_TRUE((*log)->Write(LogStream::kStdout, "ld\nlast").ok());
  ASSERT_TRUE((*log)->Flush().ok());
  auto records = ReadRecords(dir_ + "/pod/c/0.log");
  ASSERT_EQ(records.size(), 4U);
  EXPECT_EQ(records[0].text, "hello");
  EXPECT_EQ(records[1].stream, "stderr");
  EXPECT_EQ(records[1].text, "oops");
  EXPECT_EQ(records[2].text, "world");
  EXPECT_EQ(records[3].text, "last");
  EXPECT_EQ(records[3].tag, "F");
}

TEST_F(ContainerLogTest, LongLineSplitIntoPartials) {
  auto log = ContainerLog::Open(dir_ + "/0.log");
  ASSERT_TRUE(log.ok());
  std::string line(40000, 'x');
  line[16384] = 'y';
  ASSERT_TRUE((*log)->Write(LogStream::kStdout, line + "\n").ok());
  std::string exact(ContainerLog::kMaxLineBytes, 'z');
  ASSERT_TRUE((*log)->Write(LogStream::kStdout, exact + "\n").ok());
  auto records = ReadRecords(dir_ + "/0.log");
  ASSERT_EQ(records.size(), 4U);
  EXPECT_EQ(records[0].tag, "P");
  EXPECT_EQ(records[0].text.size(), ContainerLog::kMaxLineBytes);
  EXPECT_EQ(records[1].tag, "P");
  EXPECT_EQ(records[1].text[0], 'y');
  EXPECT_EQ(records[2].tag, "F");
  EXPECT_EQ(records[0].text + records[1].text + records[2].text, line);
  EXPECT_EQ(records[3].tag, "F");
  EXPECT_EQ(records[3].text, exact);
}

TEST_F(ContainerLogTest, ReopenAfterRotation) {
  std::string path = dir_ + "/0.log";
  auto log = ContainerLog::Open(path);
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE((*log)->Write(LogStream::kStdout, "before\n").ok());
  std::filesystem::rename(path, path + ".1");
  ASSERT_TRUE((*log)->Reopen().ok());
  ASSERT_TRUE((*log)->Write(LogStream::kStdout, "after\n").ok());
  EXPECT_EQ(ReadRecords(path + ".1").at(0).text, "before");
  EXPECT_EQ(ReadRecords(path).at(0).text, "after");
}

TEST(ContainerLogFormatTest, Rfc3339Nano) {
  auto t = std::chrono::system_clock::time_point(std::chrono::nanoseconds(1700000000123456789LL));
  EXPECT_EQ(ContainerLog::FormatTimestamp(t), "2023-11-14T22:13:20.123456789Z");
}

}  // namespace
}  // namespace chrys::cri
