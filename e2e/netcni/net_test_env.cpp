#include "e2e/netcni/net_test_env.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/tc.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "base/file_util.h"
#include "netcni/netns.h"

namespace chrys::netcni::testing {
namespace fs = std::filesystem;

namespace {

struct SockCloser {
  void operator()(nl_sock* s) const { nl_socket_free(s); }
};

std::unique_ptr<nl_sock, SockCloser> HostRouteSocket() {
  std::unique_ptr<nl_sock, SockCloser> sock(nl_socket_alloc());
  if (!sock || nl_connect(sock.get(), NETLINK_ROUTE) < 0) {
    throw std::runtime_error("netlink connect failed");
  }
  return sock;
}

uint16_t Checksum(const unsigned char* data, size_t len) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) {
    sum += static_cast<uint32_t>(data[i] << 8 | data[i + 1]);
  }
  if (len % 2 != 0) {
    sum += static_cast<uint32_t>(data[len - 1] << 8);
  }
  while (sum >> 16) {
    sum = (sum & 0xffff) + (sum >> 16);
  }
  return static_cast<uint16_t>(~sum);
}

constexpr size_t kVnetHdrLen = 10;  // struct virtio_net_hdr, the tun default

}  // namespace

TestNetworkEnv::TestNetworkEnv(const std::string& tag, const std::string& subnet_prefix) {
  char tmpl[] = "/tmp/chrys-netcni-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    throw std::runtime_error("mkdtemp failed");
  }
  root_ = tmpl;
  conf_dir_ = root_ + "/conf";
  bin_dir_ = root_ + "/bin";
  cache_dir_ = root_ + "/cache";
  ipam_dir_ = root_ + "/ipam";
  fs::create_directories(conf_dir_);
  fs::create_directories(bin_dir_);
  bridge_ = ("chr" + tag).substr(0, 15);
  subnet_ = subnet_prefix + ".0/24";
  gateway_ = subnet_prefix + ".1";
  network_name_ = "chrystest-" + tag;
}

TestNetworkEnv::~TestNetworkEnv() {
  try {
    auto sock = HostRouteSocket();
    rtnl_link* link = nullptr;
    if (rtnl_link_get_kernel(sock.get(), 0, bridge_.c_str(), &link) == 0) {
      rtnl_link_delete(sock.get(), link);
      rtnl_link_put(link);
    }
  } catch (const std::exception&) {
  }
  std::error_code ec;
  fs::remove_all(root_, ec);
}

void TestNetworkEnv::WriteConflist(const std::string& file, const std::vector<std::string>& extra_plugins,
                                   const std::string& cni_version) {
  std::string plugins =
      R"({"type": "bridge", "bridge": ")" + bridge_ +
      R"(", "isGateway": true, "ipMasq": false, "ipam": {"type": "host-local", "ranges": [[{"subnet": ")" + subnet_ +
      R"("}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": ")" + ipam_dir_ +
      R"("}, "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}})";
  for (const auto& extra : extra_plugins) {
    plugins += ", " + extra;
  }
  plugins += R"(, {"type": "loopback"}, {"type": "portmap", "capabilities": {"portMappings": true}})";
  std::string text =
      R"({"cniVersion": ")" + cni_version + R"(", "name": ")" + network_name_ + R"(", "plugins": [)" + plugins + "]}";
  std::ofstream(conf_dir_ + "/" + file) << text;
}

void TestNetworkEnv::WriteFakePlugin(const std::string& name, const std::string& script) {
  const std::string path = bin_dir_ + "/" + name;
  std::ofstream(path) << "#!/bin/sh\n" << script;
  ::chmod(path.c_str(), 0755);
}

PodNetworkConfig TestNetworkEnv::ManagerConfig() const {
  PodNetworkConfig c;
  c.conf_dir = conf_dir_;
  c.bin_dirs = {bin_dir_, "/usr/lib/cni"};
  c.cache_dir = cache_dir_;
  c.state_dir = root_ + "/state";
  c.plugin_timeout = std::chrono::seconds(20);
  return c;
}

