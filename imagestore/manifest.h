// OCI / Docker schema-2 manifests, indexes and image configs: media types, parsing, platform selection.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "imagestore/digest.h"

namespace chrys::imagestore {

namespace media_type {
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kOciLayerTar = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kOciLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kOciLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view kOciLayoutHeader = "application/vnd.oci.image.layout.v1+json";
inline constexpr std::string_view kDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerConfig = "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kDockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr std::string_view kDockerForeignLayerGzip = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
}  // namespace media_type

// The Accept header value listing every manifest and index type we understand.
std::string ManifestAcceptHeader();

bool IsIndexMediaType(std::string_view mt);
bool IsManifestMediaType(std::string_view mt);
bool IsConfigMediaType(std::string_view mt);

enum class LayerCompression { kNone, kGzip, kZstd };
// The compression a layer media type declares; an unknown type is an error naming it.
base::Result<LayerCompression> LayerCompressionOf(std::string_view media_type);

struct Platform {
  std::string os;
  std::string architecture;
  std::string variant;

  // linux/<this machine's architecture>[/variant], in OCI naming (amd64, arm64/v8, arm/v7, ...).
  static Platform Host();
  // "linux/arm64/v8" → Platform; used for the platform option and in error messages.
  static base::Result<Platform> Parse(std::string_view text);
  std::string String() const;
};

struct Descriptor {
  std::string media_type;
  Digest digest;
  int64_t size = 0;
  std::optional<Platform> platform;
  std::map<std::string, std::string> annotations;
};

struct Index {
  std::string media_type;
  std::vector<Descriptor> manifests;
};

struct Manifest {
  std::string media_type;
  Descriptor config;
  std::vector<Descriptor> layers;
};

struct ImageConfig {
  std::string os;
  std::string architecture;
  std::string variant;
  std::string user;  // config.User, e.g. "1000", "1000:1000", "nobody", ""
  std::vector<Digest> diff_ids;
};

// What kind of document `body` is: the declared type (Content-Type or the document's mediaType) wins, then
// its shape ("manifests" → index, "layers" → manifest). Unknown types are an error naming the type.
base::Result<std::string> DetectManifestMediaType(std::string_view body, std::string_view declared);

base::Result<Index> ParseIndex(std::string_view body);
base::Result<Manifest> ParseManifest(std::string_view body);
base::Result<ImageConfig> ParseImageConfig(std::string_view body);

// Picks the manifest for `want` from an index: same os and architecture; a variant when both name one
// (arm64 with no variant counts as v8). Errors list the platforms the index offers.
base::Result<Descriptor> SelectPlatform(const Index& index, const Platform& want);

// Splits config.User into a numeric uid or a user name, as CRI's ImageStatus reports them.
struct ImageUser {
  std::optional<int64_t> uid;
  std::string username;
};
ImageUser ParseImageUser(const std::string& user);

}  // namespace chrys::imagestore
