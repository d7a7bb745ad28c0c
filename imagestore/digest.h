// Content digests ("sha256:<64 hex>"): validation and streaming SHA-256 hashing with OpenSSL EVP.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "base/result.h"

namespace chrys::imagestore {

// A validated sha256 digest. Other algorithms are refused: every blob we store is addressed by sha256.
class Digest {
 public:
  Digest() = default;
  // Accepts exactly "sha256:" followed by 64 lowercase hex characters.
  static base::Result<Digest> Parse(std::string_view text);
  static Digest FromHex(std::string hex);  // caller guarantees 64 lowercase hex characters

  const std::string& hex() const { return hex_; }
  std::string str() const { return "sha256:" + hex_; }
  bool empty() const { return hex_.empty(); }

  friend bool operator==(const Digest& a, const Digest& b) { return a.hex_ == b.hex_; }
  friend bool operator<(const Digest& a, const Digest& b) { return a.hex_ < b.hex_; }

 private:
  std::string hex_;
};

bool IsLowerHex(std::string_view text);

// Incremental SHA-256 over streamed data.
class Sha256Hasher {
 public:
  Sha256Hasher();
  ~Sha256Hasher();
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;

  void Update(const void* data, size_t size);
  // Returns the digest of everything fed so far and resets the hasher.
  Digest Finish();
  void Reset();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

Digest Sha256Of(std::string_view data);

}  // namespace chrys::imagestore
