// chrys-hal-build: builds the disk-backed HAL image (disk.img, rootfs.ext4, rootfs.verity, rootfs.roothash,
// rootfs.cpio.gz) for confidential pods.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "guest/hal/hal_builder.h"

namespace {

void Usage() {
  std::fprintf(stderr,
               "usage: chrys-hal-build --out DIR [--agent PATH] [--kernel /boot/vmlinuz-R] [--no-crun]\n"
               "                       [--esp-mib N] [--root-mib N] [--cocos-mib N] [--epoch SECONDS]\n"
               "                       [--salt HEX64] [--extra-cmdline TEXT] [--keep-module-signatures]\n"
               "                       [--dm-helper PATH]\n"
               "  --dm-helper PATH          chrys-hal-dm for the initramfs (default: the one next to this program,\n"
               "                            else the one this build made)\n"
               "  --keep-module-signatures  keep the kernel modules signed (for guests booted with Secure Boot and\n"
               "                            lockdown; unsigned modules load ~0.3 s faster under TCG)\n");
}

bool ParseU64(const char* text, uint64_t* out) {
  char* end = nullptr;
  unsigned long long v = std::strtoull(text, &end, 10);
  if (end == text || *end != '\0') {
    return false;
  }
  *out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  chrys::guest::hal::HalImageConfig config;
  // Installed side by side, chrys-hal-build uses its sibling chrys-hal-dm.
  std::error_code ec;
  std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (std::string sibling = exe.parent_path().string() + "/chrys-hal-dm"; !ec && ::access(sibling.c_str(), X_OK) == 0) {
    config.dm_helper = sibling;
  }
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    uint64_t n = 0;
    if (arg == "--out") {
      config.output_dir = value();
    } else if (arg == "--agent") {
      config.agent_binary = value();
    } else if (arg == "--dm-helper") {
      config.dm_helper = value();
    } else if (arg == "--kernel") {
      config.kernel = value();
    } else if (arg == "--keep-module-signatures") {
      config.strip_module_signatures = false;
    } else if (arg == "--no-crun") {
      config.crun_binary.clear();
    } else if (arg == "--esp-mib" && ParseU64(value(), &n)) {
      config.esp_mib = n;
    } else if (arg == "--root-mib" && ParseU64(value(), &n)) {
      config.root_mib = n;
    } else if (arg == "--cocos-mib" && ParseU64(value(), &n)) {
      config.cocos_mib = n;
    } else if (arg == "--epoch" && ParseU64(value(), &n)) {
      config.source_date_epoch = static_cast<int64_t>(n);
    } else if (arg == "--salt") {
      config.verity_salt = value();
    } else if (arg == "--extra-cmdline") {
      config.extra_cmdline = value();
    } else {
      Usage();
      return 2;
    }
  }
  if (config.output_dir.empty()) {
    Usage();
    return 2;
  }
  auto built = chrys::guest::hal::BuildHalImage(config);
  if (!built.ok()) {
    std::fprintf(stderr, "chrys-hal-build: %s\n", built.error().message().c_str());
    return 1;
  }
  std::printf("disk image: %s\nroot hash:  %s\nbuild info: %s\ntime:       %.2f s\n", built->disk_image.c_str(),
              built->roothash.c_str(), built->build_info.c_str(), built->total_seconds);
  return 0;
}
