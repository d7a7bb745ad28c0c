#include "cri/admin_service.h"

#include <spdlog/spdlog.h>

#include "cri/grpc_status.h"

namespace chrys::cri {

AdminServiceImpl::AdminServiceImpl(imagestore::ImageStore& images) : images_(images) {}

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
