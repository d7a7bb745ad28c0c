// StateStore keeps chrysd's records (one JSON file per object) crash-safe under the state root.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"

namespace chrys::cri {

class StateStore {
 public:
  // `root` is e.g. /var/lib/chrysalis/state; it is created if missing.
  static base::Result<StateStore> Open(const std::string& root);

  // Writes the record atomically: after a crash at any instant the old or the new record is there, whole.
  base::Status Put(const std::string& kind, const std::string& id, const nlohmann::json& record);
  base::Result<nlohmann::json> Get(const std::string& kind, const std::string& id) const;
  // Removing a record that is not there is not an error.
  base::Status Delete(const std::string& kind, const std::string& id);

  // Loads every record of a kind. A record that cannot be read or parsed is logged and moved to
  // <root>/<kind>/corrupt/, so one bad file never stops chrysd from starting.
  std::vector<std::pair<std::string, nlohmann::json>> LoadAll(const std::string& kind);

  const std::string& root() const { return root_; }

 private:
  explicit StateStore(std::string root) : root_(std::move(root)) {}
  std::string PathOf(const std::string& kind, const std::string& id) const;
  void MoveAside(const std::string& kind, const std::string& file, const std::string& why);

  std::string root_;
};

// Ids and kinds become file names: only [A-Za-z0-9_.-], not starting with '.', at most 128 bytes.
bool IsSafeRecordName(const std::string& name);

}  // namespace chrys::cri
