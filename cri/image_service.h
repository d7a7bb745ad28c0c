// ImageServiceImpl serves the CRI ImageService on top of the image store.
#pragma once

#include "cri/proto/api.grpc.pb.h"

namespace chrys::cri {

// Until the image store is wired in, every ImageService RPC answers UNIMPLEMENTED (the generated base class).
class ImageServiceImpl final : public ::runtime::v1::ImageService::Service {};

}  // namespace chrys::cri
