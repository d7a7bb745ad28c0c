#include "imagestore/manifest.h"

#include <sys/utsname.h>

#include <nlohmann/json.hpp>

namespace chrys::imagestore {
namespace {

using nlohmann::json;

base::Result<json> ParseJson(std::string_view body, const char* what) {
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return base::InvalidArgument(std::string(what) + " is not valid JSON");
  }
  if (!j.is_object()) {
    return base::InvalidArgument(std::string(what) + " is not a JSON object");
  }
  return j;
}

std::string StringField(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) {
    return "";
  }
  return it->get<std::string>();
}

base::Result<Descriptor> ParseDescriptor(const json& j, const std::string& where) {
  if (!j.is_object()) {
    return base::InvalidArgument(where + " is not an object");
  }
  Descriptor d;
  d.media_type = StringField(j, "mediaType");
  auto digest = Digest::Parse(StringField(j, "digest"));
  if (!digest.ok()) {
    return digest.error().Wrap(where);
  }
  d.digest = *digest;
  auto size = j.find("size");
  if (size == j.end() || !size->is_number_integer() || size->get<int64_t>() < 0) {
    return base::InvalidArgument(where + " has no valid size");
  }
  d.size = size->get<int64_t>();
  if (auto p = j.find("platform"); p != j.end() && p->is_object()) {
    Platform platform;
    platform.os = StringField(*p, "os");
    platform.architecture = StringField(*p, "architecture");
    platform.variant = StringField(*p, "variant");
    d.platform = platform;
  }
  if (auto a = j.find("annotations"); a != j.end() && a->is_object()) {
    for (auto it = a->begin(); it != a->end(); ++it) {
      if (it.value().is_string()) {
        d.annotations[it.key()] = it.value().get<std::string>();
      }
    }
  }
  return d;
}

std::string NormaliseVariant(const std::string& arch, const std::string& variant) {
  if (arch == "arm64" && variant.empty()) {
    return "v8";
  }
  return variant;
}

}  // namespace

std::string ManifestAcceptHeader() {
  return std::string(media_type::kOciIndex) + ", " + std::string(media_type::kOciManifest) + ", " +
         std::string(media_type::kDockerManifestList) + ", " + std::string(media_type::kDockerManifest);
}

bool IsIndexMediaType(std::string_view mt) {
  return mt == media_type::kOciIndex || mt == media_type::kDockerManifestList;
}
bool IsManifestMediaType(std::string_view mt) {
  return mt == media_type::kOciManifest || mt == media_type::kDockerManifest;
}
bool IsConfigMediaType(std::string_view mt) {
  return mt == media_type::kOciConfig || mt == media_type::kDockerConfig;
}

base::Result<LayerCompression> LayerCompressionOf(std::string_view mt) {
  if (mt == media_type::kOciLayerTar || mt == "application/vnd.oci.image.layer.nondistributable.v1.tar") {
    return LayerCompression::kNone;
  }
  if (mt == media_type::kOciLayerGzip || mt == media_type::kDockerLayerGzip ||
      mt == media_type::kDockerForeignLayerGzip ||
      mt == "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip") {
    return LayerCompression::kGzip;
  }
  if (mt == media_type::kOciLayerZstd || mt == "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd") {
    return LayerCompression::kZstd;
  }
  return base::InvalidArgument("unknown layer media type \"" + std::string(mt) + "\"");
}

Platform Platform::Host() {
  Platform p;
  p.os = "linux";
  struct utsname u {};
  ::uname(&u);
  std::string machine = u.machine;
  if (machine == "x86_64") {
    p.architecture = "amd64";
  } else if (machine == "aarch64" || machine == "arm64") {
    p.architecture = "arm64";
    p.variant = "v8";
  } else if (machine.rfind("armv7", 0) == 0) {
    p.architecture = "arm";
    p.variant = "v7";
  } else if (machine.rfind("armv6", 0) == 0) {
    p.architecture = "arm";
    p.variant = "v6";
  } else if (machine == "i686" || machine == "i386") {
    p.architecture = "386";
  } else {
    p.architecture = machine;  // ppc64le, s390x, riscv64 use the kernel's name
  }
  return p;
}

base::Result<Platform> Platform::Parse(std::string_view text) {
  Platform p;
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t slash = text.find('/', start);
    parts.emplace_back(text.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
    if (slash == std::string_view::npos) {
      break;
    }
    start = slash + 1;
  }
  if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty()) {
    return base::InvalidArgument("platform \"" + std::string(text) + "\" must be os/arch[/variant]");
  }
  p.os = parts[0];
  p.architecture = parts[1];
  if (parts.size() == 3) {
    p.variant = parts[2];
  }
  return p;
}

std::string Platform::String() const {
  return os + "/" + architecture + (variant.empty() ? "" : "/" + variant);
}

