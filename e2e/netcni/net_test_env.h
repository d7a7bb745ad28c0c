// Test scaffolding for real-CNI tests: a private bridge network, a guest-like responder on tap queues, ping.
#pragma once

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "netcni/pod_network.h"

namespace chrys::netcni::testing {

// A temp dir with conf/, cache/, ipam/ and fake-plugin bin/ dirs, a conflist using bridge + host-local +
// loopback + portmap on a private bridge and subnet. The destructor deletes the bridge and the temp dir.
class TestNetworkEnv {
 public:
  // `tag` keeps bridge names of concurrently running test programs apart.
  explicit TestNetworkEnv(const std::string& tag, const std::string& subnet_prefix = "10.199.0");
  ~TestNetworkEnv();
  TestNetworkEnv(const TestNetworkEnv&) = delete;
  TestNetworkEnv& operator=(const TestNetworkEnv&) = delete;

  // Writes <conf>/<file> with the standard chain; `extra_plugins` (JSON objects) are inserted after bridge.
  void WriteConflist(const std::string& file = "10-chrystest.conflist",
                     const std::vector<std::string>& extra_plugins = {}, const std::string& cni_version = "1.0.0");
  // Writes an executable shell script <bin>/<name>.
  void WriteFakePlugin(const std::string& name, const std::string& script);
  PodNetworkConfig ManagerConfig() const;

  // Host links enslaved to our bridge (the host ends of pod veths).
  int CountBridgePorts() const;
  // Root qdisc kinds on the host ends of pod veths (the bandwidth plugin puts "tbf" there).
  std::vector<std::string> BridgePortQdiscKinds() const;
  // Host links whose name starts with `prefix` (the bandwidth plugin's ifb devices are "bwp...").
  static int CountHostLinks(const std::string& prefix);
  // host-local reservation files for our network.
  int CountIpReservations() const;
  // Pod records + cached results, and netns entries named with `prefix`.
  int CountStateFiles() const;
  static int CountNetns(const std::string& prefix);

  const std::string& root() const { return root_; }
  const std::string& conf_dir() const { return conf_dir_; }
  const std::string& bin_dir() const { return bin_dir_; }
  const std::string& cache_dir() const { return cache_dir_; }
  const std::string& bridge() const { return bridge_; }
  const std::string& gateway() const { return gateway_; }
  const std::string& subnet() const { return subnet_; }
  const std::string& network_name() const { return network_name_; }

 private:
  std::string root_, conf_dir_, bin_dir_, cache_dir_, ipam_dir_, bridge_, subnet_, gateway_, network_name_;
};

// Answers ARP and ICMP echo for `ip` with `mac` on the tap queue fds, as a guest NIC driver would.
class GuestResponder {
 public:
  GuestResponder(std::vector<int> queue_fds, const std::string& mac, const std::string& ip);
  ~GuestResponder();
  GuestResponder(const GuestResponder&) = delete;
  GuestResponder& operator=(const GuestResponder&) = delete;
  int arp_replies() const { return arp_replies_.load(); }
  int echo_replies() const { return echo_replies_.load(); }

 private:
  void Run();
  std::vector<int> fds_;
  unsigned char mac_[6] = {};
  unsigned char ip_[4] = {};
  base::UniqueFd stop_read_, stop_write_;
  std::atomic<int> arp_replies_{0};
  std::atomic<int> echo_replies_{0};
  std::thread thread_;
};

// Sends ICMP echo requests to `ip` from the host netns and waits for a reply; true on the first reply.
bool PingOnce(const std::string& ip, int attempts, int timeout_ms_each);

// Deletes a link inside a namespace through libnl (to simulate a vanished veth).
base::Status DeleteLinkInNetns(int netns_fd, const std::string& name);

}  // namespace chrys::netcni::testing
