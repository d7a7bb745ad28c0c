#include "base/result.h"

#include <gtest/gtest.h>

namespace chrys::base {
namespace {

Result<int> Half(int v) {
  if (v % 2 != 0) {
    return InvalidArgument("odd value " + std::to_string(v));
  }
  return v / 2;
}

Result<int> Quarter(int v) {
  CHRYS_ASSIGN_OR_RETURN(int h, Half(v));
  return Half(h);
}

Status CheckEven(int v) {
  CHRYS_RETURN_IF_ERROR(Half(v));
  return Status::Ok();
}

TEST(ResultTest, ValueAndErrorPropagate) {
  EXPECT_EQ(*Quarter(8), 2);
  auto r = Quarter(6);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(r.error().message(), "odd value 3");
  EXPECT_TRUE(CheckEven(2).ok());
  EXPECT_FALSE(CheckEven(3).ok());
}

TEST(ResultTest, SystemErrorMapsErrno) {
  EXPECT_EQ(SystemError("open x", ENOENT).code(), ErrorCode::kNotFound);
  EXPECT_EQ(SystemError("open x", EACCES).code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(SystemError("open x", EIO).message().find("open x: "), std::string::npos);
  EXPECT_EQ(Error(ErrorCode::kNotFound, "b").Wrap("a").message(), "a: b");
}

}  // namespace
}  // namespace chrys::base