base::Result<std::string> DetectManifestMediaType(std::string_view body, std::string_view declared) {
  // Content-Type may carry parameters ("; charset=utf-8").
  std::string header(declared.substr(0, declared.find(';')));
  while (!header.empty() && header.back() == ' ') {
    header.pop_back();
  }
  CHRYS_ASSIGN_OR_RETURN(json j, ParseJson(body, "manifest"));
  std::string in_doc = StringField(j, "mediaType");
  for (const std::string& candidate : {in_doc, header}) {
    if (IsIndexMediaType(candidate) || IsManifestMediaType(candidate)) {
      return candidate;
    }
  }
  if (!in_doc.empty()) {
    return base::InvalidArgument("unknown manifest media type \"" + in_doc + "\"");
  }
  if (j.contains("manifests")) {
    return std::string(media_type::kOciIndex);
  }
  if (j.contains("layers") && j.contains("config")) {
    return std::string(media_type::kOciManifest);
  }
  if (j.value("schemaVersion", 0) == 1) {
    return base::InvalidArgument("Docker schema-1 manifests are not supported; push the image as schema 2 or OCI");
  }
  return base::InvalidArgument("unknown manifest media type \"" + header + "\"");
}

base::Result<Index> ParseIndex(std::string_view body) {
  CHRYS_ASSIGN_OR_RETURN(json j, ParseJson(body, "image index"));
  Index index;
  index.media_type = StringField(j, "mediaType");
  auto manifests = j.find("manifests");
  if (manifests == j.end() || !manifests->is_array()) {
    return base::InvalidArgument("image index has no manifests array");
  }
  size_t i = 0;
  for (const auto& m : *manifests) {
    CHRYS_ASSIGN_OR_RETURN(Descriptor d, ParseDescriptor(m, "image index manifests[" + std::to_string(i++) + "]"));
    index.manifests.push_back(std::move(d));
  }
  return index;
}

base::Result<Manifest> ParseManifest(std::string_view body) {
  CHRYS_ASSIGN_OR_RETURN(json j, ParseJson(body, "image manifest"));
  Manifest m;
  m.media_type = StringField(j, "mediaType");
  if (j.value("schemaVersion", 0) != 2) {
    return base::InvalidArgument("image manifest schemaVersion must be 2");
  }
  auto config = j.find("config");
  if (config == j.end()) {
    return base::InvalidArgument("image manifest has no config");
  }
  CHRYS_ASSIGN_OR_RETURN(m.config, ParseDescriptor(*config, "image manifest config"));
  if (!IsConfigMediaType(m.config.media_type)) {
    return base::InvalidArgument("unknown config media type \"" + m.config.media_type + "\"");
  }
  auto layers = j.find("layers");
  if (layers == j.end() || !layers->is_array()) {
    return base::InvalidArgument("image manifest has no layers array");
  }
  size_t i = 0;
  for (const auto& l : *layers) {
    std::string where = "image manifest layers[" + std::to_string(i++) + "]";
    CHRYS_ASSIGN_OR_RETURN(Descriptor d, ParseDescriptor(l, where));
    auto compression = LayerCompressionOf(d.media_type);
    if (!compression.ok()) {
      return compression.error().Wrap(where);
    }
    m.layers.push_back(std::move(d));
  }
  return m;
}

base::Result<ImageConfig> ParseImageConfig(std::string_view body) {
  CHRYS_ASSIGN_OR_RETURN(json j, ParseJson(body, "image config"));
  ImageConfig c;
  c.os = StringField(j, "os");
  c.architecture = StringField(j, "architecture");
  c.variant = StringField(j, "variant");
  if (auto cfg = j.find("config"); cfg != j.end() && cfg->is_object()) {
    c.user = StringField(*cfg, "User");
  }
  auto rootfs = j.find("rootfs");
  if (rootfs == j.end() || !rootfs->is_object()) {
    return base::InvalidArgument("image config has no rootfs");
  }
  auto diff_ids = rootfs->find("diff_ids");
  if (diff_ids == rootfs->end() || !diff_ids->is_array()) {
    return base::InvalidArgument("image config rootfs has no diff_ids");
  }
  for (const auto& d : *diff_ids) {
    if (!d.is_string()) {
      return base::InvalidArgument("image config rootfs.diff_ids holds a non-string");
    }
    CHRYS_ASSIGN_OR_RETURN(Digest digest, Digest::Parse(d.get<std::string>()));
    c.diff_ids.push_back(digest);
  }
  return c;
}

base::Result<Descriptor> SelectPlatform(const Index& index, const Platform& want) {
  std::string offered;
  for (const auto& d : index.manifests) {
    if (!d.platform) {
      continue;
    }
    const Platform& p = *d.platform;
    if (!offered.empty()) {
      offered += ", ";
    }
    offered += p.String();
    if (p.os != want.os || p.architecture != want.architecture) {
      continue;
    }
    std::string have_variant = NormaliseVariant(p.architecture, p.variant);
    std::string want_variant = NormaliseVariant(want.architecture, want.variant);
    if (!want_variant.empty() && !have_variant.empty() && have_variant != want_variant) {
      continue;
    }
    if (!IsManifestMediaType(d.media_type) && !d.media_type.empty()) {
      continue;
    }
    return d;
  }
  return base::NotFound("the image index has no manifest for platform " + want.String() +
                        " (it offers: " + (offered.empty() ? "none" : offered) + ")");
}

ImageUser ParseImageUser(const std::string& user) {
  ImageUser out;
  std::string name = user.substr(0, user.find(':'));
  if (name.empty()) {
    return out;
  }
  bool numeric = name.size() <= 10;
  for (char c : name) {
    numeric = numeric && c >= '0' && c <= '9';
  }
  if (numeric) {
    out.uid = std::stoll(name);
  } else {
    out.username = name;
  }
  return out;
}

}  // namespace chrys::imagestore
