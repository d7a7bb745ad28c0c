// TapLink: a multi-queue tap wired to a pod veth by TC ingress qdiscs and u32/mirred redirects (libnl-route).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace chrys::netcni {

struct TapLinkSpec {
  std::string veth_name;         // the CNI interface inside the pod netns (e.g. eth0)
  std::string tap_name;          // created next to it, at most 15 bytes
  int queues = 1;                // one queue per vCPU
  uint32_t tx_queue_len = 5000;  // above the 1000 default so bursts from the guest are not dropped
};

// One mirred redirect read back from the kernel.
struct RedirectFilter {
  std::string classifier;  // "u32"
  bool match_all = false;  // one key with mask 0
  std::string action;      // "mirred"
  int mirred_action = 0;   // TCA_EGRESS_REDIR == 1
  int policy = 0;          // TC_ACT_STOLEN == 4
  int target_ifindex = 0;
};

// The kernel's view of a tap link, for tests, CHECK and `chrysctl doctor`.
struct TapLinkState {
  bool tap_exists = false;
  int tap_ifindex = 0;
  uint32_t tap_mtu = 0;
  uint32_t tap_tx_queue_len = 0;
  bool tap_up = false;
  std::string tap_kind;  // "tun"
  bool tun_is_tap = false;
  bool tun_pi = false;
  bool tun_vnet_hdr = false;
  bool tun_multi_queue = false;
  bool tun_persist = false;
  uint32_t tun_num_queues = 0;  // queues attached right now

  bool veth_exists = false;
  int veth_ifindex = 0;
  uint32_t veth_mtu = 0;
  std::string veth_mac;
  bool veth_up = false;

  bool veth_ingress_qdisc = false;
  bool tap_ingress_qdisc = false;
  std::string tap_root_qdisc;                // "noqueue": no per-queue qdisc rings on the 256 tx queues
  std::vector<RedirectFilter> veth_filters;  // on the veth's ingress
  std::vector<RedirectFilter> tap_filters;   // on the tap's ingress
};

class TapLink {
 public:
  TapLink() = default;
  ~TapLink();
  TapLink(TapLink&& other) noexcept = default;
  TapLink& operator=(TapLink&& other) noexcept;
  TapLink(const TapLink&) = delete;
  TapLink& operator=(const TapLink&) = delete;

  // Inside the namespace `netns_fd`: creates the persistent multi-queue tap (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR|
  // IFF_MULTI_QUEUE) with `queues` queues, gives it the veth's MTU and a raised txqueuelen, brings it up, adds
  // an ingress qdisc on both links and a match-all u32 filter with mirred egress redirect each way. Fails
  // with kAlreadyExists if the tap name is taken. Any failure undoes what was done. The handle owns the link
  // (the destructor removes it) until Keep().
  static base::Result<TapLink> Create(int netns_fd, const TapLinkSpec& spec);

  // Deletes the tap and the veth's ingress qdisc (with its filter). Missing pieces are not errors, so this
  // completes when the veth or the whole link has already gone.
  static base::Status Remove(int netns_fd, const std::string& tap_name, const std::string& veth_name);
  // Attaches `queues` new queue fds to an existing tap (for a VMM started after chrysd restarted).
  static base::Result<std::vector<base::UniqueFd>> OpenQueues(int netns_fd, const std::string& tap_name, int queues);
  // Sets a link administratively up or down; a missing link is kNotFound.
  static base::Status SetLinkUp(int netns_fd, const std::string& name, bool up);
  // Reads back links, qdiscs and filters through netlink.
  static base::Result<TapLinkState> Inspect(int netns_fd, const std::string& tap_name, const std::string& veth_name);

  void Keep() { owned_ = false; }
  // Hands the queue fds to the caller (the VMM gets them).
  std::vector<base::UniqueFd> TakeQueueFds() { return std::move(queue_fds_); }

  const std::string& tap_name() const { return tap_name_; }
  const std::string& veth_name() const { return veth_name_; }
  const std::string& guest_mac() const { return guest_mac_; }
  uint32_t mtu() const { return mtu_; }

 private:
  base::UniqueFd netns_fd_;  // a dup, so removal works whatever the caller does with its own
  std::string tap_name_;
  std::string veth_name_;
  std::string guest_mac_;
  uint32_t mtu_ = 0;
  std::vector<base::UniqueFd> queue_fds_;
  bool owned_ = false;
};

}  // namespace chrys::netcni