int TestNetworkEnv::CountBridgePorts() const {
  auto sock = HostRouteSocket();
  nl_cache* cache = nullptr;
  if (rtnl_link_alloc_cache(sock.get(), AF_UNSPEC, &cache) < 0) {
    throw std::runtime_error("link cache failed");
  }
  int bridge_index = rtnl_link_name2i(cache, bridge_.c_str());
  int count = 0;
  for (nl_object* obj = nl_cache_get_first(cache); obj != nullptr; obj = nl_cache_get_next(obj)) {
    auto* link = reinterpret_cast<rtnl_link*>(obj);
    if (bridge_index != 0 && rtnl_link_get_master(link) == bridge_index) {
      ++count;
    }
  }
  nl_cache_free(cache);
  return count;
}

std::vector<std::string> TestNetworkEnv::BridgePortQdiscKinds() const {
  auto sock = HostRouteSocket();
  nl_cache* links = nullptr;
  nl_cache* qdiscs = nullptr;
  if (rtnl_link_alloc_cache(sock.get(), AF_UNSPEC, &links) < 0 || rtnl_qdisc_alloc_cache(sock.get(), &qdiscs) < 0) {
    throw std::runtime_error("netlink cache failed");
  }
  std::vector<std::string> kinds;
  int bridge_index = rtnl_link_name2i(links, bridge_.c_str());
  for (nl_object* obj = nl_cache_get_first(links); obj != nullptr; obj = nl_cache_get_next(obj)) {
    auto* link = reinterpret_cast<rtnl_link*>(obj);
    if (bridge_index == 0 || rtnl_link_get_master(link) != bridge_index) {
      continue;
    }
    rtnl_qdisc* q = rtnl_qdisc_get_by_parent(qdiscs, rtnl_link_get_ifindex(link), TC_H_ROOT);
    if (q != nullptr) {
      const char* kind = rtnl_tc_get_kind(TC_CAST(q));
      kinds.emplace_back(kind != nullptr ? kind : "");
      rtnl_qdisc_put(q);
    }
  }
  nl_cache_free(qdiscs);
  nl_cache_free(links);
  return kinds;
}

int TestNetworkEnv::CountHostLinks(const std::string& prefix) {
  auto sock = HostRouteSocket();
  nl_cache* links = nullptr;
  if (rtnl_link_alloc_cache(sock.get(), AF_UNSPEC, &links) < 0) {
    throw std::runtime_error("link cache failed");
  }
  int count = 0;
  for (nl_object* obj = nl_cache_get_first(links); obj != nullptr; obj = nl_cache_get_next(obj)) {
    const char* name = rtnl_link_get_name(reinterpret_cast<rtnl_link*>(obj));
    if (name != nullptr && std::string(name).rfind(prefix, 0) == 0) {
      ++count;
    }
  }
  nl_cache_free(links);
  return count;
}

int TestNetworkEnv::CountIpReservations() const {
  int count = 0;
  std::error_code ec;
  for (fs::directory_iterator it(ipam_dir_ + "/" + network_name_, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name != "lock" && name.rfind("last_reserved_ip", 0) != 0) {
      ++count;
    }
  }
  return count;
}

int TestNetworkEnv::CountStateFiles() const {
  int count = 0;
  for (const std::string& dir : {root_ + "/state/pods", cache_dir_ + "/results"}) {
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      ++count;
    }
  }
  return count;
}

int TestNetworkEnv::CountNetns(const std::string& prefix) {
  int count = 0;
  std::error_code ec;
  for (fs::directory_iterator it(kDefaultNetnsDir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().filename().string().rfind(prefix, 0) == 0) {
      ++count;
    }
  }
  return count;
}

