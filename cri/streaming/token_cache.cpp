#include "cri/streaming/token_cache.h"

#include <openssl/rand.h>

namespace chrys::cri::streaming {

namespace {

// 32 random bytes as unpadded base64url: 43 characters, safe in a URL path.
base::Result<std::string> NewToken() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    return base::Internal("no random bytes for a stream token");
  }
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string token;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char b : bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      token.push_back(kAlphabet[(acc >> bits) & 63]);
    }
  }
  if (bits > 0) {
    token.push_back(kAlphabet[(acc << (6 - bits)) & 63]);
  }
  return token;
}

}  // namespace

TokenCache::TokenCache(std::chrono::milliseconds ttl, size_t max_entries, Clock clock)
    : ttl_(ttl), max_entries_(max_entries), clock_(std::move(clock)) {}

void TokenCache::DropExpiredLocked(std::chrono::steady_clock::time_point now) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    it = it->second.expires <= now ? entries_.erase(it) : std::next(it);
  }
}

base::Result<std::string> TokenCache::Insert(StreamRequest request) {
  CHRYS_ASSIGN_OR_RETURN(std::string token, NewToken());
  std::lock_guard lock(mu_);
  auto now = clock_();
  if (entries_.size() >= max_entries_) {
    DropExpiredLocked(now);
  }
  if (entries_.size() >= max_entries_) {
    return base::Unavailable("too many pending stream requests (" + std::to_string(max_entries_) +
                             "); retry after some expire");
  }
  entries_.emplace(token, Entry{std::move(request), now + ttl_});
  return token;
}

std::optional<StreamRequest> TokenCache::Take(const std::string& token) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(token);
  if (it == entries_.end()) {
    return std::nullopt;
  }
  Entry entry = std::move(it->second);
  entries_.erase(it);
  if (entry.expires <= clock_()) {
    return std::nullopt;
  }
  return std::move(entry.request);
}

size_t TokenCache::size() {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace chrys::cri::streaming
