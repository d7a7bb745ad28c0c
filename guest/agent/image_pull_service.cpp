#include "guest/agent/image_pull_service.h"

#include <stdio.h>
#include <unistd.h>

#include "base/file_util.h"
#include "guest/agent/log.h"
#include "imagestore/image_store.h"
#include "imagestore/layer_unpacker.h"
#include "imagestore/manifest.h"
#include "imagestore/reference.h"

namespace chrys::guest {

using base::Result;

namespace {

// Per-registry CA files from pull requests (tmpfs).
constexpr const char* kRegistryCaDir = "/run/chrys/registry-ca";

grpc::Status ToGrpc(const base::Error& error) {
  grpc::StatusCode code = grpc::StatusCode::INTERNAL;
  switch (error.code()) {
    case base::ErrorCode::kInvalidArgument:
      code = grpc::StatusCode::INVALID_ARGUMENT;
      break;
    case base::ErrorCode::kNotFound:
      code = grpc::StatusCode::NOT_FOUND;
      break;
    case base::ErrorCode::kUnavailable:
      code = grpc::StatusCode::UNAVAILABLE;
      break;
    case base::ErrorCode::kDeadlineExceeded:
      code = grpc::StatusCode::DEADLINE_EXCEEDED;
      break;
    case base::ErrorCode::kPermissionDenied:
      code = grpc::StatusCode::PERMISSION_DENIED;
      break;
    default:
      break;
  }
  return grpc::Status(code, error.message());
}

}  // namespace

GuestImageService::GuestImageService(std::string cache_dir) : cache_dir_(std::move(cache_dir)) {}

Result<v1::PullImageResponse> GuestImageService::Pull(const v1::PullImageRequest& request) {
  if (request.image().empty() || request.image().size() > 4096) {
    return base::InvalidArgument("image must be a reference of 1..4096 characters");
  }
  CHRYS_ASSIGN_OR_RETURN(imagestore::Reference ref, imagestore::Reference::Parse(request.image()));
  std::lock_guard lock(mu_);
  imagestore::ImageStoreConfig config;
  config.root = cache_dir_ + "/store";
  config.build_layer_images_on_pull = false;  // overlayfs on unpacked directories: no EROFS in the guest
  if (request.insecure()) {
    config.registry.hosts[ref.registry].insecure = true;
  }
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(config.root, 0700));
  if (!request.ca_pem().empty()) {
    if (request.ca_pem().size() > (1 << 20)) {
      return base::InvalidArgument("ca_pem: more than 1 MiB of CA certificates");
    }
    // In guest memory (tmpfs), beside nothing else: it names only this registry's trust.
    std::string ca_file = std::string(kRegistryCaDir) + "/" + std::to_string(std::hash<std::string>{}(ref.registry));
    CHRYS_RETURN_IF_ERROR(base::MakeDirs(kRegistryCaDir, 0700));
    CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(ca_file, request.ca_pem(), 0600));
    config.registry.hosts[ref.registry].ca_file = ca_file;
  }
  CHRYS_ASSIGN_OR_RETURN(auto store, imagestore::ImageStore::Open(config));
  imagestore::PullOptions options;
  options.credentials.username = request.auth().username();
  options.credentials.password = request.auth().password();
  options.credentials.auth = request.auth().auth();
  options.credentials.identity_token = request.auth().identity_token();
  options.credentials.registry_token = request.auth().registry_token();
  auto present = request.if_present() ? store->Get(request.image())
                                      : base::Result<imagestore::ImageRecord>(base::NotFound("not looked up"));
  CHRYS_ASSIGN_OR_RETURN(imagestore::ImageRecord image,
                         present.ok() ? std::move(present) : store->Pull(request.image(), options));

  v1::PullImageResponse response;
  response.set_image_id(image.id);
  std::string layers_dir = cache_dir_ + "/layers";
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(layers_dir, 0700));
  for (const imagestore::LayerRecord& layer : image.layers) {
    std::string dest = layers_dir + "/" + layer.digest.hex();
    if (::access(dest.c_str(), F_OK) != 0) {
      // Unpacked beside its final name and renamed: a crash never leaves a half layer under the real name.
      std::string partial = dest + ".partial";
      (void)base::RemoveTree(partial);
      CHRYS_RETURN_IF_ERROR(base::MakeDirs(partial, 0755));
      CHRYS_ASSIGN_OR_RETURN(imagestore::LayerCompression compression,
                             imagestore::LayerCompressionOf(layer.media_type));
      imagestore::UnpackOptions unpack;
      unpack.whiteouts = imagestore::WhiteoutMode::kOverlay;
      unpack.expected_diff_id = layer.diff_id;
      auto unpacked = imagestore::UnpackLayer(store->blobs().PathOf(layer.digest), compression, partial, unpack);
      if (!unpacked.ok()) {
        (void)base::RemoveTree(partial);
        return unpacked.error().Wrap("unpacking layer " + layer.digest.hex().substr(0, 12));
      }
      if (::rename(partial.c_str(), dest.c_str()) != 0) {
        base::Error err = base::SystemError("rename " + partial);
        (void)base::RemoveTree(partial);
        return err;
      }
    }
    response.add_layer_dirs(dest);
  }
  CHRYS_ASSIGN_OR_RETURN(std::string config_json, store->ConfigJson(image));
  response.set_config_json(config_json);
  LogInfo("pulled %s (%s, %d layers) onto %s", request.image().c_str(), image.id.c_str(), response.layer_dirs_size(),
          cache_dir_.c_str());
  return response;
}

grpc::Status GuestImageService::PullImage(grpc::ServerContext*, const v1::PullImageRequest* request,
                                          v1::PullImageResponse* response) {
  auto pulled = Pull(*request);
  if (!pulled.ok()) {
    LogWarn("PullImage %s: %s", request->image().c_str(), pulled.error().message().c_str());
    return ToGrpc(pulled.error());
  }
  *response = std::move(pulled).value();
  return grpc::Status::OK;
}

}  // namespace chrys::guest