GuestResponder::GuestResponder(std::vector<int> queue_fds, const std::string& mac, const std::string& ip)
    : fds_(std::move(queue_fds)) {
  unsigned int m[6];
  if (std::sscanf(mac.c_str(), "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) != 6) {
    throw std::runtime_error("bad mac " + mac);
  }
  for (int i = 0; i < 6; ++i) {
    mac_[i] = static_cast<unsigned char>(m[i]);
  }
  if (::inet_pton(AF_INET, ip.c_str(), ip_) != 1) {
    throw std::runtime_error("bad ip " + ip);
  }
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    throw std::runtime_error("pipe failed");
  }
  stop_read_.Reset(p[0]);
  stop_write_.Reset(p[1]);
  thread_ = std::thread([this] { Run(); });
}

GuestResponder::~GuestResponder() {
  char c = 'x';
  (void)!::write(stop_write_.get(), &c, 1);
  thread_.join();
}

void GuestResponder::Run() {
  std::vector<pollfd> pfds;
  for (int fd : fds_) {
    pfds.push_back({fd, POLLIN, 0});
  }
  pfds.push_back({stop_read_.get(), POLLIN, 0});
  unsigned char buf[65536 + kVnetHdrLen];
  while (true) {
    if (::poll(pfds.data(), pfds.size(), 5000) < 0 && errno != EINTR) {
      return;
    }
    if (pfds.back().revents != 0) {
      return;
    }
    for (size_t q = 0; q + 1 < pfds.size(); ++q) {
      if ((pfds[q].revents & POLLIN) == 0) {
        continue;
      }
      ssize_t n = ::read(pfds[q].fd, buf, sizeof buf);
      if (n < static_cast<ssize_t>(kVnetHdrLen + 14)) {
        continue;
      }
      unsigned char* eth = buf + kVnetHdrLen;
      size_t len = static_cast<size_t>(n) - kVnetHdrLen;
      const uint16_t ethertype = static_cast<uint16_t>(eth[12] << 8 | eth[13]);
      unsigned char peer_mac[6];
      std::memcpy(peer_mac, eth + 6, 6);
      if (ethertype == 0x0806 && len >= 42) {
        unsigned char* arp = eth + 14;
        if (arp[7] != 1 || std::memcmp(arp + 24, ip_, 4) != 0) {
          continue;  // not a request for us
        }
        unsigned char sender_mac[6], sender_ip[4];
        std::memcpy(sender_mac, arp + 8, 6);
        std::memcpy(sender_ip, arp + 14, 4);
        arp[7] = 2;
        std::memcpy(arp + 8, mac_, 6);
        std::memcpy(arp + 14, ip_, 4);
        std::memcpy(arp + 18, sender_mac, 6);
        std::memcpy(arp + 24, sender_ip, 4);
        std::memcpy(eth, peer_mac, 6);
        std::memcpy(eth + 6, mac_, 6);
        std::memset(buf, 0, kVnetHdrLen);
        if (::write(pfds[q].fd, buf, kVnetHdrLen + 42) > 0) {
          ++arp_replies_;
        }
      } else if (ethertype == 0x0800 && len >= 14 + 20 + 8) {
        unsigned char* iph = eth + 14;
        size_t ihl = static_cast<size_t>(iph[0] & 0x0f) * 4;
        size_t total = static_cast<size_t>(iph[2] << 8 | iph[3]);
        if (iph[9] != IPPROTO_ICMP || std::memcmp(iph + 16, ip_, 4) != 0 || total > len - 14 || ihl < 20) {
          continue;
        }
        unsigned char* icmp = iph + ihl;
        if (icmp[0] != ICMP_ECHO) {
          continue;
        }
        icmp[0] = ICMP_ECHOREPLY;
        icmp[2] = icmp[3] = 0;
        uint16_t csum = Checksum(icmp, total - ihl);
        icmp[2] = static_cast<unsigned char>(csum >> 8);
        icmp[3] = static_cast<unsigned char>(csum & 0xff);
        unsigned char tmp[4];
        std::memcpy(tmp, iph + 12, 4);
        std::memcpy(iph + 12, iph + 16, 4);
        std::memcpy(iph + 16, tmp, 4);
        iph[8] = 64;
        iph[10] = iph[11] = 0;
        csum = Checksum(iph, ihl);
        iph[10] = static_cast<unsigned char>(csum >> 8);
        iph[11] = static_cast<unsigned char>(csum & 0xff);
        std::memcpy(eth, peer_mac, 6);
        std::memcpy(eth + 6, mac_, 6);
        std::memset(buf, 0, kVnetHdrLen);
        // Counted before the write: the pinger can get the reply, and the test read this count, before write
        // returns here (seen on a loaded host: ping answered, count still 0).
        ++echo_replies_;
        if (::write(pfds[q].fd, buf, kVnetHdrLen + 14 + total) <= 0) {
          --echo_replies_;
        }
      }
    }
  }
}

