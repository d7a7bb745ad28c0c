// GuestImageService: PullImage inside a confidential guest — the imagestore library pulls onto /cocos and
// each layer is unpacked there for overlayfs; nothing of the image passes through the host.
#pragma once

#include <grpcpp/grpcpp.h>

#include <mutex>
#include <string>

#include "base/result.h"
#include "guest/proto/agent.grpc.pb.h"

namespace chrys::guest {

namespace v1 = ::chrys::agent::v1;

// The image cache on the encrypted partition (the initramfs creates it).
inline constexpr const char* kGuestImageDir = "/cocos/.cache/oci";

class GuestImageService final : public v1::GuestImages::Service {
 public:
  explicit GuestImageService(std::string cache_dir = kGuestImageDir);

  grpc::Status PullImage(grpc::ServerContext* context, const v1::PullImageRequest* request,
                         v1::PullImageResponse* response) override;

  // The work behind the RPC (also for tests with a local registry): pulls `request.image()` into
  // <cache_dir>/store and unpacks each layer once into <cache_dir>/layers/<digest hex>.
  base::Result<v1::PullImageResponse> Pull(const v1::PullImageRequest& request);

 private:
  std::mutex mu_;  // one pull at a time: the store takes an exclusive lock
  std::string cache_dir_;
};

}  // namespace chrys::guest
