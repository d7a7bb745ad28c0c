// chrys-hal-dm's argument checks: every bad value is refused with a message naming it, before any device is
// touched (the device work itself runs in the HAL boot e2e tests).
#include "guest/hal/dm/dm_setup.h"

#include <gtest/gtest.h>

namespace chrys::guest::hal {
namespace {

const std::string kHash(64, 'c');

std::vector<std::string> Both() {
  return {"--verity", "/dev/sda2", "/dev/sda3",   kHash,        "root_verity",
          "--luks",   "/dev/sda4", "cocos_crypt", "chrys-cocos"};
}

TEST(DmSetupArgs, ParsesVerityAndLuks) {
  auto r = ParseDmSetupArgs(Both());
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_TRUE(r->verity);
  EXPECT_EQ(r->verity_open.data_device, "/dev/sda2");
  EXPECT_EQ(r->verity_open.hash_device, "/dev/sda3");
  EXPECT_EQ(r->verity_open.roothash, kHash);
  EXPECT_EQ(r->verity_open.name, "root_verity");
  EXPECT_TRUE(r->luks);
  EXPECT_EQ(r->luks_provision.device, "/dev/sda4");
  EXPECT_EQ(r->luks_provision.name, "cocos_crypt");
  EXPECT_EQ(r->luks_provision.label, "chrys-cocos");
  auto only_luks = ParseDmSetupArgs({"--luks", "/dev/vdb", "c", "l"});
  ASSERT_TRUE(only_luks.ok());
  EXPECT_FALSE(only_luks->verity);
}

TEST(DmSetupArgs, RefusesBadInputNamingIt) {
  struct Case {
    std::vector<std::string> args;
    const char* message;
  } cases[] = {
      {{}, "nothing to do"},
      {{"--verity", "/dev/sda2", "/dev/sda3", kHash}, "--verity needs"},
      {{"--luks", "/dev/sda4", "cocos_crypt"}, "--luks needs"},
      {{"--format", "/dev/sda4"}, "unknown argument '--format'"},
      {{"--verity", "sda2", "/dev/sda3", kHash, "root_verity"}, "absolute paths, got 'sda2'"},
      {{"--verity", "/dev/sda2", "/dev/sda2", kHash, "root_verity"}, "are the same (/dev/sda2)"},
      {{"--verity", "/dev/sda2", "/dev/sda3", std::string(63, 'c'), "root_verity"}, "64 lower-case hex digits"},
      {{"--verity", "/dev/sda2", "/dev/sda3", std::string(64, 'C'), "root_verity"}, "64 lower-case hex digits"},
      {{"--verity", "/dev/sda2", "/dev/sda3", std::string(63, 'c') + "g", "root_verity"}, "64 lower-case hex"},
      {{"--verity", "/dev/sda2", "/dev/sda3", kHash, "../root"}, "'../root' is not a device-mapper name"},
      {{"--luks", "/dev/sda4", "", "l"}, "'' is not a device-mapper name"},
      {{"--luks", "/dev/sda4", std::string(65, 'n'), "l"}, "is not a device-mapper name"},
      {{"--luks", "dev/sda4", "cocos_crypt", "l"}, "absolute path, got 'dev/sda4'"},
      {{"--luks", "/dev/sda4", "cocos_crypt", ""}, "label must be 1 to 47"},
      {{"--luks", "/dev/sda4", "c", "l", "--luks", "/dev/sda5", "d", "l"}, "--luks given twice"},
      {{"--verity", "/dev/sda2", "/dev/sda3", kHash, "r", "--verity", "/dev/sda2", "/dev/sda3", kHash, "s"},
       "--verity given twice"},
      {{"--verity", "/dev/sda2", "/dev/sda3", kHash, "root_verity", "--luks", "/dev/sda3", "cocos_crypt", "l"},
       "is the verity data or hash device: refusing to format it"},
      {{"--verity", "/dev/sda2", "/dev/sda3", kHash, "same", "--luks", "/dev/sda4", "same", "l"},
       "the same mapping name 'same'"},
  };
  for (const Case& c : cases) {
    auto r = ParseDmSetupArgs(c.args);
    ASSERT_FALSE(r.ok()) << c.message;
    EXPECT_EQ(r.error().code(), base::ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message().find(c.message), std::string::npos) << r.error().message();
  }
}

}  // namespace
}  // namespace chrys::guest::hal
