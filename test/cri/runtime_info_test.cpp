#include <gtest/gtest.h>

#include "cri/runtime_service.h"

namespace chrys::cri {
namespace {

TEST(PodCidrTest, AcceptsSingleAndDualStack) {
  EXPECT_TRUE(ValidatePodCidr("").ok());
  EXPECT_TRUE(ValidatePodCidr("10.244.1.0/24").ok());
  EXPECT_TRUE(ValidatePodCidr("10.244.1.0/24,fd00:10:244:1::/64").ok());
}

TEST(PodCidrTest, RejectsMalformed) {
  for (const char* bad : {"10.244.1.0", "10.244.1.0/33", "10.244.1/24", "fd00::/129", "x/8", "10.0.0.0/",
                          "10.0.0.0/24,10.1.0.0/24,10.2.0.0/24", "10.0.0.0/2a"}) {
    auto s = ValidatePodCidr(bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_NE(s.error().message().find("pod_cidr"), std::string::npos);
  }
}

}  // namespace
}  // namespace chrys::cri
