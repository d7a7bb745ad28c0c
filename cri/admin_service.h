// AdminServiceImpl serves chrysctl's operator RPCs (chrys.admin.v1) that CRI has no place for.
#pragma once

#include <string>
#include <vector>

#include "cri/pod_store.h"
#include "cri/proto/admin.grpc.pb.h"
#include "imagestore/image_store.h"
#include "netcni/pod_network.h"
#include "runtime/sandbox.h"

namespace chrys::cri {

// What GarbageCollect may look at besides the image store; a null member leaves that kind out.
struct GcScope {
  const PodStore* pods = nullptr;
  netcni::PodNetworkManager* network = nullptr;
  runtime::SandboxManager* sandboxes = nullptr;
  std::string netns_dir;              // pod network namespaces, named after sandbox ids
  std::vector<std::string> vm_roots;  // directories holding one directory per sandbox (state and run)
};

class AdminServiceImpl final : public chrys::admin::v1::Admin::Service {
 public:
  explicit AdminServiceImpl(imagestore::ImageStore& images, GcScope gc = {});

  grpc::Status ImportImage(grpc::ServerContext* context, const chrys::admin::v1::ImportImageRequest* request,
                           chrys::admin::v1::ImportImageResponse* response) override;
  grpc::Status GarbageCollect(grpc::ServerContext* context, const chrys::admin::v1::GarbageCollectRequest* request,
                              chrys::admin::v1::GarbageCollectResponse* response) override;

 private:
  imagestore::ImageStore& images_;
  GcScope gc_;
};

}  // namespace chrys::cri
