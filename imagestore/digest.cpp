#include "imagestore/digest.h"

#include <openssl/evp.h>

namespace chrys::imagestore {

bool IsLowerHex(std::string_view text) {
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

base::Result<Digest> Digest::Parse(std::string_view text) {
  constexpr std::string_view kPrefix = "sha256:";
  if (text.substr(0, kPrefix.size()) != kPrefix) {
    return base::InvalidArgument("digest \"" + std::string(text) + "\" is not a sha256 digest (sha256:<64 hex>)");
  }
  std::string_view hex = text.substr(kPrefix.size());
  if (hex.size() != 64 || !IsLowerHex(hex)) {
    return base::InvalidArgument("digest \"" + std::string(text) + "\" must be sha256: followed by 64 lowercase hex");
  }
  return FromHex(std::string(hex));
}

Digest Digest::FromHex(std::string hex) {
  Digest d;
  d.hex_ = std::move(hex);
  return d;
}

struct Sha256Hasher::Impl {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~Impl() { EVP_MD_CTX_free(ctx); }
};

Sha256Hasher::Sha256Hasher() : impl_(std::make_unique<Impl>()) {
  Reset();
}
Sha256Hasher::~Sha256Hasher() = default;

void Sha256Hasher::Reset() {
  EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr);
}

void Sha256Hasher::Update(const void* data, size_t size) {
  EVP_DigestUpdate(impl_->ctx, data, size);
}

Digest Sha256Hasher::Finish() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(impl_->ctx, md, &len);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(len * 2);
  for (unsigned int i = 0; i < len; ++i) {
    hex.push_back(kHex[md[i] >> 4]);
    hex.push_back(kHex[md[i] & 0xf]);
  }
  Reset();
  return Digest::FromHex(std::move(hex));
}

Digest Sha256Of(std::string_view data) {
  Sha256Hasher h;
  h.Update(data.data(), data.size());
  return h.Finish();
}

}  // namespace chrys::imagestore
