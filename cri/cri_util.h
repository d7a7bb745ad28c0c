// Small helpers shared by the CRI RPC families: timestamps and label selectors.
#pragma once

#include <google/protobuf/map.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace chrys::cri {

// Wall-clock time in unix nanoseconds, as CRI timestamps are.
inline int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// True when every key of `selector` is in `labels` with the same value (CRI label_selector semantics).
inline bool MatchesSelector(const google::protobuf::Map<std::string, std::string>& labels,
                            const google::protobuf::Map<std::string, std::string>& selector) {
  for (const auto& [key, value] : selector) {
    auto it = labels.find(key);
    if (it == labels.end() || it->second != value) {
      return false;
    }
  }
  return true;
}

}  // namespace chrys::cri
