// TokenCache holds granted stream requests under random single-use tokens that expire when unused.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "base/result.h"
#include "cri/streaming/requests.h"

namespace chrys::cri::streaming {

class TokenCache {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  // `ttl`: how long a token stays valid when unused. `max_entries` bounds memory against a flood of RPCs.
  explicit TokenCache(
      std::chrono::milliseconds ttl = std::chrono::minutes(1), size_t max_entries = 4096,
      Clock clock = [] { return std::chrono::steady_clock::now(); });

  // Stores `request` under a new URL-safe random token. kUnavailable when the cache is full of live tokens.
  base::Result<std::string> Insert(StreamRequest request);
  // Removes and returns the request: a token works once. nullopt when unknown, used or expired.
  std::optional<StreamRequest> Take(const std::string& token);
  size_t size();

 private:
  struct Entry {
    StreamRequest request;
    std::chrono::steady_clock::time_point expires;
  };
  void DropExpiredLocked(std::chrono::steady_clock::time_point now);

  const std::chrono::milliseconds ttl_;
  const size_t max_entries_;
  Clock clock_;
  std::mutex mu_;
  std::map<std::string, Entry> entries_;
};

}  // namespace chrys::cri::streaming
