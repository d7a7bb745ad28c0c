// A chained CNI plugin for tests: ADD creates a second veth pair (eth1 + a peer) inside the pod netns and
// appends eth1 with an address to prevResult; DEL removes it. Lets tests see several pod interfaces.
#include <fcntl.h>
#include <linux/if.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

namespace {

using nlohmann::json;

int Fail(const std::string& msg) {
  std::cout << json({{"cniVersion", "1.0.0"}, {"code", 100}, {"msg", msg}}).dump() << "\n";
  return 1;
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

}  // namespace

int main() {
  const std::string command = Env("CNI_COMMAND");
  const std::string netns = Env("CNI_NETNS");
  json config = json::parse(std::string(std::istreambuf_iterator<char>(std::cin), {}), nullptr, false);
  if (!config.is_object()) {
    return Fail("stdin is not a JSON object");
  }
  if (command == "VERSION") {
    std::cout << R"({"cniVersion":"1.0.0","supportedVersions":["1.0.0"]})"
              << "\n";
    return 0;
  }
  if (netns.empty()) {
    return 0;  // DEL without a namespace: nothing of ours can exist
  }
  int fd = ::open(netns.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) {
    return command == "DEL" ? 0 : Fail("cannot enter " + netns);
  }
  nl_sock* sock = nl_socket_alloc();
  if (sock == nullptr || nl_connect(sock, NETLINK_ROUTE) < 0) {
    return Fail("netlink");
  }
  if (command == "DEL") {
    rtnl_link* link = nullptr;
    if (rtnl_link_get_kernel(sock, 0, "eth1", &link) == 0) {
      rtnl_link_delete(sock, link);  // deleting one end removes the pair
      rtnl_link_put(link);
    }
    return 0;
  }
  if (command == "CHECK") {
    return 0;
  }
  rtnl_link* veth = rtnl_link_veth_alloc();
  rtnl_link_set_name(veth, "eth1");
  rtnl_link_set_name(rtnl_link_veth_get_peer(veth), "eth1peer");
  int err = rtnl_link_add(sock, veth, NLM_F_CREATE | NLM_F_EXCL);
  rtnl_link_veth_release(veth);
  if (err < 0) {
    return Fail(std::string("create eth1: ") + nl_geterror(err));
  }
  rtnl_link* link = nullptr;
  if (rtnl_link_get_kernel(sock, 0, "eth1", &link) < 0) {
    return Fail("eth1 vanished");
  }
  rtnl_link* change = rtnl_link_alloc();
  rtnl_link_set_flags(change, IFF_UP);
  rtnl_link_change(sock, link, change, 0);
  char mac[64];
  nl_addr2str(rtnl_link_get_addr(link), mac, sizeof mac);
  rtnl_link_put(change);
  rtnl_link_put(link);

  json result = config.value("prevResult", json({{"cniVersion", "1.0.0"}}));
  if (!result.contains("interfaces")) {
    result["interfaces"] = json::array();
  }
  result["interfaces"].push_back({{"name", "eth1"}, {"mac", mac}, {"sandbox", netns}});
  if (!result.contains("ips")) {
    result["ips"] = json::array();
  }
  result["ips"].push_back(
      {{"address", "192.168.77.2/24"}, {"gateway", "192.168.77.1"}, {"interface", result["interfaces"].size() - 1}});
  std::cout << result.dump() << "\n";
  return 0;
}
