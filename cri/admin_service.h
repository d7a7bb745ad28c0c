// AdminServiceImpl serves chrysctl's operator RPCs (chrys.admin.v1) that CRI has no place for.
#pragma once

#include "cri/proto/admin.grpc.pb.h"
#include "imagestore/image_store.h"

namespace chrys::cri {

class AdminServiceImpl final : public chrys::admin::v1::Admin::Service {
 public:
  explicit AdminServiceImpl(imagestore::ImageStore& images);

  grpc::Status ImportImage(grpc::ServerContext* context, const chrys::admin::v1::ImportImageRequest* request,
                           chrys::admin::v1::ImportImageResponse* response) override;

 private:
  imagestore::ImageStore& images_;
};

}  // namespace chrys::cri
