#include "cri/admin_service.h"

#include <dirent.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <regex>
#include <set>

#include "base/file_util.h"
#include "cri/grpc_status.h"

namespace chrys::cri {

AdminServiceImpl::AdminServiceImpl(imagestore::ImageStore& images, GcScope gc) : images_(images), gc_(std::move(gc)) {}

namespace {

std::vector<std::string> EntriesOf(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name != "." && name != "..") {
        names.push_back(name);
      }
    }
    ::closedir(d);
  }
  return names;
}

uint64_t DiskUsage(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    return 0;
  }
  uint64_t total = static_cast<uint64_t>(st.st_blocks) * 512;
  if (S_ISDIR(st.st_mode)) {
    for (const auto& name : EntriesOf(path)) {
      total += DiskUsage(path + "/" + name);
    }
  }
  return total;
}

}  // namespace

grpc::Status AdminServiceImpl::GarbageCollect(grpc::ServerContext* /*context*/,
                                              const chrys::admin::v1::GarbageCollectRequest* request,
                                              chrys::admin::v1::GarbageCollectResponse* response) {
  const bool dry_run = request->dry_run();
  uint64_t total = 0;
  auto add = [&](const std::string& kind, const std::string& name, uint64_t bytes, const base::Status& removed) {
    auto* item = response->add_items();
    item->set_kind(kind);
    item->set_name(name);
    item->set_bytes(bytes);
    item->set_removed(!dry_run && removed.ok());
    if (!removed.ok()) {
      item->set_error(removed.error().message());
    }
    total += bytes;
  };

  auto images = images_.GarbageCollect(dry_run);
  if (!images.ok()) {
    return ToGrpcStatus(images.error().Wrap("image store garbage collection"));
  }
  for (const auto& [what, bytes] : images->items) {
    bool blob = what.rfind("blob ", 0) == 0;
    add(blob ? "blob" : "layer-image", what.substr(what.find(' ', blob ? 0 : 6) + 1), bytes, base::Status::Ok());
  }

  // Sandboxes are ours when a pod or the VM manager knows them; both record an id before creating anything.
  std::set<std::string> known;
  if (gc_.pods != nullptr) {
    for (const auto& pod : gc_.pods->SnapshotPods()) {
      known.insert(pod->id);
    }
  }
  if (gc_.sandboxes != nullptr) {
    for (const auto& sb : gc_.sandboxes->List()) {
      known.insert(sb.id);
    }
  }
  static const std::regex kSandboxId("^[0-9a-f]{64}$");
  if (gc_.network != nullptr && gc_.pods != nullptr && !gc_.netns_dir.empty()) {
    for (const auto& name : EntriesOf(gc_.netns_dir)) {
      // Only namespaces our network module made (it has a record of them), never someone else's.
      if (!std::regex_match(name, kSandboxId) || known.count(name) != 0 || !gc_.network->Describe(name).ok()) {
        continue;
      }
      add("netns", gc_.netns_dir + "/" + name, 0, dry_run ? base::Status::Ok() : gc_.network->Teardown(name));
    }
  }
  if (gc_.pods != nullptr && gc_.sandboxes != nullptr) {
    for (const auto& root : gc_.vm_roots) {
      for (const auto& name : EntriesOf(root)) {
        std::string path = root + "/" + name;
        struct stat st {};
        if (!std::regex_match(name, kSandboxId) || known.count(name) != 0 || ::lstat(path.c_str(), &st) != 0 ||
            !S_ISDIR(st.st_mode)) {
          continue;
        }
        add("vm-dir", path, DiskUsage(path), dry_run ? base::Status::Ok() : base::RemoveTree(path));
      }
    }
  }
  response->set_bytes(total);
  spdlog::info("garbage collection{}: {} items, {} bytes", dry_run ? " (dry run)" : "", response->items_size(), total);
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::ImportImage(grpc::ServerContext* /*context*/,
                                           const chrys::admin::v1::ImportImageRequest* request,
                                           chrys::admin::v1::ImportImageResponse* response) {
  if (request->path().empty() || request->path()[0] != '/') {
    return InvalidArgument("path: an absolute path to an OCI layout directory or OCI archive is required");
  }
  imagestore::ImportOptions options;
  options.reference = request->reference();
  auto record = images_.Import(request->path(), options);
  if (!record.ok()) {
    return ToGrpcStatus(record.error().Wrap("import " + request->path()));
  }
  spdlog::info("imported image {} from {}", record->id, request->path());
  response->set_image_id(record->id);
  for (const auto& tag : record->repo_tags) {
    response->add_repo_tags(tag);
  }
  return grpc::Status::OK;
}

}  // namespace chrys::cri
