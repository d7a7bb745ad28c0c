#include "base/subprocess.h"

#include <gtest/gtest.h>

namespace chrys::base {
namespace {

using std::chrono::milliseconds;

TEST(SubprocessTest, CapturesOutputAndExitCode) {
  CommandSpec spec;
  spec.argv = {"sh", "-c", "cat; echo err >&2; exit 3"};
  spec.stdin_data = "hello";
  auto r = RunCommand(spec);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->stdout_data, "hello");
  EXPECT_EQ(r->stderr_data, "err\n");
  EXPECT_FALSE(r->success());
  EXPECT_EQ(r->DescribeExit(), "exited with status 3");
}

TEST(SubprocessTest, EnvironmentReplacedAndExtended) {
  CommandSpec spec;
  spec.argv = {"/bin/sh", "-c", "echo \"$A-$B-$HOME\""};
  spec.env = std::vector<std::string>{"A=1", "HOME=/h", "PATH=/usr/bin:/bin"};
  spec.extra_env = {"B=2", "A=3"};
  auto r = RunCommand(spec);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stdout_data, "3-2-/h\n");
}

TEST(SubprocessTest, TimeoutKillsChild) {
  CommandSpec spec;
  spec.argv = {"sleep", "30"};
  spec.timeout = milliseconds(200);
  auto r = RunCommand(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kDeadlineExceeded);
  EXPECT_NE(r.error().message().find("sleep"), std::string::npos);
}

TEST(SubprocessTest, MissingBinaryIsNotFound) {
  CommandSpec spec;
  spec.argv = {"/nonexistent/chrys-tool"};
  auto r = RunCommand(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(r.error().message().find("/nonexistent/chrys-tool"), std::string::npos);
}

TEST(SubprocessTest, OutputIsBounded) {
  CommandSpec spec;
  spec.argv = {"sh", "-c", "head -c 1000000 /dev/zero"};
  spec.max_output_bytes = 1000;
  auto r = RunCommand(spec);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stdout_data.size(), 1000U);
  EXPECT_TRUE(r->output_truncated);
  EXPECT_TRUE(r->success());
}

TEST(SubprocessTest, SignalReported) {
  CommandSpec spec;
  spec.argv = {"sh", "-c", "kill -9 $$"};
  auto r = RunCommand(spec);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->term_signal, 9);
}

TEST(SubprocessTest, BackgroundGrandchildDoesNotBlock) {
  CommandSpec spec;
  spec.argv = {"sh", "-c", "sleep 20 & echo done"};
  spec.timeout = milliseconds(5000);
  auto r = RunCommand(spec);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->stdout_data, "done\n");
}

}  // namespace
}  // namespace chrys::base
