// ImageServiceImpl serves the CRI ImageService on top of the node's image store.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "base/result.h"
#include "cri/proto/api.grpc.pb.h"
#include "imagestore/image_store.h"

namespace chrys::cri {

namespace v1 = ::runtime::v1;

class ImageServiceImpl final : public v1::ImageService::Service {
 public:
  explicit ImageServiceImpl(imagestore::ImageStore& store);

  // Pulls that belong inside a confidential pod's guest: answers them (the image id, or an error), or nullopt
  // to let the host store pull.
  using GuestPull = std::function<std::optional<base::Result<std::string>>(const v1::PullImageRequest&)>;
  void SetGuestPull(GuestPull guest_pull) { guest_pull_ = std::move(guest_pull); }

  grpc::Status ListImages(grpc::ServerContext* context, const v1::ListImagesRequest* request,
                          v1::ListImagesResponse* response) override;
  grpc::Status ImageStatus(grpc::ServerContext* context, const v1::ImageStatusRequest* request,
                           v1::ImageStatusResponse* response) override;
  grpc::Status PullImage(grpc::ServerContext* context, const v1::PullImageRequest* request,
                         v1::PullImageResponse* response) override;
  grpc::Status RemoveImage(grpc::ServerContext* context, const v1::RemoveImageRequest* request,
                           v1::RemoveImageResponse* response) override;
  grpc::Status ImageFsInfo(grpc::ServerContext* context, const v1::ImageFsInfoRequest* request,
                           v1::ImageFsInfoResponse* response) override;

 private:
  GuestPull guest_pull_;
  imagestore::ImageStore& store_;
};

// The CRI view of one stored image.
void FillImage(const imagestore::ImageRecord& record, v1::Image* image);

// CRI AuthConfig → registry credentials.
imagestore::Credentials ToCredentials(const v1::AuthConfig& auth);

}  // namespace chrys::cri
