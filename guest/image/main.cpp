// chrys-guest-image: builds the microVM guest (kernel, initramfs, manifest.json) into a data directory.
#include <cstdio>
#include <cstring>
#include <string>

#include "guest/image/image_builder.h"

int main(int argc, char** argv) {
  chrys::guest::ImageOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* flag) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "chrys-guest-image: %s needs a value\n", flag);
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--out") {
      options.output_dir = value("--out");
    } else if (arg == "--agent") {
      options.agent_path = value("--agent");
    } else if (arg == "--kernel-release") {
      options.kernel_release = value("--kernel-release");
    } else if (arg == "--compression") {
      options.compression = value("--compression");
    } else if (arg == "--crun") {
      options.crun_path = value("--crun");
    } else if (arg == "--busybox") {
      options.busybox_path = value("--busybox");
    } else {
      std::fprintf(stderr,
                   "usage: chrys-guest-image --agent PATH [--out DIR (default %s)] [--kernel-release R]\n"
                   "                         [--compression lz4|zstd|xz|gzip] [--crun PATH] [--busybox PATH]\n",
                   chrys::guest::kDefaultGuestDataDir);
      return 2;
    }
  }
  auto result = chrys::guest::BuildGuestImage(options);
  if (!result.ok()) {
    std::fprintf(stderr, "chrys-guest-image: %s\n", result.error().message().c_str());
    return 1;
  }
  std::printf("kernel     %s\ninitramfs  %s (%llu bytes)\nmanifest   %s\n", result->kernel_path.c_str(),
              result->initramfs_path.c_str(), static_cast<unsigned long long>(result->initramfs_bytes),
              result->manifest_path.c_str());
  return 0;
}
