// chrysctl gc: what chrysd owns and nothing uses (image blobs and layer images, pod netns, VM directories);
// lists it by default, removes it with --force. chrysd does the work: only it may touch its store while it runs.
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cri/ctl/commands.h"

namespace chrys::cri::ctl {
namespace {

int Gc(CriClient& client, const std::vector<std::string>& args) {
  auto parsed = ParseArgs(args, {}, {"--force", "--json"});
  if (!parsed.ok()) {
    return Fail(parsed.error());
  }
  if (!parsed->positional.empty()) {
    return Fail("gc takes no arguments (see chrysctl gc --help)");
  }
  const bool force = parsed->options.count("--force") != 0;
  chrys::admin::v1::GarbageCollectRequest req;
  req.set_dry_run(!force);
  chrys::admin::v1::GarbageCollectResponse resp;
  auto status = client.admin().GarbageCollect(CriClient::Context(std::chrono::minutes(10)).get(), req, &resp);
  if (!status.ok()) {
    return Fail(CriClient::CallError("GarbageCollect", status));
  }
  int failed = 0;
  for (const auto& item : resp.items()) {
    failed += item.error().empty() ? 0 : 1;
  }
  if (parsed->options.count("--json") != 0) {
    nlohmann::json items = nlohmann::json::array();
    for (const auto& item : resp.items()) {
      items.push_back({{"kind", item.kind()},
                       {"name", item.name()},
                       {"bytes", item.bytes()},
                       {"removed", item.removed()},
                       {"error", item.error()}});
    }
    std::cout << nlohmann::json{{"dryRun", !force}, {"items", items}, {"bytes", resp.bytes()}}.dump(2) << "\n";
    return failed == 0 ? 0 : 1;
  }
  if (resp.items().empty()) {
    std::cout << "Nothing to collect.\n";
    return 0;
  }
  for (const auto& item : resp.items()) {
    std::string verdict = !force ? "would remove" : item.removed() ? "removed" : "FAILED";
    std::cout << std::left << std::setw(13) << verdict << std::setw(12) << item.kind() << item.name();
    if (item.bytes() > 0) {
      std::cout << " (" << HumanSize(item.bytes()) << ")";
    }
    if (!item.error().empty()) {
      std::cout << ": " << item.error();
    }
    std::cout << "\n";
  }
  std::cout << resp.items_size() << " items, " << HumanSize(resp.bytes())
            << (force ? " freed" : " to free: run chrysctl gc --force to remove them") << "\n";
  return failed == 0 ? 0 : 1;
}

}  // namespace

void AddGcCommands(CommandTable& table) {
  table["gc"] = {"list (or with --force remove) what chrysd owns and nothing uses",
                 "Usage: chrysctl gc [--force] [--json]\n\n"
                 "Asks chrysd for what it owns on this node and nothing uses any more: image blobs and EROFS\n"
                 "layer images no image refers to, pod network namespaces (with their taps) and VM directories\n"
                 "no pod owns. Without --force it only lists them (a dry run); with --force chrysd removes them\n"
                 "and reports each one. Exits non-zero when a removal failed.\n",
                 Gc};
}

}  // namespace chrys::cri::ctl