bool PingOnce(const std::string& ip, int attempts, int timeout_ms_each) {
  base::UniqueFd sock(::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP));
  if (!sock) {
    return false;
  }
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  ::inet_pton(AF_INET, ip.c_str(), &dst.sin_addr);
  const uint16_t id = static_cast<uint16_t>(::getpid() & 0xffff);
  for (int seq = 1; seq <= attempts; ++seq) {
    unsigned char pkt[64] = {};
    pkt[0] = ICMP_ECHO;
    pkt[4] = static_cast<unsigned char>(id >> 8);
    pkt[5] = static_cast<unsigned char>(id & 0xff);
    pkt[6] = static_cast<unsigned char>(seq >> 8);
    pkt[7] = static_cast<unsigned char>(seq & 0xff);
    std::memcpy(pkt + 8, "chrysalis-netcni", 16);
    uint16_t csum = Checksum(pkt, sizeof pkt);
    pkt[2] = static_cast<unsigned char>(csum >> 8);
    pkt[3] = static_cast<unsigned char>(csum & 0xff);
    if (::sendto(sock.get(), pkt, sizeof pkt, 0, reinterpret_cast<sockaddr*>(&dst), sizeof dst) < 0) {
      ::usleep(static_cast<useconds_t>(timeout_ms_each) * 1000);
      continue;
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms_each);
    while (std::chrono::steady_clock::now() < deadline) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd pfd{sock.get(), POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>(left.count()) + 1) <= 0) {
        break;
      }
      unsigned char in[1500];
      sockaddr_in from{};
      socklen_t from_len = sizeof from;
      ssize_t n = ::recvfrom(sock.get(), in, sizeof in, 0, reinterpret_cast<sockaddr*>(&from), &from_len);
      if (n < 28 || from.sin_addr.s_addr != dst.sin_addr.s_addr) {
        continue;
      }
      size_t ihl = static_cast<size_t>(in[0] & 0x0f) * 4;
      const unsigned char* icmp = in + ihl;
      if (icmp[0] == ICMP_ECHOREPLY && (icmp[4] << 8 | icmp[5]) == id) {
        return true;
      }
    }
  }
  return false;
}

base::Status DeleteLinkInNetns(int netns_fd, const std::string& name) {
  return RunInNetns(netns_fd, [&]() -> base::Status {
    auto sock = HostRouteSocket();  // opened on this thread, i.e. inside the namespace
    rtnl_link* link = nullptr;
    int err = rtnl_link_get_kernel(sock.get(), 0, name.c_str(), &link);
    if (err < 0) {
      return base::NotFound("link " + name + ": " + nl_geterror(err));
    }
    err = rtnl_link_delete(sock.get(), link);
    rtnl_link_put(link);
    if (err < 0) {
      return base::Internal("delete " + name + ": " + nl_geterror(err));
    }
    return base::Status::Ok();
  });
}

}  // namespace chrys::netcni::testing
