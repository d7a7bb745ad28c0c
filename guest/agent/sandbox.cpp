#include "guest/agent/sandbox.h"

#include <dirent.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netlink/route/addr.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/route.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>

#include "base/file_util.h"
#include "base/netlink_ptr.h"
#include "base/unique_fd.h"
#include "guest/agent/child_reaper.h"
#include "guest/agent/log.h"

namespace chrys::guest {
namespace {

constexpr const char* kBusybox = "/bin/busybox";

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool IsV6(const std::string& addr) {
  return addr.find(':') != std::string::npos;
}

std::vector<std::pair<std::string, std::string>> ListNics() {
  std::vector<std::pair<std::string, std::string>> nics;
  DIR* dir = ::opendir("/sys/class/net");
  if (dir == nullptr) {
    return nics;
  }
  while (dirent* e = ::readdir(dir)) {
    std::string name = e->d_name;
    if (name[0] == '.' || name == "lo") {
      continue;
    }
    auto mac = base::ReadFile("/sys/class/net/" + name + "/address", 64);
    if (mac.ok()) {
      std::string m = *mac;
      while (!m.empty() && m.back() == '\n') {
        m.pop_back();
      }
      nics.emplace_back(Lower(m), name);
    }
  }
  ::closedir(dir);
  return nics;
}

// The NICs by MAC once every NIC the request names is there, or as they are after `timeout`. A warm VM gets its
// pod's NICs by hot-plug just before SetupSandbox: the guest sees them a moment after the host's device_add.
std::vector<std::pair<std::string, std::string>> WaitForNics(const v1::SetupSandboxRequest& request,
                                                             std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto nics = ListNics();
    bool all_present = std::all_of(request.interfaces().begin(), request.interfaces().end(), [&](const auto& itf) {
      std::string mac = Lower(itf.mac());
      return std::any_of(nics.begin(), nics.end(), [&](const auto& nic) { return nic.first == mac; });
    });
    if (all_present || std::chrono::steady_clock::now() >= deadline) {
      return nics;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// `ip link set dev DEV up|down|mtu N|name NEW` done in this process (SIOCSIFFLAGS/SIOCSIFMTU/SIOCSIFNAME):
// under TCG each `busybox ip` process costs ~10 ms, and a pod's setup ran five of them. Returns false for any
// other command, which still goes to `ip`.
bool TryLinkSetInProcess(const std::vector<std::string>& args, base::Status* result) {
  if (args.size() < 6 || args[0] != "ip" || args[1] != "link" || args[2] != "set" || args[3] != "dev" ||
      args[4].size() >= IFNAMSIZ) {
    return false;
  }
  const std::string& dev = args[4];
  const std::string& what = args[5];
  if (!((args.size() == 6 && (what == "up" || what == "down")) ||
        (args.size() == 7 && (what == "mtu" || (what == "name" && args[6].size() < IFNAMSIZ))))) {
    return false;
  }
  base::UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) {
    *result = base::SystemError("socket for interface ioctls");
    return true;
  }
  ifreq req{};
  std::memcpy(req.ifr_name, dev.c_str(), dev.size() + 1);
  int rc = 0;
  if (what == "up" || what == "down") {
    rc = ::ioctl(sock.get(), SIOCGIFFLAGS, &req);
    if (rc == 0) {
      req.ifr_flags = static_cast<short>(what == "up" ? (req.ifr_flags | IFF_UP) : (req.ifr_flags & ~IFF_UP));
      rc = ::ioctl(sock.get(), SIOCSIFFLAGS, &req);
    }
  } else if (what == "mtu") {
    req.ifr_mtu = std::atoi(args[6].c_str());  // written by NetworkCommands from the validated request (68..65535)
    rc = ::ioctl(sock.get(), SIOCSIFMTU, &req);
  } else {
    std::memcpy(req.ifr_newname, args[6].c_str(), args[6].size() + 1);
    rc = ::ioctl(sock.get(), SIOCSIFNAME, &req);
  }
  *result = rc == 0 ? base::Status::Ok() : base::Status(base::SystemError("ip link set dev " + dev + " " + what));
  return true;
}

// Parses `text` ("default", an address, or address/prefix) as an address of `family`.
base::NlAddrPtr ParseNlAddr(const std::string& text, int family) {
  nl_addr* parsed = nullptr;
  if (nl_addr_parse(text.c_str(), family, &parsed) != 0) {
    return nullptr;
  }
  return base::NlAddrPtr(parsed);
}

// `ip [-6] addr|route|neigh replace ...` as NetworkCommands writes them, done over rtnetlink (libnl) in this
// process: each `busybox ip` process cost the pod's setup 30-40 ms under TCG (an address took 42-50 ms, most of
// it starting the process). Returns false for a shape it does not know, which then goes to `ip`.
bool TryReplaceInProcess(const std::vector<std::string>& args, base::Status* result) {
  if (args.empty() || args[0] != "ip") {
    return false;
  }
  size_t i = 1;
  int family = AF_INET;
  if (i < args.size() && args[i] == "-6") {
    family = AF_INET6;
    ++i;
  }
  if (i + 2 > args.size() || args[i + 1] != "replace") {
    return false;
  }
  const std::string& object = args[i];
  std::vector<std::string> rest(args.begin() + static_cast<long>(i) + 2, args.end());
  auto option = [&rest](const std::string& key) -> std::optional<std::string> {
    for (size_t k = 1; k + 1 < rest.size(); k += 2) {
      if (rest[k] == key) {
        return rest[k + 1];
      }
    }
    return std::nullopt;
  };
  // After the first word every option is a key-value pair, and only the keys below occur.
  if (rest.empty() || rest.size() % 2 == 0) {
    return false;
  }
  for (size_t k = 1; k < rest.size(); k += 2) {
    static const std::vector<std::string> kKnown = {"dev", "via", "src", "metric", "lladdr", "nud"};
    if (std::find(kKnown.begin(), kKnown.end(), rest[k]) == kKnown.end()) {
      return false;
    }
  }
  std::string what = "ip " + object + " replace " + rest[0];
  auto ifindex_of = [](const std::optional<std::string>& dev) -> int {
    return dev ? static_cast<int>(::if_nametoindex(dev->c_str())) : 0;
  };
  base::NlSockPtr sock(nl_socket_alloc());
  if (!sock || nl_connect(sock.get(), NETLINK_ROUTE) != 0) {
    *result = base::Internal(what + ": cannot open a netlink socket");
    return true;
  }
  int err = 0;
  if (object == "addr") {
    auto local = ParseNlAddr(rest[0], family);
    int ifindex = ifindex_of(option("dev"));
    if (!local || ifindex == 0) {
      *result = base::InvalidArgument(what + ": bad address or unknown device");
      return true;
    }
    base::NlObjectPtr<rtnl_addr> addr(rtnl_addr_alloc());
    rtnl_addr_set_ifindex(addr.get(), ifindex);
    rtnl_addr_set_family(addr.get(), family);
    rtnl_addr_set_local(addr.get(), local.get());
    rtnl_addr_set_prefixlen(addr.get(), static_cast<int>(nl_addr_get_prefixlen(local.get())));
    err = rtnl_addr_add(sock.get(), addr.get(), NLM_F_REPLACE);
  } else if (object == "route") {
    auto dst = ParseNlAddr(rest[0] == "default" ? (family == AF_INET6 ? "::/0" : "0.0.0.0/0") : rest[0], family);
    auto via = option("via");
    auto dev = option("dev");
    auto src = option("src");
    auto metric = option("metric");
    base::NlAddrPtr gateway = via ? ParseNlAddr(*via, family) : nullptr;
    base::NlAddrPtr pref_src = src ? ParseNlAddr(*src, family) : nullptr;
    int ifindex = ifindex_of(dev);
    if (!dst || (via && !gateway) || (src && !pref_src) || (dev && ifindex == 0) || (!via && !dev)) {
      *result = base::InvalidArgument(what + ": bad destination, gateway, source or device");
      return true;
    }
    base::NlObjectPtr<rtnl_route> route(rtnl_route_alloc());
    rtnl_route_set_family(route.get(), static_cast<uint8_t>(family));
    rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
    rtnl_route_set_protocol(route.get(), RTPROT_BOOT);
    rtnl_route_set_type(route.get(), RTN_UNICAST);
    rtnl_route_set_scope(route.get(), gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK);
    rtnl_route_set_dst(route.get(), dst.get());
    if (pref_src) {
      rtnl_route_set_pref_src(route.get(), pref_src.get());
    }
    if (metric) {
      rtnl_route_set_priority(route.get(), static_cast<uint32_t>(std::strtoul(metric->c_str(), nullptr, 10)));
    }
    rtnl_nexthop* hop = rtnl_route_nh_alloc();  // owned by the route once added to it
    if (gateway) {
      rtnl_route_nh_set_gateway(hop, gateway.get());
    }
    if (ifindex != 0) {
      rtnl_route_nh_set_ifindex(hop, ifindex);
    }
    rtnl_route_add_nexthop(route.get(), hop);
    err = rtnl_route_add(sock.get(), route.get(), NLM_F_REPLACE);
  } else if (object == "neigh") {
    auto dst = ParseNlAddr(rest[0], family);
    auto mac = option("lladdr");
    base::NlAddrPtr lladdr = mac ? ParseNlAddr(*mac, AF_LLC) : nullptr;
    int ifindex = ifindex_of(option("dev"));
    if (!dst || !lladdr || ifindex == 0 || option("nud").value_or("permanent") != "permanent") {
      *result = base::InvalidArgument(what + ": bad address, MAC or device");
      return true;
    }
    base::NlObjectPtr<rtnl_neigh> neigh(rtnl_neigh_alloc());
    rtnl_neigh_set_ifindex(neigh.get(), ifindex);
    rtnl_neigh_set_family(neigh.get(), family);
    rtnl_neigh_set_dst(neigh.get(), dst.get());
    rtnl_neigh_set_lladdr(neigh.get(), lladdr.get());
    rtnl_neigh_set_state(neigh.get(), NUD_PERMANENT);
    err = rtnl_neigh_add(sock.get(), neigh.get(), NLM_F_CREATE | NLM_F_REPLACE);
  } else {
    return false;
  }
  *result = err == 0 ? base::Status::Ok() : base::Status(base::Internal("'" + what + "' failed: " + nl_geterror(err)));
  return true;
}

base::Status RunIp(const std::vector<std::string>& args) {
  if (base::Status done; TryLinkSetInProcess(args, &done)) {
    return done;
  }
  if (base::Status done; TryReplaceInProcess(args, &done)) {
    return done;
  }
  std::vector<std::string> argv = {kBusybox};
  argv.insert(argv.end(), args.begin(), args.end());
  CHRYS_ASSIGN_OR_RETURN(auto result, ChildReaper::Instance().Run(argv, std::chrono::seconds(10)));
  if (!result.ok()) {
    std::string cmd;
    for (const auto& a : args) {
      cmd += (cmd.empty() ? "" : " ") + a;
    }
    return base::Internal("'" + cmd + "' failed: " + result.output.substr(0, 1024));
  }
  return base::Status::Ok();
}

}  // namespace

std::string RenderResolvConf(const v1::DnsConfig& dns) {
  std::string text;
  for (const auto& s : dns.servers()) {
    text += "nameserver " + s + "\n";
  }
  if (dns.searches_size() > 0) {
    text += "search";
    for (const auto& s : dns.searches()) {
      text += " " + s;
    }
    text += "\n";
  }
  if (dns.options_size() > 0) {
    text += "options";
    for (const auto& o : dns.options()) {
      text += " " + o;
    }
    text += "\n";
  }
  return text;
}

std::string RenderHosts(const std::string& hostname, const std::vector<std::string>& extra_hosts) {
  std::string text = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
  if (!hostname.empty()) {
    text += "127.0.1.1\t" + hostname + "\n";
  }
  for (const auto& line : extra_hosts) {
    text += line + "\n";
  }
  return text;
}

base::Result<std::vector<std::vector<std::string>>> NetworkCommands(
    const v1::SetupSandboxRequest& request, const std::vector<std::pair<std::string, std::string>>& nic_by_mac) {
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back({"ip", "link", "set", "dev", "lo", "up"});
  for (const auto& itf : request.interfaces()) {
    std::string mac = Lower(itf.mac());
    auto it = std::find_if(nic_by_mac.begin(), nic_by_mac.end(), [&](const auto& p) { return p.first == mac; });
    if (it == nic_by_mac.end()) {
      return base::NotFound("interfaces: no NIC with MAC " + mac + " in the guest");
    }
    std::string dev = it->second;
    if (!itf.name().empty() && itf.name() != dev) {
      cmds.push_back({"ip", "link", "set", "dev", dev, "down"});
      cmds.push_back({"ip", "link", "set", "dev", dev, "name", itf.name()});
      dev = itf.name();
    }
    if (itf.mtu() != 0) {
      cmds.push_back({"ip", "link", "set", "dev", dev, "mtu", std::to_string(itf.mtu())});
    }
    for (const auto& a : itf.addresses()) {
      std::vector<std::string> cmd = {"ip"};
      if (IsV6(a.address())) {
        cmd.emplace_back("-6");
      }
      cmd.insert(cmd.end(), {"addr", "replace", a.address() + "/" + std::to_string(a.prefix_length()), "dev", dev});
      cmds.push_back(cmd);
    }
    cmds.push_back({"ip", "link", "set", "dev", dev, "up"});
  }
  for (const auto& r : request.routes()) {
    bool v6 = IsV6(r.destination()) || IsV6(r.gateway());
    std::vector<std::string> cmd = {"ip"};
    if (v6) {
      cmd.emplace_back("-6");
    }
    std::string dest = r.destination() == "0.0.0.0/0" || r.destination() == "::/0" ? "default" : r.destination();
    cmd.insert(cmd.end(), {"route", "replace", dest});
    if (!r.gateway().empty()) {
      cmd.insert(cmd.end(), {"via", r.gateway()});
    }
    if (!r.device().empty()) {
      cmd.insert(cmd.end(), {"dev", r.device()});
    }
    if (!r.source().empty()) {
      cmd.insert(cmd.end(), {"src", r.source()});
    }
    if (r.metric() != 0) {
      cmd.insert(cmd.end(), {"metric", std::to_string(r.metric())});
    }
    cmds.push_back(cmd);
  }
  for (const auto& n : request.neighbors()) {
    std::vector<std::string> cmd = {"ip"};
    if (IsV6(n.address())) {
      cmd.emplace_back("-6");
    }
    cmd.insert(cmd.end(),
               {"neigh", "replace", n.address(), "lladdr", Lower(n.mac()), "dev", n.device(), "nud", "permanent"});
    cmds.push_back(cmd);
  }
  return cmds;
}

base::Status ApplySandboxSetup(const v1::SetupSandboxRequest& request) {
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(kSandboxDir));
  const std::string dir = kSandboxDir;
  if (!request.hostname().empty()) {
    if (::sethostname(request.hostname().data(), request.hostname().size()) != 0) {
      return base::SystemError("sethostname");
    }
    CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(dir + "/hostname", request.hostname() + "\n"));
    CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic("/etc/hostname", request.hostname() + "\n"));
  }
  std::vector<std::string> extra(request.extra_hosts().begin(), request.extra_hosts().end());
  std::string hosts = RenderHosts(request.hostname(), extra);
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(dir + "/hosts", hosts));
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic("/etc/hosts", hosts));
  std::string resolv = RenderResolvConf(request.dns());
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(dir + "/resolv.conf", resolv));
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic("/etc/resolv.conf", resolv));

  constexpr auto kHotpluggedNicWait = std::chrono::seconds(20);
  CHRYS_ASSIGN_OR_RETURN(auto cmds, NetworkCommands(request, WaitForNics(request, kHotpluggedNicWait)));
  for (const auto& cmd : cmds) {
    CHRYS_RETURN_IF_ERROR(RunIp(cmd));
  }
  for (const auto& [key, value] : request.sysctls()) {
    std::string path = "/proc/sys/" + key;
    std::replace(path.begin() + 10, path.end(), '.', '/');
    // /proc/sys files are written in place (no temp file + rename there).
    FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) {
      return base::SystemError("sysctl " + key);
    }
    bool ok = std::fputs(value.c_str(), f) >= 0;
    ok = std::fclose(f) == 0 && ok;
    if (!ok) {
      std::string what = "writing sysctl ";
      what.append(key).append("=").append(value);
      return base::SystemError(what);
    }
  }
  return base::Status::Ok();
}

std::vector<std::pair<std::string, std::string>> SandboxFilesForContainers() {
  std::vector<std::pair<std::string, std::string>> files;
  for (const char* name : {"hostname", "hosts", "resolv.conf"}) {
    std::string source = std::string(kSandboxDir) + "/" + name;
    if (::access(source.c_str(), F_OK) == 0) {
      files.emplace_back(std::string("/etc/") + name, source);
    }
  }
  return files;
}

}  // namespace chrys::guest
