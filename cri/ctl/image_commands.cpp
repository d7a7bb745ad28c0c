// chrysctl image commands: images, pull, rmi, inspecti, imagefsinfo, import.
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cri/ctl/commands.h"
#include "cri/proto/admin.grpc.pb.h"

namespace chrys::cri::ctl {
namespace {

namespace v1 = runtime::v1;

int Images(CriClient& client, const std::vector<std::string>& args) {
  v1::ListImagesRequest req;
  if (!args.empty()) {
    req.mutable_filter()->mutable_image()->set_image(args[0]);
  }
  v1::ListImagesResponse resp;
  auto status = client.images().ListImages(CriClient::Context().get(), req, &resp);
  if (!status.ok()) {
    return Fail(CriClient::CallError("ListImages", status));
  }
  std::cout << std::left << std::setw(50) << "IMAGE" << std::setw(16) << "IMAGE ID"
            << "SIZE\n";
  for (const auto& image : resp.images()) {
    std::string id = image.id().substr(image.id().find(':') + 1, 13);
    std::vector<std::string> names(image.repo_tags().begin(), image.repo_tags().end());
    if (names.empty()) {
      names.push_back("<none>");
    }
    for (const auto& name : names) {
      std::cout << std::left << std::setw(50) << name << std::setw(16) << id << HumanSize(image.size(), "") << "\n";
    }
  }
  return 0;
}

int Pull(CriClient& client, const std::vector<std::string>& args) {
  auto parsed = ParseArgs(args, {"--creds", "--auth"});
  if (!parsed.ok()) {
    return Fail(parsed.error());
  }
  if (parsed->positional.size() != 1) {
    return Fail("pull takes one image reference (see chrysctl pull --help)");
  }
  v1::PullImageRequest req;
  req.mutable_image()->set_image(parsed->positional[0]);
  if (auto creds = parsed->options.find("--creds"); creds != parsed->options.end()) {
    auto colon = creds->second.find(':');
    if (colon == std::string::npos) {
      return Fail("--creds takes USERNAME:PASSWORD");
    }
    req.mutable_auth()->set_username(creds->second.substr(0, colon));
    req.mutable_auth()->set_password(creds->second.substr(colon + 1));
  }
  if (auto auth = parsed->options.find("--auth"); auth != parsed->options.end()) {
    req.mutable_auth()->set_auth(auth->second);
  }
  v1::PullImageResponse resp;
  auto status = client.images().PullImage(CriClient::Context(std::chrono::hours(1)).get(), req, &resp);
  if (!status.ok()) {
    return Fail(CriClient::CallError("PullImage", status));
  }
  std::cout << "Image is up to date for " << resp.image_ref() << "\n";
  return 0;
}

int RemoveImage(CriClient& client, const std::vector<std::string>& args) {
  if (args.empty()) {
    return Fail("rmi takes one or more image references or ids");
  }
  for (const auto& ref : args) {
    v1::RemoveImageRequest req;
    req.mutable_image()->set_image(ref);
    v1::RemoveImageResponse resp;
    auto status = client.images().RemoveImage(CriClient::Context().get(), req, &resp);
    if (!status.ok()) {
      return Fail(CriClient::CallError("RemoveImage", status));
    }
    std::cout << "Deleted: " << ref << "\n";
  }
  return 0;
}

int InspectImage(CriClient& client, const std::vector<std::string>& args) {
  if (args.size() != 1) {
    return Fail("inspecti takes one image reference or id");
  }
  v1::ImageStatusRequest req;
  req.mutable_image()->set_image(args[0]);
  req.set_verbose(true);
  v1::ImageStatusResponse resp;
  auto status = client.images().ImageStatus(CriClient::Context().get(), req, &resp);
  if (!status.ok()) {
    return Fail(CriClient::CallError("ImageStatus", status));
  }
  if (!resp.has_image()) {
    return Fail("no such image: " + args[0]);
  }
  nlohmann::json out = {{"id", resp.image().id()},
                        {"repoTags", resp.image().repo_tags()},
                        {"repoDigests", resp.image().repo_digests()},
                        {"size", resp.image().size()},
                        {"username", resp.image().username()}};
  if (resp.image().has_uid()) {
    out["uid"] = resp.image().uid().value();
  }
  if (resp.info().contains("info")) {
    out["info"] = nlohmann::json::parse(resp.info().at("info"), nullptr, false);
  }
  std::cout << out.dump(2) << "\n";
  return 0;
}

int ImageFsInfo(CriClient& client, const std::vector<std::string>& /*args*/) {
  v1::ImageFsInfoResponse resp;
  auto status = client.images().ImageFsInfo(CriClient::Context().get(), v1::ImageFsInfoRequest(), &resp);
  if (!status.ok()) {
    return Fail(CriClient::CallError("ImageFsInfo", status));
  }
  for (const auto& fs : resp.image_filesystems()) {
    std::cout << nlohmann::json({{"mountpoint", fs.fs_id().mountpoint()},
                                 {"usedBytes", fs.used_bytes().value()},
                                 {"inodesUsed", fs.inodes_used().value()},
                                 {"timestamp", fs.timestamp()}})
                     .dump(2)
              << "\n";
  }
  return 0;
}

int Import(CriClient& client, const std::vector<std::string>& args) {
  auto parsed = ParseArgs(args, {"--name"});
  if (!parsed.ok()) {
    return Fail(parsed.error());
  }
  if (parsed->positional.size() != 1) {
    return Fail("import takes one path (see chrysctl import --help)");
  }
  std::string path = parsed->positional[0];
  if (path.empty() || path[0] != '/') {
    char cwd[4096];
    if (::getcwd(cwd, sizeof cwd) != nullptr) {
      path = std::string(cwd) + "/" + path;
    }
  }
  chrys::admin::v1::ImportImageRequest req;
  req.set_path(path);
  req.set_reference(parsed->options.count("--name") != 0U ? parsed->options.at("--name") : "");
  chrys::admin::v1::ImportImageResponse resp;
  auto status = client.admin().ImportImage(CriClient::Context(std::chrono::hours(1)).get(), req, &resp);
  if (!status.ok()) {
    return Fail(CriClient::CallError("ImportImage", status));
  }
  std::cout << "Imported " << resp.image_id();
  for (const auto& tag : resp.repo_tags()) {
    std::cout << " " << tag;
  }
  std::cout << "\n";
  return 0;
}

}  // namespace

void AddImageCommands(CommandTable& table) {
  table["images"] = {"list images (as crictl images)", "Usage: chrysctl images [REFERENCE]\n", Images};
  table["pull"] = {"pull an image from a registry",
                   "Usage: chrysctl pull [--creds USER:PASS | --auth BASE64] REFERENCE\n", Pull};
  table["rmi"] = {"remove images", "Usage: chrysctl rmi REFERENCE|ID...\n", RemoveImage};
  table["inspecti"] = {"show an image's status as JSON", "Usage: chrysctl inspecti REFERENCE|ID\n", InspectImage};
  table["imagefsinfo"] = {"usage of the image filesystem", "Usage: chrysctl imagefsinfo\n", ImageFsInfo};
  table["import"] = {"import an OCI image layout directory or OCI archive from a local path",
                     "Usage: chrysctl import [--name REFERENCE] PATH\n\n"
                     "PATH is an OCI image layout directory or a tar of one, on the node chrysd runs on.\n"
                     "Without --name the layout's org.opencontainers.image.ref.name annotation names it.\n",
                     Import};
}

}  // namespace chrys::cri::ctl
