// chrysctl: the operator CLI of Chrysalis. Talks to chrysd over its CRI socket.
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cri/client/cri_client.h"

namespace {

using chrys::cri::CriClient;

constexpr const char* kDefaultSocket = "/run/chrysalis/chrysalis.sock";

constexpr const char* kUsage = R"(Usage: chrysctl [--socket PATH] COMMAND [ARGS]

Operator CLI for the Chrysalis CRI runtime.

Commands:
  version     runtime name, version and CRI API version (as crictl version)
  info        runtime and network readiness and the effective config (as crictl info)

Global flags:
  --socket PATH   chrysd's CRI socket (default /run/chrysalis/chrysalis.sock, or $CHRYSALIS_SOCKET)
  -h, --help      this help; COMMAND --help for a command's help
)";

int Fail(const chrys::base::Error& error) {
  std::cerr << "chrysctl: " << error.message() << "\n";
  return 1;
}

int CmdVersion(CriClient& client) {
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

int CmdInfo(CriClient& client) {
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

int main(int argc, char** argv) {
  std::string socket = std::getenv("CHRYSALIS_SOCKET") != nullptr ? std::getenv("CHRYSALIS_SOCKET") : kDefaultSocket;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--socket" && i + 1 < argc) {
      socket = argv[++i];
    } else if (arg.rfind("--socket=", 0) == 0) {
      socket = arg.substr(9);
    } else {
      args.push_back(arg);
    }
  }
  if (args.empty() || args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  using Command = int (*)(CriClient&);
  static const std::map<std::string, std::pair<Command, const char*>> kCommands = {
      {"version", {CmdVersion, "Usage: chrysctl version\n\nPrints the runtime name and versions.\n"}},
      {"info", {CmdInfo, "Usage: chrysctl info\n\nPrints readiness conditions, handlers and config as JSON.\n"}},
  };
  auto it = kCommands.find(args[0]);
  if (it == kCommands.end()) {
    std::cerr << "chrysctl: unknown command '" << args[0] << "' (see chrysctl --help)\n";
    return 2;
  }
  if (args.size() > 1 && (args[1] == "--help" || args[1] == "-h")) {
    std::cout << it->second.second;
    return 0;
  }
  auto client = CriClient::Connect(socket);
  if (!client.ok()) {
    return Fail(client.error());
  }
  return it->second.first(*client);
}
