#include "cri/state_store.h"

#include <dirent.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "base/file_util.h"

namespace chrys::cri {

using base::Result;
using base::Status;
using nlohmann::json;

namespace {
constexpr const char* kSuffix = ".json";
constexpr size_t kMaxRecordBytes = 16UL << 20;
}  // namespace

bool IsSafeRecordName(const std::string& name) {
  if (name.empty() || name.size() > 128 || name[0] == '.') {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.';
  });
}

Result<StateStore> StateStore::Open(const std::string& root) {
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(root, 0700));
  return StateStore(root);
}

std::string StateStore::PathOf(const std::string& kind, const std::string& id) const {
  return root_ + "/" + kind + "/" + id + kSuffix;
}

Status StateStore::Put(const std::string& kind, const std::string& id, const json& record) {
  if (!IsSafeRecordName(kind) || !IsSafeRecordName(id)) {
    return base::InvalidArgument("state record name '" + kind + "/" + id + "' has characters not allowed in a file name");
  }
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(root_ + "/" + kind, 0700));
  return base::WriteFileAtomic(PathOf(kind, id), record.dump(), 0600);
}

Result<json> StateStore::Get(const std::string& kind, const std::string& id) const {
  if (!IsSafeRecordName(kind) || !IsSafeRecordName(id)) {
    return base::InvalidArgument("state record name '" + kind + "/" + id + "' has characters not allowed in a file name");
  }
  CHRYS_ASSIGN_OR_RETURN(std::string text, base::ReadFile(PathOf(kind, id), kMaxRecordBytes));
  json parsed = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return base::Internal("state record " + PathOf(kind, id) + " is not a JSON object");
  }
  return parsed;
}

Status StateStore::Delete(const std::string& kind, const std::string& id) {
  if (!IsSafeRecordName(kind) || !IsSafeRecordName(id)) {
    return base::InvalidArgument("state record name '" + kind + "/" + id + "' has characters not allowed in a file name");
  }
  return base::RemoveFileIfExists(PathOf(kind, id));
}

void StateStore::MoveAside(const std::string& kind, const std::string& file, const std::string& why) {
  std::string corrupt_dir = root_ + "/" + kind + "/corrupt";
  auto stamp = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  std::string from = root_ + "/" + kind + "/" + file;
  std::string to = corrupt_dir + "/" + file + "." + std::to_string(stamp.count());
  Status made = base::MakeDirs(corrupt_dir, 0700);
  if (!made.ok() || std::rename(from.c_str(), to.c_str()) != 0) {
    spdlog::error("state: record {} is corrupt ({}) and could not be moved aside; ignoring it", from, why);
    return;
  }
  spdlog::error("state: record {} is corrupt ({}); moved to {}", from, why, to);
}

std::vector<std::pair<std::string, json>> StateStore::LoadAll(const std::string& kind) {
  std::vector<std::pair<std::string, json>> out;
  std::string dir = root_ + "/" + kind;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    return out;
  }
  std::vector<std::string> files;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name[0] == '.' && name.find(".tmp-") != std::string::npos) {
      // A temp file left by a crash mid-write: the record it was replacing is still whole.
      base::RemoveFileIfExists(dir + "/" + name).ok();
      continue;
    }
    if (name.size() > std::char_traits<char>::length(kSuffix) && name.ends_with(kSuffix) && name[0] != '.') {
      files.push_back(name);
    }
  }
  ::closedir(d);
  std::sort(files.begin(), files.end());
  for (const auto& file : files) {
    std::string id = file.substr(0, file.size() - std::char_traits<char>::length(kSuffix));
    auto text = base::ReadFile(dir + "/" + file, kMaxRecordBytes);
    if (!text.ok()) {
      MoveAside(kind, file, text.error().message());
      continue;
    }
    json parsed = json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded() || !parsed.is_object()) {
      MoveAside(kind, file, "not a JSON object");
      continue;
    }
    out.emplace_back(id, std::move(parsed));
  }
  return out;
}

}  // namespace chrys::cri
