#include "runtime/guest_manifest.h"

#include <nlohmann/json.hpp>

#include "base/file_util.h"

namespace chrys::runtime {

base::Result<GuestImageFiles> ReadGuestManifest(const std::string& guest_dir) {
  std::string path = guest_dir + "/manifest.json";
  auto text = base::ReadFile(path, 1 << 20);
  if (!text.ok()) {
    return text.error().Wrap("guest manifest");
  }
  auto manifest = nlohmann::json::parse(*text, nullptr, false);
  auto file_of = [&](const char* key) -> std::string {
    if (!manifest.contains(key) || !manifest[key].is_object()) {
      return "";
    }
    const auto& file = manifest[key].value("file", "");
    return file.empty() ? "" : guest_dir + "/" + file;
  };
  if (!manifest.is_object() || file_of("kernel").empty() || file_of("initramfs").empty()) {
    return base::InvalidArgument(path + " is not a guest manifest (it names no kernel and initramfs file)");
  }
  GuestImageFiles files;
  files.kernel = file_of("kernel");
  files.initramfs = file_of("initramfs");
  files.cmdline = manifest.value("cmdline", "");
  if (std::string tools = file_of("tools_disk"); !tools.empty()) {
    files.tools_disk = DiskSpec{manifest["tools_disk"].value("serial", ""), tools, /*read_only=*/true};
  }
  return files;
}

}  // namespace chrys::runtime
