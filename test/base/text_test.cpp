#include "base/text.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace chrys::base {
namespace {

using Fields = std::vector<std::string>;

TEST(SplitFields, TerminatedAndSeparatedGiveTheSameFields) {
  EXPECT_EQ(SplitFields(std::string("a\0b\0", 4), '\0'), (Fields{"a", "b"}));
  EXPECT_EQ(SplitFields(std::string("a\0b", 3), '\0'), (Fields{"a", "b"}));
  EXPECT_EQ(SplitFields("x.ko\ny.ko\n", '\n'), (Fields{"x.ko", "y.ko"}));
}

TEST(SplitFields, KeepsEmptyFieldsBetweenDelimiters) {
  EXPECT_EQ(SplitFields("a\n\nb", '\n'), (Fields{"a", "", "b"}));
  EXPECT_EQ(SplitFields("\n", '\n'), (Fields{""}));
}

TEST(SplitFields, EmptyTextHasNoFields) {
  EXPECT_TRUE(SplitFields("", '\n').empty());
}

}  // namespace
}  // namespace chrys::base
