// chrysctl commands about the runtime itself: version, info.
#include <iostream>
#include <nlohmann/json.hpp>

#include "cri/ctl/commands.h"

namespace chrys::cri::ctl {
namespace {

int Version(CriClient& client, const std::vector<std::string>& /*args*/) {
  runtime::v1::VersionResponse resp;
  auto status = client.runtime().Version(CriClient::Context().get(), runtime::v1::VersionRequest(), &resp);
  if (!status.ok()) {
    return Fail(CriClient::CallError("Version", status));
  }
  std::cout << "Version:  " << resp.version() << "\n"
            << "RuntimeName:  " << resp.runtime_name() << "\n"
            << "RuntimeVersion:  " << resp.runtime_version() << "\n"
            << "RuntimeApiVersion:  " << resp.runtime_api_version() << "\n";
  return 0;
}

int Info(CriClient& client, const std::vector<std::string>& /*args*/) {
  runtime::v1::StatusRequest req;
  req.set_verbose(true);
  runtime::v1::StatusResponse resp;
  auto status = client.runtime().Status(CriClient::Context().get(), req, &resp);
  if (!status.ok()) {
    return Fail(CriClient::CallError("Status", status));
  }
  nlohmann::json out;
  for (const auto& c : resp.status().conditions()) {
    out["status"]["conditions"].push_back(
        {{"type", c.type()}, {"status", c.status()}, {"reason", c.reason()}, {"message", c.message()}});
  }
  for (const auto& h : resp.runtime_handlers()) {
    out["runtimeHandlers"].push_back(h.name());
  }
  for (const auto& [key, value] : resp.info()) {
    auto parsed = nlohmann::json::parse(value, nullptr, false);
    out["info"][key] = parsed.is_discarded() ? nlohmann::json(value) : parsed;
  }
  std::cout << out.dump(2) << "\n";
  return 0;
}

}  // namespace

void AddRuntimeCommands(CommandTable& table) {
  table["version"] = {"runtime name, version and CRI API version (as crictl version)",
                      "Usage: chrysctl version\n\nPrints the runtime name and versions.\n", Version};
  table["info"] = {"readiness conditions, handlers and effective config (as crictl info)",
                   "Usage: chrysctl info\n\nPrints readiness conditions, handlers and config as JSON.\n", Info};
}

}  // namespace chrys::cri::ctl
