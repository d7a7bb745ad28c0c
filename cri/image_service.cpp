// The image RPC family: ListImages, ImageStatus, PullImage, RemoveImage, ImageFsInfo.
#include "cri/image_service.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "cri/grpc_status.h"

namespace chrys::cri {

ImageServiceImpl::ImageServiceImpl(imagestore::ImageStore& store) : store_(store) {}

void FillImage(const imagestore::ImageRecord& record, v1::Image* image) {
  image->set_id(record.id);
  for (const auto& tag : record.repo_tags) {
    image->add_repo_tags(tag);
  }
  for (const auto& digest : record.repo_digests) {
    image->add_repo_digests(digest);
  }
  image->set_size(static_cast<uint64_t>(record.size));
  if (record.uid) {
    image->mutable_uid()->set_value(*record.uid);
  }
  image->set_username(record.username);
  image->mutable_spec()->set_image(record.id);
  image->set_pinned(false);
}

imagestore::Credentials ToCredentials(const v1::AuthConfig& auth) {
  imagestore::Credentials credentials;
  credentials.username = auth.username();
  credentials.password = auth.password();
  credentials.auth = auth.auth();
  credentials.identity_token = auth.identity_token();
  credentials.registry_token = auth.registry_token();
  return credentials;
}

grpc::Status ImageServiceImpl::ListImages(grpc::ServerContext* /*context*/, const v1::ListImagesRequest* request,
                                          v1::ListImagesResponse* response) {
  imagestore::ImageFilter filter;
  if (request->has_filter() && request->filter().has_image()) {
    filter.image = request->filter().image().image();
  }
  for (const auto& record : store_.List(filter)) {
    FillImage(record, response->add_images());
  }
  return grpc::Status::OK;
}

grpc::Status ImageServiceImpl::ImageStatus(grpc::ServerContext* /*context*/, const v1::ImageStatusRequest* request,
                                           v1::ImageStatusResponse* response) {
  const std::string& ref = request->image().image();
  if (ref.empty()) {
    return InvalidArgument("image.image: an image reference or id is required");
  }
  auto record = store_.Get(ref);
  if (!record.ok()) {
    // CRI: an image that is not present is an empty response, not an error.
    if (record.error().code() == base::ErrorCode::kNotFound) {
      return grpc::Status::OK;
    }
    return ToGrpcStatus(record.error());
  }
  FillImage(*record, response->mutable_image());
  if (request->verbose()) {
    nlohmann::json info = {
        {"id", record->id},
        {"manifestDigest", record->manifest_digest.str()},
        {"manifestMediaType", record->manifest_media_type},
        {"platform", record->platform},
        {"layers", nlohmann::json::array()},
    };
    for (const auto& layer : record->layers) {
      info["layers"].push_back({{"digest", layer.digest.str()},
                                {"diffId", layer.diff_id.str()},
                                {"mediaType", layer.media_type},
                                {"size", layer.size}});
    }
    auto config = store_.ConfigJson(*record);
    if (config.ok()) {
      info["imageConfig"] = nlohmann::json::parse(*config, nullptr, false);
    }
    (*response->mutable_info())["info"] = info.dump();
  }
  return grpc::Status::OK;
}

grpc::Status ImageServiceImpl::PullImage(grpc::ServerContext* /*context*/, const v1::PullImageRequest* request,
                                         v1::PullImageResponse* response) {
  const std::string& ref = request->image().image();
  if (ref.empty()) {
    return InvalidArgument("image.image: an image reference is required");
  }
  if (guest_pull_) {
    if (auto in_guest = guest_pull_(*request); in_guest.has_value()) {
      if (!in_guest->ok()) {
        return ToGrpcStatus(in_guest->error().Wrap("pull " + ref + " inside the confidential pod"));
      }
      response->set_image_ref(**in_guest);
      return grpc::Status::OK;
    }
  }
  imagestore::PullOptions options;
  if (request->has_auth()) {
    options.credentials = ToCredentials(request->auth());
  }
  spdlog::info("pulling image {}", ref);
  auto record = store_.Pull(ref, options);
  if (!record.ok()) {
    return ToGrpcStatus(record.error().Wrap("pull " + ref));
  }
  spdlog::info("pulled image {} as {}", ref, record->id);
  response->set_image_ref(record->id);
  return grpc::Status::OK;
}

grpc::Status ImageServiceImpl::RemoveImage(grpc::ServerContext* /*context*/, const v1::RemoveImageRequest* request,
                                           v1::RemoveImageResponse* /*response*/) {
  const std::string& ref = request->image().image();
  if (ref.empty()) {
    return InvalidArgument("image.image: an image reference or id is required");
  }
  auto removed = store_.Remove(ref);
  // Idempotent, as CRI asks: removing an image that is not there succeeds.
  if (!removed.ok() && removed.error().code() != base::ErrorCode::kNotFound) {
    return ToGrpcStatus(removed.error().Wrap("remove " + ref));
  }
  return grpc::Status::OK;
}

grpc::Status ImageServiceImpl::ImageFsInfo(grpc::ServerContext* /*context*/, const v1::ImageFsInfoRequest* /*request*/,
                                           v1::ImageFsInfoResponse* response) {
  auto usage = store_.FsInfo();
  if (!usage.ok()) {
    return ToGrpcStatus(usage.error().Wrap("image filesystem usage"));
  }
  auto* fs = response->add_image_filesystems();
  fs->set_timestamp(usage->timestamp_unix_nanos);
  fs->mutable_fs_id()->set_mountpoint(usage->mountpoint);
  fs->mutable_used_bytes()->set_value(usage->used_bytes);
  fs->mutable_inodes_used()->set_value(usage->inodes_used);
  return grpc::Status::OK;
}

}  // namespace chrys::cri
