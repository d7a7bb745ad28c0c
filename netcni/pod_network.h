// PodNetworkManager gives each pod sandbox its network: netns, CNI ADD/CHECK/DEL, and a tap link per interface.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "netcni/cni_runtime.h"

namespace chrys::netcni {

struct PodNetworkConfig {
  std::string conf_dir = "/etc/cni/net.d";
  std::vector<std::string> bin_dirs = {"/opt/cni/bin", "/usr/lib/cni"};
  // Empty: the first network config in conf_dir by file name.
  std::string network_name;
  // CNI result cache, under the persistent state root: DEL must work even after a reboot.
  std::string cache_dir = "/var/lib/chrysalis/cni-cache";
  // Our per-pod records (netns, taps). They describe things that live in /run, so they live there too
  // (tmpfs: no fsync cost); without one, Teardown still runs DEL from the CNI cache.
  std::string state_dir = "/run/chrysalis/netcni";
  std::string netns_dir = "/run/netns";
  std::chrono::milliseconds plugin_timeout{std::chrono::seconds(60)};
  // CNI_IFNAME of the pod's attachment.
  std::string ifname = "eth0";
  uint32_t tap_tx_queue_len = 5000;
};

struct PortMapping {
  std::string protocol = "tcp";  // tcp, udp or sctp
  int container_port = 0;
  int host_port = 0;  // 0: the port is only declared, nothing is mapped
  std::string host_ip;
};

// Rates in bits per second, bursts in bits, as the CNI "bandwidth" capability wants them.
struct BandwidthLimits {
  uint64_t ingress_rate = 0;
  uint64_t ingress_burst = 0;
  uint64_t egress_rate = 0;
  uint64_t egress_burst = 0;
};

struct DnsRequest {
  std::vector<std::string> servers;
  std::vector<std::string> searches;
  std::vector<std::string> options;
};

struct PodNetworkRequest {
  std::string sandbox_id;
  std::string pod_name;
  std::string pod_namespace;
  std::string pod_uid;
  bool host_network = false;
  std::vector<PortMapping> port_mappings;
  std::optional<BandwidthLimits> bandwidth;
  std::optional<DnsRequest> dns;
  int queues = 1;  // one tap queue per vCPU
};

struct IpConfig {
  int family = 4;
  std::string address;
  int prefix_len = 0;
  std::string gateway;
};

struct RouteConfig {
  int family = 4;
  std::string dst;
  int dst_prefix_len = 0;
  std::string gateway;  // resolved: the route's gw, or the interface's gateway of that family
  uint32_t mtu = 0;
  uint32_t priority = 0;
};

struct DnsConfig {
  std::vector<std::string> nameservers;
  std::string domain;
  std::vector<std::string> search;
  std::vector<std::string> options;
};

struct PodInterface {
  std::string cni_ifname;  // the veth inside the netns
  std::string tap_name;
  std::string guest_mac;  // the veth's MAC: the guest NIC must use it
  uint32_t mtu = 0;
  int queues = 0;
  std::vector<IpConfig> ips;
  std::vector<RouteConfig> routes;
  // One open queue per vCPU, for the VMM; empty when described from disk (see ReopenQueues).
  std::vector<base::UniqueFd> queue_fds;
};

struct PodNetwork {
  std::string sandbox_id;
  bool host_network = false;
  std::string netns_path;  // empty for host network
  std::vector<PodInterface> interfaces;
  DnsConfig dns;
};

// What CRI Status reports as the NetworkReady condition.
struct NetworkReadiness {
  bool ready = false;
  std::string reason;  // "NetworkPluginNotReady" when not ready
  std::string message;
};

class PodNetworkManager {
 public:
  explicit PodNetworkManager(PodNetworkConfig config);

  // Creates the netns (named after the sandbox id), runs CNI ADD and wires a tap to every pod interface the
  // result names. Any failure undoes everything (CNI DEL included) and says what went wrong.
  base::Result<PodNetwork> Setup(const PodNetworkRequest& request);
  // Removes taps, runs CNI DEL from the cached ADD result, deletes the netns. Idempotent; works after a
  // restart, after the config is gone, and when the veth has vanished. On a DEL failure the state is kept so
  // that a retry can finish.
  base::Status Teardown(const std::string& sandbox_id);
  // Runs CNI CHECK and verifies the tap links (qdiscs, redirects both ways) are intact.
  base::Status Check(const std::string& sandbox_id);
  // Sets the pod's veths down so nothing is redirected into the tap of a stopped VM.
  base::Status Quiesce(const std::string& sandbox_id);
  NetworkReadiness Readiness() const;

  // The recorded network of a sandbox (without queue fds), e.g. after a restart.
  base::Result<PodNetwork> Describe(const std::string& sandbox_id) const;
  // Attaches `queues` fresh queue fds to a pod's tap, for a VMM started later.
  base::Result<std::vector<base::UniqueFd>> ReopenQueues(const std::string& sandbox_id, const std::string& tap_name,
                                                         int queues) const;
  // Sandboxes with a network on record, for garbage collection by the caller.
  std::vector<std::string> ListSandboxes() const;

  const PodNetworkConfig& config() const { return config_; }
  // Time spent inside CNI plugin processes by this manager so far (benchmarks subtract it).
  std::chrono::nanoseconds cni_plugin_time() const { return cni_.plugin_time(); }

 private:
  class BusyGuard;
  std::string RecordPath(const std::string& sandbox_id) const;

  PodNetworkConfig config_;
  CniRuntime cni_;
  std::mutex mu_;
  std::set<std::string> busy_;
};

}  // namespace chrys::netcni
