// chrys-hal-dm: run by the HAL initramfs /init. Opens the dm-verity root and provisions /cocos as LUKS2
// under a fresh key, in one process (see dm_setup.h). Exit status: 0 done, 2 bad arguments, 3 the verity root
// could not be opened, 5 the root does not match the root hash (its first block fails verification), 4 /cocos
// could not be formatted or opened. After 3 or 5 /cocos was not touched.
#include <libcryptsetup.h>

#include <cstdio>
#include <string>
#include <vector>

#include "guest/hal/dm/dm_setup.h"

namespace {

// A boot phase mark as init's `mark` prints it (the benchmark and tests read them off the console).
void Mark(const char* phase) {
  char uptime[64] = {};
  if (FILE* f = std::fopen("/proc/uptime", "re")) {
    if (std::fscanf(f, "%63s", uptime) != 1) {
      uptime[0] = '\0';
    }
    std::fclose(f);
  }
  std::printf("CHRYS-HAL-MARK %s %s\n", phase, uptime);
  std::fflush(stdout);
}

void LogToStderr(int level, const char* msg, void*) {
  if (level == CRYPT_LOG_ERROR) {
    std::fprintf(stderr, "chrys-hal-dm: libcryptsetup: %s", msg);
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace chrys::guest::hal;
  std::vector<std::string> args(argv + 1, argv + argc);
  auto request = ParseDmSetupArgs(args);
  if (!request.ok()) {
    std::fprintf(stderr,
                 "chrys-hal-dm: %s\nusage: chrys-hal-dm [--verity DATA_DEVICE HASH_DEVICE ROOTHASH NAME] "
                 "[--luks DEVICE NAME LABEL]\n",
                 request.error().message().c_str());
    return 2;
  }
  crypt_set_log_callback(nullptr, LogToStderr, nullptr);
  // PID 1's initramfs has no lock directory and nothing else opens these devices.
  crypt_metadata_locking(nullptr, 0);
  if (request->verity) {
    if (auto s = OpenVerity(request->verity_open); !s.ok()) {
      std::fprintf(stderr, "chrys-hal-dm: verity: %s\n", s.error().message().c_str());
      return 3;
    }
    if (auto s = CheckVerityReadable(request->verity_open.name); !s.ok()) {
      std::fprintf(stderr, "chrys-hal-dm: verity: %s\n", s.error().message().c_str());
      return 5;
    }
    Mark("verity-open");
  }
  if (request->luks) {
    if (auto s = ProvisionLuks(request->luks_provision, [] { Mark("luks-format"); }); !s.ok()) {
      std::fprintf(stderr, "chrys-hal-dm: luks: %s\n", s.error().message().c_str());
      return 4;
    }
    Mark("luks-open");
  }
  return 0;
}
