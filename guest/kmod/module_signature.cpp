#include "guest/kmod/module_signature.h"

#include <cstdint>

namespace chrys::guest::kmod {
namespace {

// struct module_signature (include/linux/module_signature.h): algo, hash, id_type, signer_len, key_id_len,
// three bytes of padding, then the signature length as a big-endian 32-bit value.
constexpr size_t kSignatureInfoBytes = 12;

}  // namespace

bool HasModuleSignature(const std::string& module) {
  return module.size() >= kSignatureMagic.size() &&
         module.compare(module.size() - kSignatureMagic.size(), kSignatureMagic.size(), kSignatureMagic) == 0;
}

base::Result<std::string> StripModuleSignature(std::string module, const std::string& what) {
  if (!HasModuleSignature(module)) {
    return module;
  }
  size_t trailer = kSignatureMagic.size() + kSignatureInfoBytes;
  if (module.size() < trailer) {
    return base::InvalidArgument("kernel module " + what + ": signature trailer without its header (" +
                                 std::to_string(module.size()) + " bytes)");
  }
  const auto* len = reinterpret_cast<const uint8_t*>(module.data() + module.size() - kSignatureMagic.size() - 4);
  uint64_t signature_bytes = (uint64_t{len[0]} << 24) | (uint64_t{len[1]} << 16) | (uint64_t{len[2]} << 8) | len[3];
  if (signature_bytes + trailer > module.size()) {
    return base::InvalidArgument("kernel module " + what + ": signature length " + std::to_string(signature_bytes) +
                                 " exceeds the file (" + std::to_string(module.size()) + " bytes)");
  }
  module.resize(module.size() - trailer - signature_bytes);
  return module;
}

}  // namespace chrys::guest::kmod
